"""encdec's JAX/Flax backend: ``FlaxEncoderDecoderModel`` on flax.linen part models with
an explicit parameter pytree (paths = canonical names), and compiled generation."""
from encdec.public_names import *  # noqa: F401,F403  transformers' names, importable where users look
from encdec.public_names import __all__ as _CORE_NAMES
from encdec_flax.modeling_encoder_decoder import FlaxEncoderDecoderModel
from encdec_flax.parts import (  # part models as module + params objects, as transformers' Flax classes
    FlaxAutoEncoder,
    FlaxAutoModelForCausalLM,
    FlaxBartForCausalLM,
    FlaxBertGenerationDecoder,
    FlaxBertGenerationEncoder,
    FlaxBertForCausalLM,
    FlaxBertLMHeadModel,
    FlaxBertModel,
    FlaxElectraModel,
    FlaxGPT2LMHeadModel,
    FlaxPartModel,
    FlaxProphetNetForCausalLM,
    FlaxRemBertForCausalLM,
    FlaxRemBertModel,
    FlaxRobertaForCausalLM,
    FlaxRobertaModel,
    FlaxXLMRobertaForCausalLM,
    FlaxXLMRobertaModel,
)

__all__ = ["FlaxEncoderDecoderModel", "FlaxAutoEncoder", "FlaxAutoModelForCausalLM", "FlaxBartForCausalLM",
           "FlaxBertForCausalLM", "FlaxBertLMHeadModel", "FlaxBertModel", "FlaxElectraModel", "FlaxGPT2LMHeadModel",
           "FlaxPartModel", "FlaxProphetNetForCausalLM", "FlaxRemBertForCausalLM", "FlaxRemBertModel",
           "FlaxRobertaForCausalLM", "FlaxRobertaModel", "FlaxBertGenerationDecoder", "FlaxBertGenerationEncoder",
           "FlaxXLMRobertaForCausalLM", "FlaxXLMRobertaModel"]
__all__ += _CORE_NAMES
