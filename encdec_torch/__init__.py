"""encdec's PyTorch backend: ``from encdec_torch import EncoderDecoderModel``."""
from __future__ import annotations

from encdec.configuration import EncoderDecoderConfig
from encdec.generation import GenerationConfig
from encdec_torch.modeling_encoder_decoder import EncoderDecoderModel

__all__ = ["EncoderDecoderConfig", "EncoderDecoderModel", "GenerationConfig"]
