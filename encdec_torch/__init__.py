"""encdec's PyTorch backend: ``from encdec_torch import EncoderDecoderModel``."""
from __future__ import annotations

from encdec.configuration import EncoderDecoderConfig
from encdec.generation import GenerationConfig
from encdec_torch.modeling_encoder_decoder import EncoderDecoderModel
from encdec_torch.models import ProphetNetForCausalLM, RemBertForCausalLM, RemBertModel

__all__ = ["EncoderDecoderConfig", "EncoderDecoderModel", "GenerationConfig"]
__all__ += ["ProphetNetForCausalLM", "RemBertForCausalLM", "RemBertModel"]
