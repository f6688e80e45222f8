"""encdec TensorFlow backend: Keras 3 models on the TensorFlow backend with XLA generation."""
from __future__ import annotations

import keras

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"encdec_tf needs Keras 3 on the TensorFlow backend, but Keras runs on "
        f"{keras.backend.backend()!r}; set the environment variable KERAS_BACKEND=tensorflow "
        "before keras is first imported"
    )

from encdec.public_names import *  # noqa: E402,F401,F403  transformers' names, importable where users look
from encdec.public_names import __all__ as _CORE_NAMES  # noqa: E402
from encdec_tf.modeling_encoder_decoder import TFEncoderDecoderModel  # noqa: E402
from encdec_tf.models import (  # noqa: E402
    TFBartForCausalLM,
    TFBertGenerationDecoder,
    TFBertGenerationEncoder,
    TFBertLMHeadModel,
    TFBertModel,
    TFElectraModel,
    TFGPT2LMHeadModel,
    TFProphetNetForCausalLM,
    TFRemBertForCausalLM,
    TFRemBertModel,
)

#: transformers' TF names of the RoBERTa parts (same layers as BERT's here)
TFRobertaModel = TFBertModel
TFRobertaForCausalLM = TFBertLMHeadModel

__all__ = ["TFEncoderDecoderModel", "TFBartForCausalLM", "TFBertLMHeadModel", "TFBertModel", "TFElectraModel",
           "TFGPT2LMHeadModel", "TFProphetNetForCausalLM", "TFRemBertForCausalLM", "TFRemBertModel",
           "TFRobertaForCausalLM", "TFRobertaModel", "TFBertGenerationDecoder", "TFBertGenerationEncoder"]
__all__ += _CORE_NAMES
