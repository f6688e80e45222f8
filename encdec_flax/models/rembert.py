"""RemBERT in flax.linen: ``RemBertModel`` (encoder) and ``RemBertForCausalLM`` (decoder).

The BERT modules with RemBERT's two differences: embeddings of ``input_embedding_size``
mapped to ``hidden_size`` by ``encoder.embedding_hidden_mapping_in`` before the first
layer, and an LM head (``cls.predictions``) projecting to ``output_embedding_size``
before its own output embedding ``decoder`` (with bias, never tied).  transformers has no
Flax RemBERT: ``flax_model.msgpack`` uses the canonical names split on ``.``.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import flax.linen as nn

from encdec.specs.rembert import check_rembert
from encdec_flax.models.bert import BertEmbeddings, BertLayer, BertLMHeadModel, BertModel, BertPooler
from encdec_flax.models.layers import LayerStack, activation, dense, layer_norm


class RemBertEncoder(nn.Module):
    """``encoder``: ``embedding_hidden_mapping_in``, then the BERT layers ``layer.<i>``."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.embedding_hidden_mapping_in = dense(self.config.hidden_size, self.dtype)
        self.layer = LayerStack(BertLayer, self.config, self.config.num_hidden_layers, self.dtype)

    def __call__(self, hidden, *args: Any) -> tuple:
        return self.layer(self.embedding_hidden_mapping_in(hidden), *args)


class RemBertModel(BertModel):
    def setup(self) -> None:
        c = self.config
        check_rembert(c)
        self.embeddings = BertEmbeddings(c, c.input_embedding_size, self.dtype)
        self.encoder = RemBertEncoder(c, self.dtype)
        if self.add_pooling_layer:
            self.pooler = BertPooler(c, self.dtype)


class RemBertLMPredictionHead(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.dense = dense(c.output_embedding_size, self.dtype)
        self.act = activation(c.hidden_act, "rembert.hidden_act")
        self.LayerNorm = layer_norm(c.layer_norm_eps, self.dtype)
        self.decoder = dense(c.vocab_size, self.dtype)

    def __call__(self, hidden) -> jnp.ndarray:
        return self.decoder(self.LayerNorm(self.act(self.dense(hidden))))


class RemBertOnlyMLMHead(nn.Module):
    """``cls``; takes the word embeddings like BERT's head but, never tied, does not use them."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.predictions = RemBertLMPredictionHead(self.config, self.dtype)

    def __call__(self, hidden, word_embeddings: nn.Embed) -> jnp.ndarray:
        return self.predictions(hidden)


class RemBertForCausalLM(BertLMHeadModel):
    """RemBERT decoder: ``rembert`` (causal, cross-attention) + ``cls.predictions``."""

    def setup(self) -> None:
        self.base = RemBertModel(self.config, self.dtype, add_pooling_layer=False, name="rembert")
        self.head = RemBertOnlyMLMHead(self.config, self.dtype, name="cls")
