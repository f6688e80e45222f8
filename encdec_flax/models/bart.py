"""BART decoder with cross-attention (``BartForCausalLM``) in flax.linen.

Post-norm layers: ``norm(x + self_attn(x))``, ``norm(x + encoder_attn(x))``,
``norm(x + fc2(act(fc1(x))))``.  Learned positions are looked up at ``position + 2``
(fairseq's offset); token embeddings are scaled by ``sqrt(d_model)`` when
``scale_embedding``; ``layernorm_embedding`` follows the embedding sum.
"""
from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import flax.linen as nn

from encdec.specs.bart import BART_POSITION_OFFSET
from encdec_flax.models.layers import (
    LayerStack,
    Residual,
    activation,
    attention,
    dense,
    cross_inputs,
    layer_norm,
    merge_heads,
    new_cache,
    self_attention_mask,
    split_heads,
    write_cache,
)

#: BART uses torch's default LayerNorm epsilon.
BART_LAYER_NORM_EPS = 1e-5


def check_bart_decoder(config: Any) -> None:
    if getattr(config, "decoder_layerdrop", 0.0):
        raise NotImplementedError(f"bart: decoder_layerdrop={config.decoder_layerdrop} is not implemented; use 0.0")


class BartAttention(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        d = self.config.d_model
        self.k_proj = dense(d, self.dtype)
        self.v_proj = dense(d, self.dtype)
        self.q_proj = dense(d, self.dtype)
        self.out_proj = dense(d, self.dtype)
        self.dropout = nn.Dropout(self.config.attention_dropout)

    def kv(self, states: jnp.ndarray) -> dict:
        n = self.config.decoder_attention_heads
        return {"key": split_heads(self.k_proj(states), n), "value": split_heads(self.v_proj(states), n)}

    def __call__(self, hidden, mask, kv, cache, index, deterministic: bool):
        q = split_heads(self.q_proj(hidden), self.config.decoder_attention_heads)
        if kv is None:  # self-attention
            kv, cache = write_cache(self.kv(hidden), cache, index)
        out, weights = attention(q, kv["key"], kv["value"], mask, self.dropout, deterministic)
        return self.out_proj(merge_heads(out)), weights, cache


class BartDecoderLayer(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.self_attn = BartAttention(c, self.dtype)
        self.self_attn_layer_norm = layer_norm(BART_LAYER_NORM_EPS, self.dtype)
        if c.add_cross_attention:
            self.encoder_attn = BartAttention(c, self.dtype)
            self.encoder_attn_layer_norm = layer_norm(BART_LAYER_NORM_EPS, self.dtype)
        self.fc1 = dense(c.decoder_ffn_dim, self.dtype)
        self.fc2 = dense(c.d_model, self.dtype)
        self.final_layer_norm = layer_norm(BART_LAYER_NORM_EPS, self.dtype)
        self.act = activation(c.activation_function, "bart.activation_function")
        self.dropout = nn.Dropout(c.dropout)
        self.activation_dropout = nn.Dropout(c.activation_dropout)
        # bottleneck adapter hosts (AdapterHub's names): LayerNorm(h + sub-layer) after self-attention and the FFN
        self.attention_adapters = Residual()
        self.output_adapters = Residual()

    def cross_kv(self, encoder_hidden_states: jnp.ndarray) -> dict:
        return self.encoder_attn.kv(encoder_hidden_states)

    def __call__(self, hidden, mask, cross_mask, cross_kv, cache, index, deterministic: bool):
        self_cache = None if cache is None else cache["self"]
        out, self_w, self_cache = self.self_attn(hidden, mask, None, self_cache, index, deterministic)
        hidden = self.attention_adapters(self.dropout(out, deterministic=deterministic), hidden, self.self_attn_layer_norm)
        cross_w = None
        if cross_kv is not None:
            out, cross_w, _ = self.encoder_attn(hidden, cross_mask, cross_kv, None, index, deterministic)
            hidden = self.encoder_attn_layer_norm(hidden + self.dropout(out, deterministic=deterministic))
        out = self.activation_dropout(self.act(self.fc1(hidden)), deterministic=deterministic)
        hidden = self.output_adapters(self.dropout(self.fc2(out), deterministic=deterministic), hidden, self.final_layer_norm)
        layer_cache = None if cache is None else {"self": self_cache, "cross": cache["cross"]}
        return hidden, self_w, cross_w, layer_cache


class BartDecoder(nn.Module):
    """``model.decoder``."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.embed_tokens = nn.Embed(c.vocab_size, c.d_model, dtype=self.dtype)
        self.embed_positions = nn.Embed(c.max_position_embeddings + BART_POSITION_OFFSET, c.d_model, dtype=self.dtype)
        self.layers = LayerStack(BartDecoderLayer, c, c.decoder_layers, self.dtype)
        self.layernorm_embedding = layer_norm(BART_LAYER_NORM_EPS, self.dtype)
        self.dropout = nn.Dropout(c.dropout)
        self.embed_scale = math.sqrt(c.d_model) if c.scale_embedding else 1.0

    def init_cache(self, encoder_hidden_states: jnp.ndarray, max_length: int) -> dict:
        c = self.config
        heads = c.decoder_attention_heads
        return new_cache(self.layers.cross_kv(encoder_hidden_states), encoder_hidden_states.shape[0], max_length,
                         heads, c.d_model // heads, self.dtype)

    def __call__(self, input_ids, attention_mask, position_ids, encoder_hidden_states, encoder_attention_mask, cache,
                 deterministic, output_attentions, output_hidden_states) -> tuple:
        c = self.config
        batch, length = input_ids.shape
        index = 0 if cache is None else cache["index"]
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(length) + index, input_ids.shape)
        hidden = self.embed_tokens(input_ids) * self.embed_scale + self.embed_positions(position_ids + BART_POSITION_OFFSET)
        hidden = self.dropout(self.layernorm_embedding(hidden), deterministic=deterministic)
        mask = self_attention_mask(batch, length, attention_mask, cache, causal=True)
        cross_kvs, cross_mask = None, None
        if c.add_cross_attention:
            cross_kvs, cross_mask = cross_inputs(self.layers.cross_kv, encoder_hidden_states, encoder_attention_mask, cache, batch)
        return self.layers(hidden, mask, cross_mask, cross_kvs, cache, index, deterministic, output_attentions,
                      output_hidden_states)


class BartModelWrapper(nn.Module):
    """``model``: holds ``decoder`` (HF's ``BartDecoderWrapper``)."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.decoder = BartDecoder(self.config, self.dtype)

    def __call__(self, *args: Any) -> tuple:
        return self.decoder(*args)


class BartForCausalLM(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        check_bart_decoder(self.config)
        self.model = BartModelWrapper(self.config, self.dtype)
        if not self.config.tie_word_embeddings:
            self.lm_head = dense(self.config.vocab_size, self.dtype, use_bias=False)

    def init_cache(self, encoder_hidden_states: jnp.ndarray, max_length: int) -> dict:
        return self.model.decoder.init_cache(encoder_hidden_states, max_length)

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
        hidden, all_hidden, self_ws, cross_ws, cache = self.model(
            input_ids, attention_mask, position_ids, encoder_hidden_states, encoder_attention_mask, cache,
            deterministic, output_attentions, output_hidden_states,
        )
        if self.config.tie_word_embeddings:
            logits = self.model.decoder.embed_tokens.attend(hidden)
        else:
            logits = self.lm_head(hidden)
        return logits, all_hidden, self_ws, cross_ws, cache
