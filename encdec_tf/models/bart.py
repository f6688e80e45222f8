"""BART decoder with cross-attention (``BartForCausalLM``).

Learned positions offset by 2, ``layernorm_embedding`` after the embedding sum, then
post-LayerNorm layers: self-attention, cross-attention, feed-forward; logits through
the (tied) ``embed_tokens``.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import keras
import tensorflow as tf

from encdec.outputs import CausalLMOutputWithCrossAttentions
from encdec.specs import decoder_spec
from encdec.specs.bart import BART_POSITION_OFFSET
from encdec_tf.models.common import (
    TFPartMixin,
    Dense,
    Embedding,
    LayerNorm,
    ParamStore,
    Residual,
    activation,
    as_int,
    attend,
    attention_kv,
    decoder_self_bias,
    dropout,
    merge_heads,
    padding_bias,
    project,
    run_layers,
    split_past,
    split_heads,
)

BART_NORM_EPS = 1e-5


class BartAttention:
    def __init__(self, store: ParamStore, prefix: str, config: Any, cross: bool = False) -> None:
        self.q_proj = Dense(store, f"{prefix}.q_proj")
        self.k_proj = Dense(store, f"{prefix}.k_proj")
        self.v_proj = Dense(store, f"{prefix}.v_proj")
        self.out_proj = Dense(store, f"{prefix}.out_proj")
        self.heads = config.decoder_attention_heads
        self.cross = cross
        self.rate = config.attention_dropout

    def kv(self, states: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Cross-attention keys and values of the encoder states (computed once per input)."""
        return attention_kv(self.k_proj, self.v_proj, None, states, None, None, self.heads, True)

    def __call__(self, h, bias, states=None, past=None, cache_index=None, training=False):
        q = split_heads(self.q_proj(h, training), self.heads)
        k, v = attention_kv(self.k_proj, self.v_proj, h, states, past, cache_index, self.heads, self.cross, training)
        ctx, probs = attend(q, k, v, bias, self.rate, training)
        return self.out_proj(merge_heads(ctx)), (k, v), probs


class BartDecoderLayer:
    def __init__(self, store: ParamStore, prefix: str, config: Any) -> None:
        self.self_attn = BartAttention(store, f"{prefix}.self_attn", config)
        self.self_attn_layer_norm = LayerNorm(store, f"{prefix}.self_attn_layer_norm", BART_NORM_EPS)
        self.cross = config.add_cross_attention
        if self.cross:
            self.encoder_attn = BartAttention(store, f"{prefix}.encoder_attn", config, cross=True)
            self.encoder_attn_layer_norm = LayerNorm(store, f"{prefix}.encoder_attn_layer_norm", BART_NORM_EPS)
        self.fc1 = Dense(store, f"{prefix}.fc1")
        self.fc2 = Dense(store, f"{prefix}.fc2")
        self.final_layer_norm = LayerNorm(store, f"{prefix}.final_layer_norm", BART_NORM_EPS)
        # bottleneck adapter hosts (AdapterHub's names): LayerNorm(h + sub-layer) after self-attention and the FFN
        self.attention_adapters = Residual(store, f"{prefix}.attention_adapters", self.self_attn_layer_norm)
        self.output_adapters = Residual(store, f"{prefix}.output_adapters", self.final_layer_norm)
        self.act = activation(config.activation_function, f"{config.model_type}: activation_function")
        self.rate, self.act_rate = config.dropout, config.activation_dropout

    def __call__(self, h, bias, enc=None, enc_bias=None, past=None, cache_index=None, training=False):
        self_past, cross_past = split_past(past)
        a, present, probs = self.self_attn(h, bias, past=self_past, cache_index=cache_index, training=training)
        h = self.attention_adapters(dropout(a, self.rate, training), h, training)
        cross_probs = None
        if self.cross and (enc is not None or cross_past is not None):
            a, cross_kv, cross_probs = self.encoder_attn(h, enc_bias, states=enc, past=cross_past, training=training)
            h = self.encoder_attn_layer_norm(h + dropout(a, self.rate, training))
            present = present + cross_kv
        ff = self.fc2(dropout(self.act(self.fc1(h, training)), self.act_rate, training), training)
        return self.output_adapters(dropout(ff, self.rate, training), h, training), present, probs, cross_probs


class TFBartForCausalLM(TFPartMixin, keras.layers.Layer):
    is_causal_lm = True

    def __init__(self, config: Any, tied: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        activation(config.activation_function, f"{config.model_type}: activation_function")
        self.config = config
        #: built with cross-attention layers (fixed at construction, whatever the config says later)
        self.accepts_encoder_states = bool(config.add_cross_attention)
        #: (layers, heads, head_dim) of the self-attention cache
        self.cache_layout = (config.decoder_layers, config.decoder_attention_heads, config.d_model // config.decoder_attention_heads)
        self.store = ParamStore(self, decoder_spec(config), tied)
        base = "model.decoder"
        self.embed_tokens = Embedding(self.store, f"{base}.embed_tokens")
        self.embed_positions = Embedding(self.store, f"{base}.embed_positions")
        self.layernorm_embedding = LayerNorm(self.store, f"{base}.layernorm_embedding", BART_NORM_EPS)
        self.layers = [BartDecoderLayer(self.store, f"{base}.layers.{i}", config) for i in range(config.decoder_layers)]
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.tied = self.store.is_tied("lm_head.weight")
        self.lm_head = self.store.get("lm_head.weight")
        self.store.check_complete()
        self.built = True

    def cross_cache(self, encoder_hidden_states: tf.Tensor) -> tuple[tuple[tf.Tensor, tf.Tensor], ...]:
        """Per layer, the cross-attention (keys, values): the last two entries of a layer's cache."""
        return tuple(layer.encoder_attn.kv(encoder_hidden_states) for layer in self.layers)

    def call(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
             inputs_embeds=None, past_key_values=None, cache_index=None, use_cache=False, output_attentions=False,
             output_hidden_states=False, training=False, position_ids=None):
        input_ids, position_ids = as_int(input_ids), as_int(position_ids)
        h = self.embed_tokens(input_ids) * self.embed_scale if inputs_embeds is None else tf.cast(inputs_embeds, self.embed_tokens.embeddings.dtype)
        batch, length = tf.shape(h)[0], tf.shape(h)[1]
        past_len, bias = decoder_self_bias(attention_mask, batch, length, past_key_values, cache_index)
        if position_ids is None:
            position_ids = past_len + tf.range(length)[None]
        h = h + self.embed_positions(position_ids + BART_POSITION_OFFSET)
        h = dropout(self.layernorm_embedding(h), self.config.dropout, training)
        h, extra = run_layers(self.layers, h, bias, enc=encoder_hidden_states, enc_bias=padding_bias(encoder_attention_mask),
                              past=past_key_values, cache_index=cache_index, output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states, training=training)
        return CausalLMOutputWithCrossAttentions(
            logits=project(h, self.lm_head, self.tied), past_key_values=extra["past_key_values"] if use_cache else None,
            hidden_states=extra["hidden_states"], attentions=extra["attentions"], cross_attentions=extra["cross_attentions"])
