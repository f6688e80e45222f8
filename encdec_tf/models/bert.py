"""BERT and RoBERTa: encoder base models and causal-LM decoders with cross-attention.

Same math as transformers' PyTorch ``BertModel`` / ``BertLMHeadModel`` / ``RobertaModel``
/ ``RobertaForCausalLM``: post-LayerNorm blocks, absolute positions (RoBERTa's count
non-pad tokens from ``pad_token_id + 1``), token type embeddings, an LM head with a
transform and (optionally) tied output embeddings.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import keras
import tensorflow as tf

from encdec.outputs import BaseModelOutputWithPooling, CausalLMOutputWithCrossAttentions
from encdec.registry import family
from encdec.specs import base_prefix, decoder_spec, encoder_spec
from encdec.specs.bert import adds_absolute_positions, check_bert_like, has_token_types, relative_positions
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


class BertEmbeddings:
    """Word + position + token-type embeddings, LayerNorm, dropout."""

    def __init__(self, store: ParamStore, prefix: str, config: Any) -> None:
        self.word = Embedding(store, f"{prefix}.word_embeddings")
        self.position = Embedding(store, f"{prefix}.position_embeddings")
        # BertGeneration has no token-type table
        self.token_type = Embedding(store, f"{prefix}.token_type_embeddings") if has_token_types(config) else None
        self.norm = LayerNorm(store, f"{prefix}.LayerNorm", config.layer_norm_eps)
        self.rate = config.hidden_dropout_prob
        self.roberta = family(config.model_type) == "roberta"
        self.absolute = adds_absolute_positions(config)
        self.pad = config.pad_token_id

    def positions(self, input_ids: tf.Tensor | None, batch: tf.Tensor, length: tf.Tensor, past: tf.Tensor) -> tf.Tensor:
        if not self.roberta:
            return tf.broadcast_to(past + tf.range(length)[None], tf.stack([batch, length]))
        if input_ids is None:  # RoBERTa with inputs_embeds: sequential after the padding index
            return tf.broadcast_to(self.pad + 1 + tf.range(length)[None], tf.stack([batch, length]))
        keep = tf.cast(input_ids != self.pad, tf.int32)
        return (tf.cumsum(keep, axis=1) + past) * keep + self.pad

    def check_length(self, length: int | None, past: Any) -> None:
        """Refuse sequences past the position table while the length is static (XLA would
        clamp the lookup silently; eager TF raises a less clear error)."""
        if length is None or not isinstance(past, int):
            return
        rows = int(self.position.embeddings.shape[0])
        last = past + length - 1 + (self.pad + 1 if self.roberta else 0)
        if last >= rows:
            raise ValueError(f"a sequence of {past + length} tokens needs position {last}, but the "
                             f"position table has {rows} rows (max_position_embeddings)")

    def __call__(self, input_ids, token_type_ids, position_ids, inputs_embeds, past, training) -> tf.Tensor:
        x = self.word(input_ids) if inputs_embeds is None else tf.cast(inputs_embeds, self.word.embeddings.dtype)
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        if position_ids is None:
            self.check_length(x.shape[1], past)
            position_ids = self.positions(input_ids, batch, length, past)
        if self.token_type is None:
            if token_type_ids is not None:
                raise ValueError("token_type_ids given, but this model has no token-type embeddings (bert-generation)")
        else:
            if token_type_ids is None:
                token_type_ids = tf.zeros(tf.stack([batch, length]), tf.int32)
            x = x + self.token_type(token_type_ids)
        if self.absolute:
            x = x + self.position(position_ids)
        return dropout(self.norm(x), self.rate, training)


class BertAttention:
    """Multi-head (self or cross) attention, output projection, residual, LayerNorm."""

    def __init__(self, store: ParamStore, prefix: str, config: Any, cross: bool = False) -> None:
        self.query = Dense(store, f"{prefix}.self.query")
        self.key = Dense(store, f"{prefix}.self.key")
        self.value = Dense(store, f"{prefix}.self.value")
        self.out = Dense(store, f"{prefix}.output.dense")
        norm = LayerNorm(store, f"{prefix}.output.LayerNorm", config.layer_norm_eps)
        self.add_norm = Residual(store, f"{prefix}.output", norm)  # bottleneck adapter host
        self.heads = config.num_attention_heads
        self.cross = cross
        self.attn_rate = config.attention_probs_dropout_prob
        self.rate = config.hidden_dropout_prob
        self.relative = relative_positions(config) and not cross  # transformers' cross-attention stays absolute
        if self.relative:
            self.distance = Embedding(store, f"{prefix}.self.distance_embedding")
            self.key_query = config.position_embedding_type == "relative_key_query"
            self.max_positions = config.max_position_embeddings
            self.decoder = bool(config.is_decoder)

    def relative_scores(self, q, k, past, cache_index) -> tf.Tensor:
        """Learned relative-position scores [b, h, q, k] over sqrt(head_dim) (transformers adds
        them before scaling).  Encoder query ``i`` sits at ``i``; every decoder query at the
        last written position (transformers 4.57 with its cache on)."""
        n_q, n_k = tf.shape(q)[2], tf.shape(k)[2]
        if self.decoder:
            start = tf.cast(cache_index, tf.int32) if cache_index is not None and past is not None else n_k - n_q
            left = tf.fill(tf.stack([n_q, 1]), start + n_q - 1)
        else:
            left = tf.range(n_q)[:, None]
        table = self.distance(left - tf.range(n_k)[None, :] + self.max_positions - 1)
        scores = tf.einsum("bhld,lrd->bhlr", q, table)
        if self.key_query:
            scores = scores + tf.einsum("bhrd,lrd->bhlr", k, table)
        return scores / math.sqrt(q.shape[-1])

    def kv(self, states: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Cross-attention keys and values of the encoder states (computed once per input)."""
        return attention_kv(self.key, self.value, None, states, None, None, self.heads, True)

    def __call__(self, h, bias, states=None, past=None, cache_index=None, training=False):
        q = split_heads(self.query(h, training), self.heads)
        k, v = attention_kv(self.key, self.value, h, states, past, cache_index, self.heads, self.cross, training)
        if self.relative:
            scores = self.relative_scores(q, k, past, cache_index)
            bias = scores if bias is None else bias + scores
        ctx, probs = attend(q, k, v, bias, self.attn_rate, training)
        out = dropout(self.out(merge_heads(ctx)), self.rate, training)
        return self.add_norm(out, h, training), (k, v), probs


class BertLayer:
    def __init__(self, store: ParamStore, prefix: str, config: Any, cross: bool) -> None:
        self.attention = BertAttention(store, f"{prefix}.attention", config)
        self.crossattention = BertAttention(store, f"{prefix}.crossattention", config, cross=True) if cross else None
        self.intermediate = Dense(store, f"{prefix}.intermediate.dense")
        self.output = Dense(store, f"{prefix}.output.dense")
        norm = LayerNorm(store, f"{prefix}.output.LayerNorm", config.layer_norm_eps)
        self.add_norm = Residual(store, f"{prefix}.output", norm)  # bottleneck adapter host
        self.act = activation(config.hidden_act, f"{config.model_type}: hidden_act")
        self.rate = config.hidden_dropout_prob

    def __call__(self, h, bias, enc=None, enc_bias=None, past=None, cache_index=None, training=False):
        self_past, cross_past = split_past(past)
        h, self_kv, self_probs = self.attention(h, bias, past=self_past, cache_index=cache_index, training=training)
        present, cross_probs = self_kv, None
        if self.crossattention is not None and (enc is not None or cross_past is not None):
            h, cross_kv, cross_probs = self.crossattention(h, enc_bias, states=enc, past=cross_past, training=training)
            present = self_kv + cross_kv
        ff = dropout(self.output(self.act(self.intermediate(h, training)), training), self.rate, training)
        return self.add_norm(ff, h, training), present, self_probs, cross_probs


class BertStack:
    """The layer stack shared by BERT, RoBERTa and ELECTRA (``encoder.layer.N``)."""

    def __init__(self, store: ParamStore, prefix: str, config: Any) -> None:
        cross = bool(config.is_decoder and config.add_cross_attention)
        self.layers = [BertLayer(store, f"{prefix}.layer.{i}", config, cross) for i in range(config.num_hidden_layers)]

    def __call__(self, h, bias, **kwargs):
        return run_layers(self.layers, h, bias, **kwargs)


def check_bert_options(config: Any) -> None:
    """Refuse config options this implementation does not compute."""
    check_bert_like(config)
    activation(config.hidden_act, f"{config.model_type}: hidden_act")


class TFBertModel(TFPartMixin, keras.layers.Layer):
    """``BertModel`` / ``RobertaModel`` (with pooler), used as the encoder."""

    embeddings_class = BertEmbeddings

    def __init__(self, config: Any, tied: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_bert_options(config)
        self.config = config
        self.store = ParamStore(self, encoder_spec(config), tied)
        self.embeddings = self.embeddings_class(self.store, "embeddings", config)
        self.stack = BertStack(self.store, "encoder", config)
        self.pooler = Dense(self.store, "pooler.dense") if self.store.has("pooler.dense.weight") else None
        self.store.check_complete()
        self.built = True

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
             output_attentions=False, output_hidden_states=False, training=False):
        input_ids, token_type_ids, position_ids = as_int(input_ids), as_int(token_type_ids), as_int(position_ids)
        h = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, 0, training)
        h, extra = self.stack(h, padding_bias(attention_mask), output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states, training=training)
        pooled = tf.tanh(self.pooler(h[:, 0])) if self.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=h, pooler_output=pooled,
                                          hidden_states=extra["hidden_states"], attentions=extra["attentions"])


class LMHead:
    """Transform (dense, activation, LayerNorm) then the output projection plus bias.

    A tied output weight is the word-embedding table [vocab, hidden], used transposed.
    """

    def __init__(self, store: ParamStore, head: str, transform: str | None, norm: str = "", act: str = "",
                 eps: float = 0.0) -> None:
        self.transform = transform is not None  # BertGeneration's head has no transform
        if self.transform:
            self.dense = Dense(store, f"{head}.{transform}dense")
            self.norm = LayerNorm(store, f"{head}.{transform}{norm}", eps)
            self.act = activation(act)
        self.tied = store.is_tied(f"{head}.decoder.weight")
        self.weight = store.get(f"{head}.decoder.weight")
        self.bias = store.get(f"{head}.bias")

    def __call__(self, h: tf.Tensor) -> tf.Tensor:
        if self.transform:
            h = self.norm(self.act(self.dense(h)))
        return project(h, self.weight, self.tied, self.bias)


class TFBertLMHeadModel(TFPartMixin, keras.layers.Layer):
    """``BertLMHeadModel`` / ``RobertaForCausalLM``: the decoder role."""
    is_causal_lm = True
    embeddings_class = BertEmbeddings

    def __init__(self, config: Any, tied: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_bert_options(config)
        self.config = config
        #: built with cross-attention layers (fixed at construction, whatever the config says later)
        self.accepts_encoder_states = bool(config.is_decoder and config.add_cross_attention)
        #: (layers, heads, head_dim) of the self-attention cache
        self.cache_layout = (config.num_hidden_layers, config.num_attention_heads, config.hidden_size // config.num_attention_heads)
        self.store = ParamStore(self, decoder_spec(config), tied)
        base = base_prefix(config.model_type)  # HF's base_model_prefix: "bert", "roberta"
        self.embeddings = self.embeddings_class(self.store, f"{base}.embeddings", config)
        self.stack = BertStack(self.store, f"{base}.encoder", config)
        self.head = self.build_head(config)
        self.store.check_complete()
        self.built = True

    def build_head(self, config: Any) -> Any:
        """The LM head on the final hidden states (RoBERTa's ``lm_head`` or BERT's ``cls.predictions``)."""
        if family(config.model_type) == "roberta":
            return LMHead(self.store, "lm_head", "", "layer_norm", "gelu", config.layer_norm_eps)
        if config.model_type == "bert-generation":
            return LMHead(self.store, "lm_head", None)
        return LMHead(self.store, "cls.predictions", "transform.", "LayerNorm", config.hidden_act, config.layer_norm_eps)

    def cross_cache(self, encoder_hidden_states: tf.Tensor) -> tuple[tuple[tf.Tensor, tf.Tensor], ...]:
        """Per layer, the cross-attention (keys, values): the last two entries of a layer's cache."""
        return tuple(layer.crossattention.kv(encoder_hidden_states) for layer in self.stack.layers)

    def call(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
             inputs_embeds=None, past_key_values=None, cache_index=None, use_cache=False, output_attentions=False,
             output_hidden_states=False, training=False, token_type_ids=None, position_ids=None):
        input_ids, token_type_ids, position_ids = as_int(input_ids), as_int(token_type_ids), as_int(position_ids)
        shape = tf.shape(input_ids) if inputs_embeds is None else tf.shape(inputs_embeds)
        past_len, bias = decoder_self_bias(attention_mask, shape[0], shape[1], past_key_values, cache_index)
        h = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, past_len, training)
        h, extra = self.stack(h, bias, enc=encoder_hidden_states, enc_bias=padding_bias(encoder_attention_mask),
                              past=past_key_values, cache_index=cache_index, output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states, training=training)
        return CausalLMOutputWithCrossAttentions(
            logits=self.head(h), past_key_values=extra["past_key_values"] if use_cache else None,
            hidden_states=extra["hidden_states"], attentions=extra["attentions"], cross_attentions=extra["cross_attentions"])

