"""BERT and RoBERTa in flax.linen: the encoder base model and the causal-LM decoder
with cross-attention (``BertLMHeadModel`` / ``RobertaForCausalLM``).

Submodule names follow the canonical parameter paths (``embeddings.word_embeddings``,
``encoder.layer.0.attention.self.query``, ``cls.predictions.transform.dense``, ...).
RoBERTa differs only in its position ids (numbered from ``pad_token_id + 1``, pads keep
``pad_token_id``) and its LM head (``lm_head``, fixed exact GELU).
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import flax.linen as nn

from encdec.registry import family
from encdec.specs.bert import adds_absolute_positions, check_bert_like, has_token_types, relative_positions
from encdec_flax.models.layers import (
    LayerStack,
    activation,
    attention,
    cross_inputs,
    dense,
    layer_norm,
    merge_heads,
    new_cache,
    self_attention_mask,
    split_heads,
    write_cache,
)


def position_ids_for(config: Any, input_ids: jnp.ndarray, past_length: jnp.ndarray | int) -> jnp.ndarray:
    """Default position ids: ``past + arange`` for BERT/ELECTRA; RoBERTa counts only
    non-pad tokens from ``pad_token_id + 1`` and gives pads ``pad_token_id``."""
    if family(config.model_type) == "roberta":
        not_pad = (input_ids != config.pad_token_id).astype(jnp.int32)
        return (jnp.cumsum(not_pad, axis=1) + past_length) * not_pad + config.pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1]) + past_length, input_ids.shape)


class BertEmbeddings(nn.Module):
    config: Any
    dim: int
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.word_embeddings = nn.Embed(c.vocab_size, self.dim, dtype=self.dtype)
        self.position_embeddings = nn.Embed(c.max_position_embeddings, self.dim, dtype=self.dtype)
        if has_token_types(c):  # BertGeneration has no token-type table
            self.token_type_embeddings = nn.Embed(c.type_vocab_size, self.dim, dtype=self.dtype)
        self.LayerNorm = layer_norm(c.layer_norm_eps, self.dtype)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def __call__(self, input_ids, token_type_ids, position_ids, deterministic: bool) -> jnp.ndarray:
        x = self.word_embeddings(input_ids)
        if adds_absolute_positions(self.config):
            x = x + self.position_embeddings(position_ids)
        if has_token_types(self.config):
            x = x + self.token_type_embeddings(token_type_ids)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given, but this model has no token-type embeddings (bert-generation)")
        return self.dropout(self.LayerNorm(x), deterministic=deterministic)


class BertSelfAttention(nn.Module):
    """Query/key/value projections and the attention kernel; keys and values come from
    the hidden states (self-attention) or from the encoder (cross-attention)."""

    config: Any
    dtype: Any = jnp.float32
    cross: bool = False

    def setup(self) -> None:
        c = self.config
        h = c.hidden_size
        self.query = dense(h, self.dtype)
        self.key = dense(h, self.dtype)
        self.value = dense(h, self.dtype)
        self.dropout = nn.Dropout(c.attention_probs_dropout_prob)
        if relative_positions(c) and not self.cross:  # transformers' cross-attention stays absolute
            self.distance_embedding = nn.Embed(2 * c.max_position_embeddings - 1, h // c.num_attention_heads,
                                               dtype=self.dtype)

    def relative_scores(self, q, k, index) -> jnp.ndarray:
        """Learned relative-position scores [b, h, q, k] over sqrt(head_dim) (transformers adds
        them before scaling).  Encoder query ``i`` sits at ``i``; every decoder query at the
        last written position ``index + q - 1`` (transformers 4.57 with its cache on)."""
        c = self.config
        n_q, n_k = q.shape[1], k.shape[1]
        if c.is_decoder:
            left = jnp.full((n_q, 1), index + n_q - 1)
        else:
            left = jnp.arange(n_q)[:, None]
        table = self.distance_embedding(left - jnp.arange(n_k)[None, :] + c.max_position_embeddings - 1)
        scores = jnp.einsum("bqhd,qkd->bhqk", q, table)
        if c.position_embedding_type == "relative_key_query":
            scores = scores + jnp.einsum("bkhd,qkd->bhqk", k, table)
        return scores * q.shape[-1] ** -0.5

    def kv(self, states: jnp.ndarray) -> dict:
        n = self.config.num_attention_heads
        return {"key": split_heads(self.key(states), n), "value": split_heads(self.value(states), n)}

    def __call__(self, hidden, mask, kv, cache, index, deterministic: bool):
        n = self.config.num_attention_heads
        q = split_heads(self.query(hidden), n)
        bias = None
        if kv is None:  # self-attention
            kv, cache = write_cache(self.kv(hidden), cache, index)
            if relative_positions(self.config):
                bias = self.relative_scores(q, kv["key"], index)
        out, weights = attention(q, kv["key"], kv["value"], mask, self.dropout, deterministic, bias=bias)
        return merge_heads(out), weights, cache


class BertSelfOutput(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.dense = dense(self.config.hidden_size, self.dtype)
        self.LayerNorm = layer_norm(self.config.layer_norm_eps, self.dtype)
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)

    def __call__(self, hidden, residual, deterministic: bool) -> jnp.ndarray:
        return self.LayerNorm(self.dropout(self.dense(hidden), deterministic=deterministic) + residual)


class BertAttention(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    cross: bool = False

    def setup(self) -> None:
        self.self = BertSelfAttention(self.config, self.dtype, self.cross)
        self.output = BertSelfOutput(self.config, self.dtype)

    def __call__(self, hidden, mask, kv=None, cache=None, index=0, deterministic: bool = True):
        out, weights, cache = self.self(hidden, mask, kv, cache, index, deterministic)
        return self.output(out, hidden, deterministic), weights, cache


class BertIntermediate(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.dense = dense(self.config.intermediate_size, self.dtype)
        self.act = activation(self.config.hidden_act, f"{self.config.model_type}.hidden_act")

    def __call__(self, hidden) -> jnp.ndarray:
        return self.act(self.dense(hidden))


class BertLayer(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.attention = BertAttention(c, self.dtype)
        if c.is_decoder and c.add_cross_attention:
            self.crossattention = BertAttention(c, self.dtype, cross=True)
        self.intermediate = BertIntermediate(c, self.dtype)
        self.output = BertSelfOutput(c, self.dtype)  # intermediate -> hidden, same shape of math

    def cross_kv(self, encoder_hidden_states: jnp.ndarray) -> dict:
        return self.crossattention.self.kv(encoder_hidden_states)

    def __call__(self, hidden, mask, cross_mask, cross_kv, cache, index, deterministic: bool):
        self_cache = None if cache is None else cache["self"]
        hidden, self_w, self_cache = self.attention(hidden, mask, None, self_cache, index, deterministic)
        cross_w = None
        if cross_kv is not None:
            hidden, cross_w, _ = self.crossattention(hidden, cross_mask, cross_kv, None, index, deterministic)
        out = self.output(self.intermediate(hidden), hidden, deterministic)
        layer_cache = None if cache is None else {"self": self_cache, "cross": cache["cross"]}
        return out, self_w, cross_w, layer_cache


class BertEncoder(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.layer = LayerStack(BertLayer, self.config, self.config.num_hidden_layers, self.dtype)

    def __call__(self, *args: Any) -> tuple:
        return self.layer(*args)


class BertPooler(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.dense = dense(self.config.hidden_size, self.dtype)

    def __call__(self, hidden) -> jnp.ndarray:
        return jnp.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """``BertModel`` / ``RobertaModel``.  As an encoder it keeps the pooler; as a decoder
    base it has none and runs causal, with cross-attention and an optional cache."""

    config: Any
    dtype: Any = jnp.float32
    add_pooling_layer: bool = True

    def setup(self) -> None:
        c = self.config
        check_bert_like(c)
        self.embeddings = BertEmbeddings(c, c.hidden_size, self.dtype)
        self.encoder = BertEncoder(c, self.dtype)
        if self.add_pooling_layer:
            self.pooler = BertPooler(c, self.dtype)

    def cross_kv(self, encoder_hidden_states: jnp.ndarray) -> list:
        return self.encoder.layer.cross_kv(encoder_hidden_states)

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        cache=None,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple:
        c = self.config
        batch, length = input_ids.shape
        index = 0 if cache is None else cache["index"]
        if position_ids is None:
            position_ids = position_ids_for(c, input_ids, index)
        if token_type_ids is None and has_token_types(c):
            token_type_ids = jnp.zeros_like(input_ids)
        hidden = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
        mask = self_attention_mask(batch, length, attention_mask, cache, causal=c.is_decoder)
        cross_kvs, cross_mask = None, None
        if c.is_decoder and c.add_cross_attention:
            cross_kvs, cross_mask = cross_inputs(self.cross_kv, encoder_hidden_states, encoder_attention_mask, cache, batch)
        out = self.encoder(hidden, mask, cross_mask, cross_kvs, cache, index, deterministic, output_attentions, output_hidden_states)
        pooled = self.pooler(out[0]) if hasattr(self, "pooler") else None
        return (*out, pooled)

    def init_cache(self, encoder_hidden_states: jnp.ndarray, max_length: int) -> dict:
        """Static-shape cache: empty self-attention keys/values of ``max_length`` and the
        cross-attention keys/values of ``encoder_hidden_states``, computed once."""
        c = self.config
        heads = c.num_attention_heads
        return new_cache(self.cross_kv(encoder_hidden_states), encoder_hidden_states.shape[0], max_length,
                         heads, c.hidden_size // heads, self.dtype)


class BertPredictionHeadTransform(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.dense = dense(c.hidden_size, self.dtype)
        self.act = activation(c.hidden_act, f"{c.model_type}.hidden_act")
        self.LayerNorm = layer_norm(c.layer_norm_eps, self.dtype)

    def __call__(self, hidden) -> jnp.ndarray:
        return self.LayerNorm(self.act(self.dense(hidden)))


class BertLMPredictionHead(nn.Module):
    """``cls.predictions``: transform, then the (tied) decoder plus ``bias``; without the
    transform it is BertGeneration's ``lm_head``."""

    config: Any
    dtype: Any = jnp.float32
    with_transform: bool = True

    def setup(self) -> None:
        if self.with_transform:
            self.transform = BertPredictionHeadTransform(self.config, self.dtype)
        self.bias = self.param("bias", nn.initializers.zeros, (self.config.vocab_size,))
        if not self.config.tie_word_embeddings:
            self.decoder = dense(self.config.vocab_size, self.dtype, use_bias=False)

    def __call__(self, hidden, word_embeddings: nn.Embed) -> jnp.ndarray:
        if self.with_transform:
            hidden = self.transform(hidden)
        logits = word_embeddings.attend(hidden) if self.config.tie_word_embeddings else self.decoder(hidden)
        return logits + self.bias.astype(self.dtype)


class BertOnlyMLMHead(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.predictions = BertLMPredictionHead(self.config, self.dtype)

    def __call__(self, hidden, word_embeddings: nn.Embed) -> jnp.ndarray:
        return self.predictions(hidden, word_embeddings)


class RobertaLMHead(nn.Module):
    """``lm_head``: dense, exact GELU, ``layer_norm``, then the (tied) decoder plus ``bias``."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.dense = dense(c.hidden_size, self.dtype)
        self.layer_norm = layer_norm(c.layer_norm_eps, self.dtype)
        self.bias = self.param("bias", nn.initializers.zeros, (c.vocab_size,))
        if not c.tie_word_embeddings:
            self.decoder = dense(c.vocab_size, self.dtype, use_bias=False)

    def __call__(self, hidden, word_embeddings: nn.Embed) -> jnp.ndarray:
        hidden = self.layer_norm(activation("gelu", "roberta lm_head")(self.dense(hidden)))
        logits = word_embeddings.attend(hidden) if self.config.tie_word_embeddings else self.decoder(hidden)
        return logits + self.bias.astype(self.dtype)


class BertLMHeadModel(nn.Module):
    """Causal-LM decoder: ``bert`` + ``cls`` (BERT) or ``roberta`` + ``lm_head`` (RoBERTa)."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        if family(c.model_type) == "roberta":
            self.base = BertModel(c, self.dtype, add_pooling_layer=False, name="roberta")
            self.head = RobertaLMHead(c, self.dtype, name="lm_head")
        elif c.model_type == "bert-generation":
            self.base = BertModel(c, self.dtype, add_pooling_layer=False, name="bert")
            self.head = BertLMPredictionHead(c, self.dtype, with_transform=False, name="lm_head")
        else:
            self.base = BertModel(c, self.dtype, add_pooling_layer=False, name="bert")
            self.head = BertOnlyMLMHead(c, self.dtype, name="cls")

    def init_cache(self, encoder_hidden_states: jnp.ndarray, max_length: int) -> dict:
        return self.base.init_cache(encoder_hidden_states, max_length)

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        cache=None,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple:
        """Returns ``(logits, hidden_states, attentions, cross_attentions, cache)``."""
        hidden, all_hidden, self_ws, cross_ws, cache, _ = self.base(
            input_ids,
            attention_mask,
            None,
            position_ids,
            encoder_hidden_states,
            encoder_attention_mask,
            cache,
            deterministic,
            output_attentions,
            output_hidden_states,
        )
        logits = self.head(hidden, self.base.embeddings.word_embeddings)
        return logits, all_hidden, self_ws, cross_ws, cache
