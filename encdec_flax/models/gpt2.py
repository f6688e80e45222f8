"""GPT-2 causal LM with cross-attention (``GPT2LMHeadModel``) in flax.linen.

Pre-norm blocks: ``x + attn(ln_1(x))``, ``x + crossattention(ln_cross_attn(x))``,
``x + mlp(ln_2(x))``; ``ln_f`` at the end; the LM head is tied to ``wte`` unless
``tie_word_embeddings`` is off.  Positions are ``past_length + arange`` whatever the
attention mask says, as in transformers 4.57's PyTorch GPT-2.  Conv1D kernels are
stored [out, in], like transformers' Flax GPT-2.
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import flax.linen as nn

from encdec.specs.gpt2 import attention_scale, check_gpt2
from encdec_flax.models.layers import (
    LayerStack,
    Conv1D,
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


class GPT2Attention(nn.Module):
    config: Any
    is_cross_attention: bool = False
    dtype: Any = jnp.float32
    layer_idx: int = 0

    def setup(self) -> None:
        d = self.config.n_embd
        if self.is_cross_attention:
            self.c_attn = Conv1D(2 * d, self.dtype)
            self.q_attn = Conv1D(d, self.dtype)
        else:
            self.c_attn = Conv1D(3 * d, self.dtype)
        self.c_proj = Conv1D(d, self.dtype)
        self.attn_dropout = nn.Dropout(self.config.attn_pdrop)
        self.resid_dropout = nn.Dropout(self.config.resid_pdrop)

    def kv(self, encoder_hidden_states: jnp.ndarray) -> dict:
        """Cross-attention keys/values of the encoder states."""
        k, v = jnp.split(self.c_attn(encoder_hidden_states), 2, axis=-1)
        n = self.config.n_head
        return {"key": split_heads(k, n), "value": split_heads(v, n)}

    def __call__(self, hidden, mask, kv, cache, index, deterministic: bool):
        n = self.config.n_head
        if self.is_cross_attention:
            q = split_heads(self.q_attn(hidden), n)
            k, v = kv["key"], kv["value"]
        else:
            q, k, v = (split_heads(t, n) for t in jnp.split(self.c_attn(hidden), 3, axis=-1))
            kv, cache = write_cache({"key": k, "value": v}, cache, index)
            k, v = kv["key"], kv["value"]
        out, weights = attention(q, k, v, mask, self.attn_dropout, deterministic,
                                 scale=attention_scale(self.config, self.layer_idx))
        if not self.is_cross_attention:  # a query with no visible key: zero output (transformers' SDPA)
            alive = jnp.any(mask, axis=-1)[:, 0, :, None, None]  # [b, q, 1, 1]
            out = jnp.where(alive, out, jnp.zeros_like(out))
        out = self.resid_dropout(self.c_proj(merge_heads(out)), deterministic=deterministic)
        return out, weights, cache


class GPT2MLP(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.c_fc = Conv1D(c.n_inner or 4 * c.n_embd, self.dtype)
        self.c_proj = Conv1D(c.n_embd, self.dtype)
        self.act = activation(c.activation_function, "gpt2.activation_function")
        self.dropout = nn.Dropout(c.resid_pdrop)

    def __call__(self, hidden, deterministic: bool) -> jnp.ndarray:
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden))), deterministic=deterministic)


class GPT2Block(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        eps = c.layer_norm_epsilon
        self.ln_1 = layer_norm(eps, self.dtype)
        self.attn = GPT2Attention(c, False, self.dtype, int(self.name))  # LayerStack names blocks "<i>"
        self.ln_2 = layer_norm(eps, self.dtype)
        if c.add_cross_attention:
            self.crossattention = GPT2Attention(c, True, self.dtype, int(self.name))
            self.ln_cross_attn = layer_norm(eps, self.dtype)
        self.mlp = GPT2MLP(c, self.dtype)
        # residual sums after attention / MLP: where bottleneck adapters attach (encdec_flax.adapters)
        self.attention_adapters = Residual()
        self.output_adapters = Residual()

    def cross_kv(self, encoder_hidden_states: jnp.ndarray) -> dict:
        return self.crossattention.kv(encoder_hidden_states)

    def __call__(self, hidden, mask, cross_mask, cross_kv, cache, index, deterministic: bool):
        self_cache = None if cache is None else cache["self"]
        out, self_w, self_cache = self.attn(self.ln_1(hidden), mask, None, self_cache, index, deterministic)
        hidden = self.attention_adapters(out, hidden)
        cross_w = None
        if cross_kv is not None:
            out, cross_w, _ = self.crossattention(self.ln_cross_attn(hidden), cross_mask, cross_kv, None, index, deterministic)
            hidden = hidden + out
        hidden = self.output_adapters(self.mlp(self.ln_2(hidden), deterministic), hidden)
        layer_cache = None if cache is None else {"self": self_cache, "cross": cache["cross"]}
        return hidden, self_w, cross_w, layer_cache


class GPT2Model(nn.Module):
    """``transformer``: embeddings, blocks and ``ln_f``."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        self.wte = nn.Embed(c.vocab_size, c.n_embd, dtype=self.dtype)
        self.wpe = nn.Embed(c.n_positions, c.n_embd, dtype=self.dtype)
        self.drop = nn.Dropout(c.embd_pdrop)
        self.h = LayerStack(GPT2Block, c, c.n_layer, self.dtype)
        self.ln_f = layer_norm(c.layer_norm_epsilon, self.dtype)

    def init_cache(self, encoder_hidden_states: jnp.ndarray, max_length: int) -> dict:
        c = self.config
        return new_cache(self.h.cross_kv(encoder_hidden_states), encoder_hidden_states.shape[0], max_length,
                         c.n_head, c.n_embd // c.n_head, self.dtype)

    def __call__(self, input_ids, attention_mask, position_ids, encoder_hidden_states, encoder_attention_mask, cache,
                 deterministic, output_attentions, output_hidden_states) -> tuple:
        c = self.config
        batch, length = input_ids.shape
        index = 0 if cache is None else cache["index"]
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(length) + index, input_ids.shape)
        hidden = self.drop(self.wte(input_ids) + self.wpe(position_ids), deterministic=deterministic)
        mask = self_attention_mask(batch, length, attention_mask, cache, causal=True)
        cross_kvs, cross_mask = None, None
        if c.add_cross_attention:
            cross_kvs, cross_mask = cross_inputs(self.h.cross_kv, encoder_hidden_states, encoder_attention_mask, cache, batch)
        return self.h(hidden, mask, cross_mask, cross_kvs, cache, index, deterministic, output_attentions,
                      output_hidden_states, self.ln_f)


class GPT2LMHeadModel(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        check_gpt2(self.config)
        self.transformer = GPT2Model(self.config, self.dtype)
        if not self.config.tie_word_embeddings:
            self.lm_head = dense(self.config.vocab_size, self.dtype, use_bias=False)

    def init_cache(self, encoder_hidden_states: jnp.ndarray, max_length: int) -> dict:
        return self.transformer.init_cache(encoder_hidden_states, max_length)

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
        hidden, all_hidden, self_ws, cross_ws, cache = self.transformer(
            input_ids, attention_mask, position_ids, encoder_hidden_states, encoder_attention_mask, cache,
            deterministic, output_attentions, output_hidden_states,
        )
        if self.config.tie_word_embeddings:
            logits = self.transformer.wte.attend(hidden)
        else:
            logits = self.lm_head(hidden)
        return logits, all_hidden, self_ws, cross_ws, cache
