"""GPT-2 causal LM with cross-attention (``GPT2LMHeadModel`` with ``add_cross_attention``).

Pre-LayerNorm blocks: ``h += attn(ln_1(h))``; ``h += cross(ln_cross_attn(h), enc)``;
``h += mlp(ln_2(h))``; final ``ln_f``; logits through the (tied) ``wte``.  Positions are
``past_length + arange(length)`` whatever the padding, as in transformers 4.57.
"""
from __future__ import annotations

from typing import Any, Mapping

import keras
import tensorflow as tf

from encdec.outputs import CausalLMOutputWithCrossAttentions
from encdec.specs import decoder_spec
from encdec.specs.gpt2 import attention_scale
from encdec_tf.models.common import (
    MASK_MIN,
    TFPartMixin,
    Dense,
    Embedding,
    LayerNorm,
    ParamStore,
    Residual,
    activation,
    as_int,
    attend,
    decoder_self_bias,
    dropout,
    merge_heads,
    padding_bias,
    project,
    run_layers,
    split_past,
    split_heads,
    update_cache,
)


class GPT2Attention:
    def __init__(self, store: ParamStore, prefix: str, config: Any, cross: bool = False) -> None:
        self.c_attn = Dense(store, f"{prefix}.c_attn")
        self.q_attn = Dense(store, f"{prefix}.q_attn") if cross else None
        self.c_proj = Dense(store, f"{prefix}.c_proj")
        self.heads, self.dim = config.n_head, config.n_embd
        self.attn_rate, self.rate = config.attn_pdrop, config.resid_pdrop
        self.scale = attention_scale(config, int(prefix.split(".")[2]))  # prefix transformer.h.<i>.<module>

    def kv(self, states: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Cross-attention keys and values of the encoder states (computed once per input)."""
        k, v = tf.split(self.c_attn(states), 2, axis=-1)
        return split_heads(k, self.heads), split_heads(v, self.heads)

    def __call__(self, h, bias, states=None, past=None, cache_index=None, training=False):
        if self.q_attn is not None:  # cross-attention: keys/values from the encoder, computed once
            q = split_heads(self.q_attn(h), self.heads)
            k, v = past if past is not None else self.kv(states)
        else:
            q, k, v = tf.split(self.c_attn(h, training), 3, axis=-1)
            q = split_heads(q, self.heads)
            k, v = update_cache(past, split_heads(k, self.heads), split_heads(v, self.heads), cache_index)
        ctx, probs = attend(q, k, v, bias, self.attn_rate, training, scale=self.scale)
        if self.q_attn is None and bias is not None:  # a query with no visible key: zero output (transformers' SDPA)
            alive = tf.reduce_any(bias > MASK_MIN / 2, axis=-1, keepdims=True)  # [b, 1, q, 1]
            ctx = ctx * tf.cast(alive, ctx.dtype)
        return dropout(self.c_proj(merge_heads(ctx)), self.rate, training), (k, v), probs


class GPT2Block:
    def __init__(self, store: ParamStore, prefix: str, config: Any) -> None:
        eps = config.layer_norm_epsilon
        self.ln_1 = LayerNorm(store, f"{prefix}.ln_1", eps)
        self.attn = GPT2Attention(store, f"{prefix}.attn", config)
        self.cross = config.add_cross_attention
        if self.cross:
            self.ln_cross_attn = LayerNorm(store, f"{prefix}.ln_cross_attn", eps)
            self.crossattention = GPT2Attention(store, f"{prefix}.crossattention", config, cross=True)
        self.ln_2 = LayerNorm(store, f"{prefix}.ln_2", eps)
        self.c_fc = Dense(store, f"{prefix}.mlp.c_fc")
        self.c_proj = Dense(store, f"{prefix}.mlp.c_proj")
        # bottleneck adapter hosts (AdapterHub's names): h + sub-layer, after self-attention and after the MLP
        self.attention_adapters = Residual(store, f"{prefix}.attention_adapters")
        self.output_adapters = Residual(store, f"{prefix}.output_adapters")
        self.act = activation(config.activation_function, f"{config.model_type}: activation_function")
        self.rate = config.resid_pdrop

    def __call__(self, h, bias, enc=None, enc_bias=None, past=None, cache_index=None, training=False):
        self_past, cross_past = split_past(past)
        a, present, probs = self.attn(self.ln_1(h), bias, past=self_past, cache_index=cache_index, training=training)
        h = self.attention_adapters(a, h, training)
        cross_probs = None
        if self.cross and (enc is not None or cross_past is not None):
            a, cross_kv, cross_probs = self.crossattention(self.ln_cross_attn(h), enc_bias, states=enc, past=cross_past, training=training)
            h = h + a
            present = present + cross_kv
        m = dropout(self.c_proj(self.act(self.c_fc(self.ln_2(h), training)), training), self.rate, training)
        h = self.output_adapters(m, h, training)
        return h, present, probs, cross_probs


class TFGPT2LMHeadModel(TFPartMixin, keras.layers.Layer):
    is_causal_lm = True

    def __init__(self, config: Any, tied: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        activation(config.activation_function, f"{config.model_type}: activation_function")
        self.config = config
        #: built with cross-attention layers (fixed at construction, whatever the config says later)
        self.accepts_encoder_states = bool(config.add_cross_attention)
        #: (layers, heads, head_dim) of the self-attention cache
        self.cache_layout = (config.n_layer, config.n_head, config.n_embd // config.n_head)
        self.store = ParamStore(self, decoder_spec(config), tied)
        self.wte = Embedding(self.store, "transformer.wte")
        self.wpe = Embedding(self.store, "transformer.wpe")
        self.blocks = [GPT2Block(self.store, f"transformer.h.{i}", config) for i in range(config.n_layer)]
        self.ln_f = LayerNorm(self.store, "transformer.ln_f", config.layer_norm_epsilon)
        self.tied = self.store.is_tied("lm_head.weight")
        self.lm_head = self.store.get("lm_head.weight")
        self.store.check_complete()
        self.built = True

    def cross_cache(self, encoder_hidden_states: tf.Tensor) -> tuple[tuple[tf.Tensor, tf.Tensor], ...]:
        """Per layer, the cross-attention (keys, values): the last two entries of a layer's cache."""
        return tuple(layer.crossattention.kv(encoder_hidden_states) for layer in self.blocks)

    def call(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
             inputs_embeds=None, past_key_values=None, cache_index=None, use_cache=False, output_attentions=False,
             output_hidden_states=False, training=False, token_type_ids=None, position_ids=None):
        input_ids, token_type_ids, position_ids = as_int(input_ids), as_int(token_type_ids), as_int(position_ids)
        h = self.wte(input_ids) if inputs_embeds is None else tf.cast(inputs_embeds, self.wte.embeddings.dtype)
        batch, length = tf.shape(h)[0], tf.shape(h)[1]
        past_len, bias = decoder_self_bias(attention_mask, batch, length, past_key_values, cache_index)
        if position_ids is None:
            position_ids = past_len + tf.range(length)[None]
        h = h + self.wpe(position_ids)
        if token_type_ids is not None:
            h = h + self.wte(token_type_ids)
        h = dropout(h, self.config.embd_pdrop, training)
        h, extra = run_layers(self.blocks, h, bias, enc=encoder_hidden_states, enc_bias=padding_bias(encoder_attention_mask),
                              past=past_key_values, cache_index=cache_index, output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states, training=training, final=self.ln_f)
        return CausalLMOutputWithCrossAttentions(
            logits=project(h, self.lm_head, self.tied), past_key_values=extra["past_key_values"] if use_cache else None,
            hidden_states=extra["hidden_states"], attentions=extra["attentions"], cross_attentions=extra["cross_attentions"])
