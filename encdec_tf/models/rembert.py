"""RemBERT: ``RemBertModel`` (encoder) and ``RemBertForCausalLM`` (decoder).

The BERT models with RemBERT's two differences: embeddings of ``input_embedding_size``
mapped to ``hidden_size`` by ``encoder.embedding_hidden_mapping_in``, and an LM head
projecting to ``output_embedding_size`` before its own output embedding
``cls.predictions.decoder`` (with bias, never tied).
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf

from encdec_tf.models.bert import BertEmbeddings, TFBertLMHeadModel, TFBertModel
from encdec_tf.models.common import Dense, LayerNorm, ParamStore, activation


class RemBertEmbeddings(BertEmbeddings):
    """BERT embeddings, then ``encoder.embedding_hidden_mapping_in`` (a sibling of ``embeddings``)."""

    def __init__(self, store: ParamStore, prefix: str, config: Any) -> None:
        super().__init__(store, prefix, config)
        base = prefix.rpartition(".")[0]
        self.mapping = Dense(store, f"{base}.encoder.embedding_hidden_mapping_in".lstrip("."))

    def __call__(self, *args: Any) -> tf.Tensor:
        return self.mapping(super().__call__(*args))


class RemBertLMHead:
    """``cls.predictions``: dense to ``output_embedding_size``, activation, LayerNorm, ``decoder``."""

    def __init__(self, store: ParamStore, config: Any) -> None:
        self.dense = Dense(store, "cls.predictions.dense")
        self.act = activation(config.hidden_act, f"{config.model_type}: hidden_act")
        self.norm = LayerNorm(store, "cls.predictions.LayerNorm", config.layer_norm_eps)
        self.decoder = Dense(store, "cls.predictions.decoder")

    def __call__(self, h: tf.Tensor) -> tf.Tensor:
        return self.decoder(self.norm(self.act(self.dense(h))))


class TFRemBertModel(TFBertModel):
    embeddings_class = RemBertEmbeddings


class TFRemBertForCausalLM(TFBertLMHeadModel):
    embeddings_class = RemBertEmbeddings

    def build_head(self, config: Any) -> RemBertLMHead:
        return RemBertLMHead(self.store, config)
