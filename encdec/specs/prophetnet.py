"""ProphetNet decoder (``ProphetNetForCausalLM``) and the facts its backends share.

The decoder runs a main stream and ``ngram`` predict streams through post-LayerNorm
layers.  Self-attention adds a learned bias per relative-position bucket: a linear map
``relative_pos_embeddings`` of each query's hidden state gives ``num_buckets`` values per
head, and key ``k`` seen from query ``q`` picks bucket ``T[max(q - k, 0)]`` (main stream)
or ``T[max(q - k + 1, 0)]`` (predict streams over main-stream keys), where ``T`` is
:func:`relative_bucket_table`.  Positions count from ``pad_token_id + 1`` (main stream)
and ``pad_token_id + 2`` (predict streams).
"""
from __future__ import annotations

import math

import numpy as np

from encdec.specs import DECODER_BASE_PREFIX, DECODER_SPECS, MAX_LENGTHS, ModelSpec, check_cross_width

#: Where the decoder lives in ``ProphetNetForCausalLM`` (and ``ProphetNetForConditionalGeneration``).
BASE = "prophetnet.decoder"
#: ProphetNet's LayerNorms use torch's default epsilon.
LAYER_NORM_EPS = 1e-5


def relative_buckets(num_buckets: int, max_distance: int, inverse_distance: np.ndarray) -> np.ndarray:
    """transformers' unidirectional bucket of each ``inverse_distance`` (query minus key
    position, clipped at 0): exact below ``num_buckets // 2``, logarithmic up to
    ``max_distance``, then the last bucket.  Same float32 steps as transformers."""
    inv = np.maximum(np.asarray(inverse_distance, np.int64), 0)
    max_exact = num_buckets // 2
    if max_exact < 1 or max_distance <= max_exact:
        return np.where(inv < max_exact, inv, -1).astype(np.int32)  # undefined buckets: the caller refuses
    far = np.maximum(inv, max_exact).astype(np.float32)  # the log branch only serves inv >= max_exact
    scale = np.float32(math.log(max_distance / max_exact))
    large = np.float32(max_exact) + np.log(far / np.float32(max_exact)) / scale * np.float32(num_buckets - max_exact)
    large = np.minimum(large, np.float32(num_buckets - 1)).astype(np.int32)
    return np.where(inv < max_exact, inv, large).astype(np.int32)


def relative_bucket_table(config) -> np.ndarray:
    """``T[d]``: the bucket of inverse distance ``d`` for every ``d`` a decoder of
    ``max_position_embeddings`` positions can meet (larger distances use the last entry)."""
    table = relative_buckets(config.num_buckets, config.relative_max_distance, np.arange(config.max_position_embeddings + 2))
    if table.min() < 0 or table.max() >= config.num_buckets:
        raise ValueError(
            f"prophetnet: num_buckets={config.num_buckets} with relative_max_distance={config.relative_max_distance} "
            "gives undefined position buckets; use num_buckets >= 2 and relative_max_distance > num_buckets // 2"
        )
    return table


def max_decoder_length(config) -> int:
    """Longest decoder sequence (cached steps included): predict-stream positions reach
    ``pad_token_id + 1 + length``, which must stay inside the position table."""
    return config.max_position_embeddings - 2 - config.pad_token_id


def check_length(config, length: int) -> None:
    """Refuse a decoder sequence longer than the position table allows (transformers fails
    with an index error there; lookups in XLA would clamp silently)."""
    limit = max_decoder_length(config)
    if length > limit:
        raise ValueError(
            f"prophetnet: a decoder sequence of {length} tokens needs positions up to "
            f"{config.pad_token_id + 1 + length}, but max_position_embeddings={config.max_position_embeddings} "
            f"(with pad_token_id={config.pad_token_id}) allows at most {limit} tokens"
        )


def check_prophetnet(config) -> None:
    """Refuse what transformers' ``ProphetNetForCausalLM`` cannot run, with the attribute named."""
    if config.hidden_size % config.num_decoder_attention_heads:
        raise ValueError(
            f"prophetnet: hidden_size ({config.hidden_size}) must be a multiple of "
            f"num_decoder_attention_heads ({config.num_decoder_attention_heads})"
        )
    if config.ngram < 1:
        raise ValueError(f"prophetnet: ngram must be >= 1 (the logits come from the first predict stream), got {config.ngram}")
    pad = config.pad_token_id
    if not isinstance(pad, int) or isinstance(pad, bool) or not 0 <= pad < min(config.vocab_size, config.max_position_embeddings):
        raise ValueError(
            f"prophetnet: pad_token_id must be an int in [0, min(vocab_size, max_position_embeddings)) -- it is the "
            f"padding row of the word and position tables and the position offset; got {pad!r}"
        )
    if max_decoder_length(config) < 1:
        raise ValueError(
            f"prophetnet: max_position_embeddings={config.max_position_embeddings} leaves no decoder position "
            f"after the offset pad_token_id + 2 = {pad + 2}"
        )
    check_cross_width(config)
    relative_bucket_table(config)


def prophetnet_causal_lm_spec(config) -> ModelSpec:
    """``ProphetNetForCausalLM``: ``prophetnet.word_embeddings`` (shared with the decoder's),
    ``prophetnet.decoder.*`` and ``lm_head`` (tied to the word embeddings unless
    ``tie_word_embeddings=False``)."""
    check_prophetnet(config)
    spec = ModelSpec()
    d = config.hidden_size
    spec.embedding("prophetnet.word_embeddings", config.vocab_size, d)
    spec.embedding(f"{BASE}.word_embeddings", config.vocab_size, d)
    spec.tie(f"{BASE}.word_embeddings.weight", "prophetnet.word_embeddings.weight")
    spec.embedding(f"{BASE}.position_embeddings", config.max_position_embeddings, d)
    spec.embedding(f"{BASE}.ngram_embeddings", config.ngram, d)
    for i in range(config.num_decoder_layers):
        layer = f"{BASE}.layers.{i}"
        blocks = ["self_attn", "cross_attn"] if config.add_cross_attention else ["self_attn"]
        for block in blocks:
            for proj in ("key_proj", "value_proj", "query_proj", "out_proj"):
                spec.linear(f"{layer}.{block}.{proj}", d, d)
            if block == "self_attn":
                spec.linear(f"{layer}.self_attn.relative_pos_embeddings", d, config.num_buckets * config.num_decoder_attention_heads)
            spec.norm(f"{layer}.{block}_layer_norm", d)
        spec.linear(f"{layer}.feed_forward.intermediate", d, config.decoder_ffn_dim)
        spec.linear(f"{layer}.feed_forward.output", config.decoder_ffn_dim, d)
        spec.norm(f"{layer}.feed_forward_layer_norm", d)
    spec.norm(f"{BASE}.embeddings_layer_norm", d)
    spec.linear("lm_head", d, config.vocab_size, bias=False)
    if config.tie_word_embeddings:
        spec.tie("lm_head.weight", "prophetnet.word_embeddings.weight")
    return spec


DECODER_SPECS["prophetnet"] = prophetnet_causal_lm_spec
DECODER_BASE_PREFIX["prophetnet"] = "prophetnet"
MAX_LENGTHS["prophetnet"] = max_decoder_length
