"""BertGeneration (Rothe et al.) in TensorFlow, which transformers never had.

The BERT classes driven by BertGeneration's spec: word + position embeddings (no token
types), no pooler, and a decoder head ``lm_head`` that is only the output projection
``decoder`` plus ``lm_head.bias`` (tied to the word embeddings unless
``tie_word_embeddings=False``).  transformers has no TF BertGeneration, so ``tf_model.h5``
is refused for it (save ``model.safetensors``).
"""
from __future__ import annotations

from encdec_tf.models.bert import TFBertLMHeadModel, TFBertModel


class TFBertGenerationEncoder(TFBertModel):
    """``BertGenerationEncoder``: the encoder role."""


class TFBertGenerationDecoder(TFBertLMHeadModel):
    """``BertGenerationDecoder``: ``bert`` (causal, cross-attention) + ``lm_head``."""
