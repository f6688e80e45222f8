"""encdec's JAX/Flax backend: ``FlaxEncoderDecoderModel`` on flax.linen part models with
an explicit parameter pytree (paths = canonical names), and compiled generation."""
from encdec.configuration import (  # transformers' names, importable where users look
    AutoConfig,
    BartConfig,
    BertConfig,
    ElectraConfig,
    EncoderDecoderConfig,
    GPT2Config,
    PretrainedConfig,
    ProphetNetConfig,
    RemBertConfig,
    RobertaConfig,
)
from encdec.generation import GenerationConfig
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
__all__ += ["AutoConfig", "BartConfig", "BertConfig", "ElectraConfig", "EncoderDecoderConfig", "GPT2Config",
            "GenerationConfig", "PretrainedConfig", "ProphetNetConfig", "RemBertConfig", "RobertaConfig"]
