"""encdec TensorFlow backend: Keras 3 models on the TensorFlow backend with XLA generation."""
from __future__ import annotations

import keras

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"encdec_tf needs Keras 3 on the TensorFlow backend, but Keras runs on "
        f"{keras.backend.backend()!r}; set the environment variable KERAS_BACKEND=tensorflow "
        "before keras is first imported"
    )

from encdec.configuration import EncoderDecoderConfig  # noqa: E402
from encdec_tf.modeling_encoder_decoder import TFEncoderDecoderModel  # noqa: E402
from encdec_tf.models import TFProphetNetForCausalLM, TFRemBertForCausalLM, TFRemBertModel  # noqa: E402

__all__ = ["EncoderDecoderConfig", "TFEncoderDecoderModel"]
__all__ += ["TFProphetNetForCausalLM", "TFRemBertForCausalLM", "TFRemBertModel"]
