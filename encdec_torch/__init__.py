"""encdec's PyTorch backend: ``from encdec_torch import EncoderDecoderModel``."""
from __future__ import annotations

from encdec.configuration import (  # transformers' names, importable where users look
    AutoConfig,
    BartConfig,
    BertConfig,
    BertGenerationConfig,
    CamembertConfig,
    ElectraConfig,
    EncoderDecoderConfig,
    GPT2Config,
    PretrainedConfig,
    ProphetNetConfig,
    RemBertConfig,
    RobertaConfig,
    XLMRobertaConfig,
)
from encdec.generation import GenerationConfig
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
__all__ += ["AutoConfig", "BartConfig", "BertConfig", "ElectraConfig", "EncoderDecoderConfig", "GPT2Config", "GenerationConfig",
            "PretrainedConfig", "ProphetNetConfig", "RemBertConfig", "RobertaConfig", "BertGenerationConfig",
            "CamembertConfig", "XLMRobertaConfig"]
