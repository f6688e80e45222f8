"""encdec's PyTorch backend: ``from encdec_torch import EncoderDecoderModel``."""
from __future__ import annotations

from encdec.public_names import *  # noqa: F401,F403  transformers' names, importable where users look
from encdec.public_names import __all__ as _CORE_NAMES
from encdec_torch.modeling_encoder_decoder import EncoderDecoderModel
from encdec_torch.models import (
    BartForCausalLM,
    BertGenerationDecoder,
    BertGenerationEncoder,
    BertLMHeadModel,
    BertModel,
    ElectraModel,
    GPT2LMHeadModel,
    ProphetNetForCausalLM,
    RemBertForCausalLM,
    RemBertModel,
    RobertaForCausalLM,
    RobertaModel,
)

__all__ = ["EncoderDecoderModel", "BartForCausalLM", "BertGenerationDecoder", "BertGenerationEncoder", "BertLMHeadModel", "BertModel", "ElectraModel", "GPT2LMHeadModel",
           "ProphetNetForCausalLM", "RemBertForCausalLM", "RemBertModel", "RobertaForCausalLM", "RobertaModel"]
__all__ += _CORE_NAMES
