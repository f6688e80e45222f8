"""ProphetNet decoder (``ProphetNetForCausalLM``) in flax.linen: a main stream and ``ngram``
predict streams.

Hidden sequence ``[main (n) | stream 0 (n) | ... | stream ngram-1 (n)]``; the logits are
stream 0's.  Same semantics as the PyTorch backend (see ``encdec_torch.models.prophetnet``
for the facts kept from transformers: additive masks, pre-softmax cross-attention
weights, transformers' index layout of the predict streams' relative-position bias).
The static cache holds the main stream's keys/values; unwritten slots are hidden by the
causal masks.  transformers has no Flax ProphetNet: ``flax_model.msgpack`` uses the
canonical names split on ``.`` (encdec's own naming).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from encdec.specs.prophetnet import LAYER_NORM_EPS, check_length, check_prophetnet, relative_bucket_table
from encdec_flax.models.layers import LayerStack, activation, cross_inputs, dense, layer_norm, new_cache, write_cache

_MIN = float(jnp.finfo(jnp.float32).min)


def _softmax(scores: jnp.ndarray, dtype: Any) -> jnp.ndarray:
    return jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(dtype)


def _bucket_bias(rel: jnp.ndarray, index: jnp.ndarray) -> jnp.ndarray:
    """``rel`` [..., n, buckets] read at ``index`` [n, keys] -> [..., n, keys]."""
    return jnp.take_along_axis(rel, jnp.broadcast_to(index, rel.shape[:-2] + index.shape), axis=-1)


class ProphetNetAttention(nn.Module):
    """Cross-attention; returns (output, pre-softmax scores)."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        d = self.config.hidden_size
        self.key_proj = dense(d, self.dtype)
        self.value_proj = dense(d, self.dtype)
        self.query_proj = dense(d, self.dtype)
        self.out_proj = dense(d, self.dtype)
        self.attention_dropout = nn.Dropout(self.config.attention_dropout)
        self.dropout = nn.Dropout(self.config.dropout)

    def kv(self, states: jnp.ndarray) -> dict:
        shape = states.shape[:2] + (self.config.num_decoder_attention_heads, -1)
        return {"key": self.key_proj(states).reshape(shape), "value": self.value_proj(states).reshape(shape)}

    def __call__(self, hidden, mask, kv, deterministic: bool):
        heads = self.config.num_decoder_attention_heads
        q = self.query_proj(hidden).reshape(hidden.shape[:2] + (heads, -1))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q / np.sqrt(q.shape[-1]).astype(q.dtype), kv["key"]).astype(jnp.float32)
        scores = jnp.where(mask, scores, _MIN)  # = scores + min in float32 (transformers adds it)
        probs = self.attention_dropout(_softmax(scores, self.dtype), deterministic=deterministic)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, kv["value"]).reshape(hidden.shape)
        return self.dropout(self.out_proj(out), deterministic=deterministic), scores


class ProphetNetNgramSelfAttention(ProphetNetAttention):
    """The same projections plus ``relative_pos_embeddings``: main and predict streams."""

    def setup(self) -> None:
        super().setup()
        self.relative_pos_embeddings = dense(self.config.num_buckets * self.config.num_decoder_attention_heads, self.dtype)

    def __call__(self, hidden, geometry, cache, index, deterministic: bool):
        main_bias, predict_bias, main_index, predict_index = geometry
        c = self.config
        H, N, B = c.num_decoder_attention_heads, c.ngram, c.num_buckets
        b, total, d = hidden.shape
        n = total // (1 + N)

        def streams(t):  # [b, (1+N)n, H*D] -> [b, 1+N, n, H, D]
            return t.reshape(b, 1 + N, n, H, d // H)

        q = streams(self.query_proj(hidden) / np.sqrt(d // H).astype(hidden.dtype))
        k, v = streams(self.key_proj(hidden)), streams(self.value_proj(hidden))
        main, cache = write_cache({"key": k[:, 0], "value": v[:, 0]}, cache, index)
        main_k, main_v = main["key"], main["value"]  # [b, keys, H, D]
        rel = self.relative_pos_embeddings(hidden).reshape(b, 1 + N, n, B, H)

        # main stream: [b, H, n, keys]
        scores = jnp.einsum("bqhd,bkhd->bhqk", q[:, 0], main_k).astype(jnp.float32)
        scores = scores + _bucket_bias(rel[:, 0].transpose(0, 3, 1, 2), main_index) + main_bias
        main_probs = _softmax(scores, self.dtype)
        main_out = jnp.einsum("bhqk,bkhd->bqhd", self.attention_dropout(main_probs, deterministic=deterministic), main_v)

        # predict streams: [b, N, H, n, keys + n] over (main keys | own key)
        qp = q[:, 1:]
        scores = jnp.concatenate([jnp.einsum("bsqhd,bkhd->bshqk", qp, main_k),
                                  jnp.einsum("bsqhd,bsmhd->bshqm", qp, k[:, 1:])], axis=-1).astype(jnp.float32)
        pred_rel = rel[:, 1:].transpose(0, 2, 1, 4, 3).reshape(b, N, H, n, B)  # transformers' index layout
        scores = scores + _bucket_bias(pred_rel, predict_index) + predict_bias
        pred_probs = _softmax(scores, self.dtype)
        dropped = self.attention_dropout(pred_probs, deterministic=deterministic)
        keys = main_k.shape[1]
        pred_out = (jnp.einsum("bshqk,bkhd->bsqhd", dropped[..., :keys], main_v)
                    + jnp.einsum("bshqm,bsmhd->bsqhd", dropped[..., keys:], v[:, 1:]))

        out = jnp.concatenate([main_out[:, None], pred_out], axis=1).reshape(b, total, d)
        out = self.dropout(self.out_proj(out), deterministic=deterministic)
        return out, (main_probs, pred_probs), cache


class ProphetNetFeedForward(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.intermediate = dense(c.decoder_ffn_dim, self.dtype)
        self.output = dense(c.hidden_size, self.dtype)
        self.act = activation(c.activation_function, "prophetnet.activation_function")
        self.activation_dropout = nn.Dropout(c.activation_dropout)
        self.dropout = nn.Dropout(c.dropout)

    def __call__(self, hidden, deterministic: bool):
        h = self.activation_dropout(self.act(self.intermediate(hidden)), deterministic=deterministic)
        return self.dropout(self.output(h), deterministic=deterministic)


class ProphetNetDecoderLayer(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.self_attn = ProphetNetNgramSelfAttention(c, self.dtype)
        self.self_attn_layer_norm = layer_norm(LAYER_NORM_EPS, self.dtype)
        if c.add_cross_attention:
            self.cross_attn = ProphetNetAttention(c, self.dtype)
            self.cross_attn_layer_norm = layer_norm(LAYER_NORM_EPS, self.dtype)
        self.feed_forward = ProphetNetFeedForward(c, self.dtype)
        self.feed_forward_layer_norm = layer_norm(LAYER_NORM_EPS, self.dtype)

    def cross_kv(self, encoder_hidden_states: jnp.ndarray) -> dict:
        return self.cross_attn.kv(encoder_hidden_states)

    def __call__(self, hidden, geometry, cross_mask, cross_kv, cache, index, deterministic: bool):
        self_cache = None if cache is None else cache["self"]
        out, self_w, self_cache = self.self_attn(hidden, geometry, self_cache, index, deterministic)
        hidden = self.self_attn_layer_norm(hidden + out)
        cross_w = None
        if cross_kv is not None:
            out, cross_w = self.cross_attn(hidden, cross_mask, cross_kv, deterministic)
            hidden = self.cross_attn_layer_norm(out + hidden)
        hidden = self.feed_forward_layer_norm(self.feed_forward(hidden, deterministic) + hidden)
        layer_cache = None if cache is None else {"self": self_cache, "cross": cache["cross"]}
        return hidden, self_w, cross_w, layer_cache


class ProphetNetDecoder(nn.Module):
    """``prophetnet.decoder``; its word embeddings are the wrapper's (passed in)."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.position_embeddings = nn.Embed(c.max_position_embeddings, c.hidden_size, dtype=self.dtype)
        self.ngram_embeddings = nn.Embed(c.ngram, c.hidden_size, dtype=self.dtype)
        self.layers = LayerStack(ProphetNetDecoderLayer, c, c.num_decoder_layers, self.dtype)
        self.embeddings_layer_norm = layer_norm(LAYER_NORM_EPS, self.dtype)
        self.dropout = nn.Dropout(c.dropout)
        self.table = jnp.asarray(relative_bucket_table(c))

    def geometry(self, batch: int, n: int, index: Any, keys: int, attention_mask: Any) -> tuple:
        """Additive masks and bucket indices for queries at ``index + i`` over ``keys`` main keys."""
        top = self.table.shape[0] - 1
        q = index + jnp.arange(n)
        k = jnp.arange(keys)
        own = jnp.arange(n)
        main_index = self.table[jnp.clip(q[:, None] - k[None, :], 0, top)]
        predict_index = self.table[jnp.concatenate([jnp.clip(q[:, None] - k[None, :] + 1, 0, top),
                                                    jnp.clip(own[:, None] - own[None, :] - 1, 0, top)], axis=1)]
        causal = jnp.where(k[None, :] > q[:, None], _MIN, 0.0).astype(jnp.float32)
        streams = jnp.arange(self.config.ngram)[:, None, None]
        seen = (k[None, None, :] <= q[None, :, None] - streams) | (k[None, None, :] == 0)
        own_key = jnp.where(own[:, None] == own[None, :], 0.0, _MIN)
        predict = jnp.concatenate([jnp.where(seen, 0.0, _MIN), jnp.broadcast_to(own_key, (self.config.ngram, n, n))], -1)
        main_bias, predict_bias = causal[None, None], predict[None, :, None].astype(jnp.float32)
        if attention_mask is not None:
            if attention_mask.shape[-1] != keys:
                raise ValueError(
                    f"attention_mask covers {attention_mask.shape[-1]} positions but attention runs over {keys} keys "
                    "(with a cache, pass a mask over the cache's max_length)"
                )
            pad = (1.0 - attention_mask.astype(jnp.float32)) * _MIN
            main_bias = main_bias + pad[:, None, None, :]
            predict_bias = predict_bias + jnp.concatenate([pad, jnp.zeros((batch, n), jnp.float32)], -1)[:, None, None, None, :]
        return main_bias, predict_bias, main_index, predict_index

    def init_cache(self, encoder_hidden_states: jnp.ndarray, max_length: int) -> dict:
        c = self.config
        check_length(c, max_length)
        heads = c.num_decoder_attention_heads
        return new_cache(self.layers.cross_kv(encoder_hidden_states), encoder_hidden_states.shape[0], max_length,
                         heads, c.hidden_size // heads, self.dtype)

    def __call__(self, word_embeddings: nn.Embed, input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask,
                 cache, deterministic, output_attentions, output_hidden_states) -> tuple:
        c = self.config
        batch, n = input_ids.shape
        index = 0 if cache is None else cache["index"]
        keys = n if cache is None else cache["layers"][0]["self"]["key"].shape[1]
        check_length(c, keys)
        positions = c.pad_token_id + 1 + index + jnp.arange(n)
        predict_pos = self.position_embeddings(positions + 1)
        ngram = self.ngram_embeddings.embedding.astype(self.dtype)
        x = word_embeddings(input_ids)
        streams = [jnp.broadcast_to(ngram[(s - 1) % c.ngram] + predict_pos, x.shape) for s in range(c.ngram)]
        hidden = jnp.concatenate([x + self.position_embeddings(positions)] + streams, axis=1)
        hidden = self.dropout(self.embeddings_layer_norm(hidden), deterministic=deterministic)
        geometry = self.geometry(batch, n, index, keys, attention_mask)
        cross_kvs, cross_mask = None, None
        if c.add_cross_attention:
            cross_kvs, cross_mask = cross_inputs(self.layers.cross_kv, encoder_hidden_states, encoder_attention_mask, cache, batch)
        hidden, all_hidden, self_ws, cross_ws, new = self.layers(hidden, geometry, cross_mask, cross_kvs, cache, index,
                                                                 deterministic, output_attentions, output_hidden_states)
        if new is not None:
            new = {"index": index + n, "layers": new["layers"]}  # the cache advances by the main stream's length
        return hidden, all_hidden, self_ws, cross_ws, new


class ProphetNetDecoderWrapper(nn.Module):
    """``prophetnet``: the word embeddings and ``decoder`` (HF's names)."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.word_embeddings = nn.Embed(self.config.vocab_size, self.config.hidden_size, dtype=self.dtype)
        self.decoder = ProphetNetDecoder(self.config, self.dtype)

    def init_cache(self, encoder_hidden_states: jnp.ndarray, max_length: int) -> dict:
        return self.decoder.init_cache(encoder_hidden_states, max_length)

    def __call__(self, *args: Any) -> tuple:
        return self.decoder(self.word_embeddings, *args)


class ProphetNetForCausalLM(nn.Module):
    """transformers' ``ProphetNetForCausalLM`` as the decoder of a ``FlaxEncoderDecoderModel``."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        check_prophetnet(self.config)
        activation(self.config.activation_function, "prophetnet.activation_function")
        self.prophetnet = ProphetNetDecoderWrapper(self.config, self.dtype)
        if not self.config.tie_word_embeddings:
            self.lm_head = dense(self.config.vocab_size, self.dtype, use_bias=False)

    def init_cache(self, encoder_hidden_states: jnp.ndarray, max_length: int) -> dict:
        return self.prophetnet.init_cache(encoder_hidden_states, max_length)

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
        """Returns ``(logits, hidden_states, attentions, cross_attentions, cache)``: the first
        predict stream's logits, the main stream's hidden states and attentions."""
        if position_ids is not None:
            raise ValueError("prophetnet: position_ids are not an input of ProphetNet's decoder (positions follow the cache)")
        n = input_ids.shape[1]
        hidden, all_hidden, self_ws, cross_ws, cache = self.prophetnet(
            input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask, cache, deterministic,
            output_attentions, output_hidden_states,
        )
        predict = hidden[:, n:n * 2]  # stream 0: the next token
        if self.config.tie_word_embeddings:
            logits = self.prophetnet.word_embeddings.attend(predict)
        else:
            logits = self.lm_head(predict)
        all_hidden = None if all_hidden is None else tuple(h[:, :n] for h in all_hidden)
        self_ws = None if self_ws is None else tuple(w[0] for w in self_ws)
        return logits, all_hidden, self_ws, cross_ws, cache
