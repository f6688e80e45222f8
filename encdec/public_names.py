"""The core names every package re-exports: transformers' config and generation-config
classes, importable where users look (``from encdec_torch import BertConfig``).  One list,
so the three backends cannot drift."""
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
]
