"""encdec's JAX/Flax backend: ``FlaxEncoderDecoderModel`` on flax.linen part models with
an explicit parameter pytree (paths = canonical names), and compiled generation."""
from encdec.configuration import EncoderDecoderConfig
from encdec_flax.modeling_encoder_decoder import FlaxEncoderDecoderModel

__all__ = ["EncoderDecoderConfig", "FlaxEncoderDecoderModel"]
