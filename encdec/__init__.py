"""encdec: encoder-decoder models with one API in PyTorch, TensorFlow (Keras 3) and JAX/Flax.

This core package imports numpy, safetensors and huggingface_hub only.
"""
from __future__ import annotations

from encdec.configuration import (
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
from encdec.labels import shift_tokens_right

__version__ = "0.1.0"

__all__ = [
    "AutoConfig",
    "BartConfig",
    "BertConfig",
    "BertGenerationConfig",
    "CamembertConfig",
    "ElectraConfig",
    "EncoderDecoderConfig",
    "GPT2Config",
    "GenerationConfig",
    "PretrainedConfig",
    "ProphetNetConfig",
    "RemBertConfig",
    "RobertaConfig",
    "XLMRobertaConfig",
    "shift_tokens_right",
    "__version__",
]
