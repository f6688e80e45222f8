"""ProphetNet decoder (``ProphetNetForCausalLM``): a main stream and ``ngram`` predict streams.

Hidden sequence ``[main (n) | stream 0 (n) | ... | stream ngram-1 (n)]``; the logits are
stream 0's.  Same semantics as the PyTorch backend (see ``encdec_torch.models.prophetnet``
for the facts kept from transformers: additive masks, pre-softmax cross-attention
weights, transformers' index layout of the predict streams' relative-position bias).
The cache holds the main stream's keys/values; a static cache (``cache_index``) keeps
unwritten slots hidden by the causal masks.  transformers has no TF ProphetNet, so
``tf_model.h5`` is refused for it (save ``model.safetensors``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import keras
import tensorflow as tf

from encdec.outputs import ProphetNetDecoderLMOutput
from encdec.specs import decoder_spec
from encdec.specs.prophetnet import BASE, LAYER_NORM_EPS, check_length, relative_bucket_table
from encdec_tf.models.common import (
    TFPartMixin,
    MASK_MIN,
    Dense,
    Embedding,
    LayerNorm,
    ParamStore,
    activation,
    as_int,
    dropout,
    merge_heads,
    padding_bias,
    project,
    run_layers,
    split_heads,
    split_past,
    update_cache,
)


def bucket_bias(rel: tf.Tensor, index: tf.Tensor, buckets: int) -> tf.Tensor:
    """``rel`` [..., n, buckets] read at ``index`` [n, keys] -> [..., n, keys] (a one-hot
    product: exact, and one XLA-friendly matmul)."""
    return tf.einsum("...nb,nkb->...nk", rel, tf.one_hot(index, buckets, dtype=rel.dtype))


class ProphetNetAttention:
    """Cross-attention; returns (output, pre-softmax scores, (k, v))."""

    def __init__(self, store: ParamStore, prefix: str, config: Any) -> None:
        self.key_proj = Dense(store, f"{prefix}.key_proj")
        self.value_proj = Dense(store, f"{prefix}.value_proj")
        self.query_proj = Dense(store, f"{prefix}.query_proj")
        self.out_proj = Dense(store, f"{prefix}.out_proj")
        self.heads = config.num_decoder_attention_heads
        self.rate, self.attn_rate = config.dropout, config.attention_dropout

    def kv(self, states: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return split_heads(self.key_proj(states), self.heads), split_heads(self.value_proj(states), self.heads)

    def __call__(self, h, bias, kv, training=False):
        k, v = kv
        q = split_heads(self.query_proj(h, training), self.heads)
        scores = tf.matmul(q / math.sqrt(q.shape[-1]), k, transpose_b=True)
        if bias is not None:
            scores = scores + bias
        ctx = tf.matmul(dropout(tf.nn.softmax(scores, axis=-1), self.attn_rate, training), v)
        return dropout(self.out_proj(merge_heads(ctx), training), self.rate, training), scores, (k, v)


class ProphetNetNgramSelfAttention(ProphetNetAttention):
    """The same projections plus ``relative_pos_embeddings``; main and predict streams."""

    def __init__(self, store: ParamStore, prefix: str, config: Any) -> None:
        super().__init__(store, prefix, config)
        self.relative_pos_embeddings = Dense(store, f"{prefix}.relative_pos_embeddings")
        self.ngram, self.buckets = config.ngram, config.num_buckets

    def __call__(self, h, geometry, past, cache_index, training=False):
        main_bias, predict_bias, main_index, predict_index = geometry
        H, N, B = self.heads, self.ngram, self.buckets
        d = h.shape[-1]
        b, n = tf.shape(h)[0], tf.shape(h)[1] // (1 + N)

        def streams(t: tf.Tensor) -> tf.Tensor:  # [b, (1+N)n, H*D] -> [b, 1+N, H, n, D]
            return tf.transpose(tf.reshape(t, tf.stack([b, 1 + N, n, H, d // H])), [0, 1, 3, 2, 4])

        q = streams(self.query_proj(h, training) / math.sqrt(d // H))
        k, v = streams(self.key_proj(h, training)), streams(self.value_proj(h, training))
        main_k, main_v = update_cache(past, k[:, 0], v[:, 0], cache_index)
        rel = tf.reshape(self.relative_pos_embeddings(h, training), tf.stack([b, 1 + N, n, B, H]))

        # main stream: [b, H, n, keys]
        scores = tf.matmul(q[:, 0], main_k, transpose_b=True)
        scores = scores + bucket_bias(tf.transpose(rel[:, 0], [0, 3, 1, 2]), main_index, B)
        if main_bias is not None:
            scores = scores + main_bias
        main_probs = tf.nn.softmax(scores, axis=-1)
        main_out = tf.matmul(dropout(main_probs, self.attn_rate, training), main_v)
        main_out = tf.reshape(tf.transpose(main_out, [0, 2, 1, 3]), tf.stack([b, 1, n, d]))

        # predict streams: [b, N, H, n, keys + n] over (main keys | own key)
        qp = q[:, 1:]
        scores = tf.concat([tf.einsum("bshnd,bhkd->bshnk", qp, main_k), tf.einsum("bshnd,bshmd->bshnm", qp, k[:, 1:])], -1)
        pred_rel = tf.reshape(tf.transpose(rel[:, 1:], [0, 2, 1, 4, 3]), tf.stack([b, N, H, n, B]))  # transformers' layout
        scores = scores + bucket_bias(pred_rel, predict_index, B)
        if predict_bias is not None:
            scores = scores + predict_bias
        pred_probs = tf.nn.softmax(scores, axis=-1)
        dropped = dropout(pred_probs, self.attn_rate, training)
        keys = tf.shape(main_k)[2]
        pred_out = (tf.einsum("bshnk,bhkd->bsnhd", dropped[..., :keys], main_v)
                    + tf.einsum("bshnm,bshmd->bsnhd", dropped[..., keys:], v[:, 1:]))
        pred_out = tf.reshape(pred_out, tf.stack([b, N, n, d]))

        out = tf.reshape(self.out_proj(tf.concat([main_out, pred_out], axis=1), training), tf.shape(h))
        return dropout(out, self.rate, training), (main_k, main_v), (main_probs, pred_probs)


class ProphetNetDecoderLayer:
    def __init__(self, store: ParamStore, prefix: str, config: Any) -> None:
        self.self_attn = ProphetNetNgramSelfAttention(store, f"{prefix}.self_attn", config)
        self.self_attn_layer_norm = LayerNorm(store, f"{prefix}.self_attn_layer_norm", LAYER_NORM_EPS)
        self.cross = bool(config.add_cross_attention)
        if self.cross:
            self.cross_attn = ProphetNetAttention(store, f"{prefix}.cross_attn", config)
            self.cross_attn_layer_norm = LayerNorm(store, f"{prefix}.cross_attn_layer_norm", LAYER_NORM_EPS)
        self.intermediate = Dense(store, f"{prefix}.feed_forward.intermediate")
        self.output = Dense(store, f"{prefix}.feed_forward.output")
        self.feed_forward_layer_norm = LayerNorm(store, f"{prefix}.feed_forward_layer_norm", LAYER_NORM_EPS)
        self.act = activation(config.activation_function, f"{config.model_type}: activation_function")
        self.rate, self.act_rate = config.dropout, config.activation_dropout

    def __call__(self, h, geometry, enc=None, enc_bias=None, past=None, cache_index=None, training=False):
        self_past, cross_past = split_past(past)
        a, present, probs = self.self_attn(h, geometry, self_past, cache_index, training)
        h = self.self_attn_layer_norm(h + a)
        cross_scores = None
        if self.cross and (enc is not None or cross_past is not None):
            kv = cross_past if cross_past is not None else self.cross_attn.kv(enc)
            a, cross_scores, kv = self.cross_attn(h, enc_bias, kv, training)
            h = self.cross_attn_layer_norm(a + h)
            present = present + kv
        ff = dropout(self.act(self.intermediate(h, training)), self.act_rate, training)
        ff = dropout(self.output(ff, training), self.rate, training)
        return self.feed_forward_layer_norm(ff + h), present, probs, cross_scores


class TFProphetNetForCausalLM(TFPartMixin, keras.layers.Layer):
    """transformers' ``ProphetNetForCausalLM`` as the decoder of a ``TFEncoderDecoderModel``."""

    is_causal_lm = True

    def __init__(self, config: Any, tied: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        activation(config.activation_function, f"{config.model_type}: activation_function")
        self.config = config
        #: built with cross-attention layers (fixed at construction, whatever the config says later)
        self.accepts_encoder_states = bool(config.add_cross_attention)
        #: (layers, heads, head_dim) of the self-attention cache (the main stream's)
        heads = config.num_decoder_attention_heads
        self.cache_layout = (config.num_decoder_layers, heads, config.hidden_size // heads)
        self.store = ParamStore(self, decoder_spec(config), tied)
        self.word_embeddings = Embedding(self.store, "prophetnet.word_embeddings")
        self.position_embeddings = Embedding(self.store, f"{BASE}.position_embeddings")
        self.ngram_embeddings = self.store.get(f"{BASE}.ngram_embeddings.weight")
        self.embeddings_layer_norm = LayerNorm(self.store, f"{BASE}.embeddings_layer_norm", LAYER_NORM_EPS)
        self.layers = [ProphetNetDecoderLayer(self.store, f"{BASE}.layers.{i}", config) for i in range(config.num_decoder_layers)]
        self.store.get(f"{BASE}.word_embeddings.weight")  # the tie target shares the wrapper's table
        self.tied = self.store.is_tied("lm_head.weight")
        self.lm_head = self.store.get("lm_head.weight")
        self.table = tf.constant(relative_bucket_table(config), tf.int32)
        self.store.check_complete()
        self.built = True

    def cross_cache(self, encoder_hidden_states: tf.Tensor) -> tuple[tuple[tf.Tensor, tf.Tensor], ...]:
        """Per layer, the cross-attention (keys, values): the last two entries of a layer's cache."""
        return tuple(layer.cross_attn.kv(encoder_hidden_states) for layer in self.layers)

    def geometry(self, n: tf.Tensor, past: Any, keys: tf.Tensor, attention_mask: Any) -> tuple:
        """Additive masks and bucket indices for queries at ``past + i`` over ``keys`` main keys."""
        top = int(self.table.shape[0]) - 1
        q = past + tf.range(n)
        k = tf.range(keys)
        own = tf.range(n)
        main_index = tf.gather(self.table, tf.clip_by_value(q[:, None] - k[None, :], 0, top))
        predict_index = tf.gather(self.table, tf.concat([tf.clip_by_value(q[:, None] - k[None, :] + 1, 0, top),
                                                         tf.clip_by_value(own[:, None] - own[None, :] - 1, 0, top)], 1))
        causal = tf.where(k[None, :] > q[:, None], MASK_MIN, 0.0)
        streams = tf.range(self.config.ngram)[:, None, None]
        seen = tf.logical_or(k[None, None, :] <= q[None, :, None] - streams, k[None, None, :] == 0)
        own_key = tf.where(own[:, None] == own[None, :], 0.0, MASK_MIN)
        predict = tf.concat([tf.where(seen, 0.0, MASK_MIN), tf.broadcast_to(own_key, tf.stack([self.config.ngram, n, n]))], -1)
        main_bias, predict_bias = causal[None, None], predict[None, :, None]
        if attention_mask is not None:
            pad = (1.0 - tf.cast(attention_mask[:, :keys], tf.float32)) * MASK_MIN
            main_bias = main_bias + pad[:, None, None, :]
            predict_bias = predict_bias + tf.concat([pad, tf.zeros_like(pad[:, :n])], -1)[:, None, None, None, :]
        return main_bias, predict_bias, main_index, predict_index

    def call(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
             inputs_embeds=None, past_key_values=None, cache_index=None, use_cache=False, output_attentions=False,
             output_hidden_states=False, training=False):
        """``attention_mask`` covers the cached and new positions (a static cache's whole buffer)."""
        c = self.config
        input_ids = as_int(input_ids)
        x = self.word_embeddings(input_ids) if inputs_embeds is None else tf.convert_to_tensor(inputs_embeds, tf.float32)
        b, n = tf.shape(x)[0], tf.shape(x)[1]
        if past_key_values is None:
            past, keys, static = 0, n, x.shape[1]
        elif cache_index is not None:
            past, keys = tf.cast(cache_index, tf.int32), tf.shape(past_key_values[0][0])[2]
            static = past_key_values[0][0].shape[2]  # the buffer: every slot may be written
        else:
            past = tf.shape(past_key_values[0][0])[2]
            keys = past + n
            known = (past_key_values[0][0].shape[2], x.shape[1])
            static = None if None in known else sum(known)
        if static is not None:
            check_length(c, static)
        positions = c.pad_token_id + 1 + past + tf.range(n)
        predict_pos = self.position_embeddings(positions + 1)
        streams = [tf.broadcast_to((self.ngram_embeddings[(s - 1) % c.ngram] + predict_pos)[None], tf.shape(x))
                   for s in range(c.ngram)]
        h = tf.concat([x + self.position_embeddings(positions)[None]] + streams, axis=1)
        h = dropout(self.embeddings_layer_norm(h), c.dropout, training)
        geometry = self.geometry(n, past, keys, attention_mask)
        h, extra = run_layers(self.layers, h, geometry, enc=encoder_hidden_states, enc_bias=padding_bias(encoder_attention_mask),
                              past=past_key_values, cache_index=cache_index, output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states, training=training)
        predict_logits = project(tf.reshape(h[:, n:], tf.stack([b, c.ngram, n, c.hidden_size])), self.lm_head, self.tied)
        hidden, probs = extra["hidden_states"], extra["attentions"]
        return ProphetNetDecoderLMOutput(
            logits=predict_logits[:, 0], logits_ngram=predict_logits[:, 1:] if c.ngram > 1 else None,
            past_key_values=extra["past_key_values"] if use_cache else None,
            hidden_states=None if hidden is None else tuple(t[:, :n] for t in hidden),
            hidden_states_ngram=None if hidden is None else tuple(t[:, n:] for t in hidden),
            attentions=None if probs is None else tuple(p[0] for p in probs),
            ngram_attentions=None if probs is None else tuple(p[1] for p in probs),
            cross_attentions=extra["cross_attentions"])
