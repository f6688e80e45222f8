"""BertGeneration (Rothe et al.) in flax.linen, which transformers never had.

The BERT modules driven by BertGeneration's config: word + position embeddings (no token
types), no pooler, and a decoder head ``lm_head`` that is only the output projection
``decoder`` plus ``bias`` (see :class:`~encdec_flax.models.bert.BertLMHeadModel`).
transformers has no Flax BertGeneration: ``flax_model.msgpack`` uses the canonical names
split on ``.``.
"""
from __future__ import annotations

from encdec_flax.models.bert import BertLMHeadModel, BertModel


class BertGenerationEncoder(BertModel):
    """``BertGenerationEncoder``: the encoder role, without a pooler."""

    add_pooling_layer: bool = False


class BertGenerationDecoder(BertLMHeadModel):
    """``BertGenerationDecoder``: ``bert`` (causal, cross-attention) + ``lm_head``."""
