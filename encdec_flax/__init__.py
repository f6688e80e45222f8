"""encdec's JAX/Flax backend: ``FlaxEncoderDecoderModel`` on flax.linen part models with
an explicit parameter pytree (paths = canonical names), and compiled generation."""
from encdec.configuration import EncoderDecoderConfig
from encdec_flax.modeling_encoder_decoder import FlaxEncoderDecoderModel
from encdec_flax.models import ProphetNetForCausalLM as FlaxProphetNetForCausalLM
from encdec_flax.models import RemBertForCausalLM as FlaxRemBertForCausalLM
from encdec_flax.models import RemBertModel as FlaxRemBertModel

__all__ = ["EncoderDecoderConfig", "FlaxEncoderDecoderModel"]
__all__ += ["FlaxProphetNetForCausalLM", "FlaxRemBertForCausalLM", "FlaxRemBertModel"]
