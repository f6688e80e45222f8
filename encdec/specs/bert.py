"""BERT, RoBERTa, ELECTRA and BertGeneration: encoder base models and LM-head decoders.

BertGeneration is BERT without token-type embeddings and pooler, whose decoder head is a
single output projection ``lm_head.decoder`` (+ ``lm_head.bias``).
"""
from __future__ import annotations

from encdec.specs import BIAS, DECODER_BASE_PREFIX, DECODER_SPECS, ENCODER_SPECS, MAX_LENGTHS, ModelSpec, check_cross_width


def has_token_types(config) -> bool:
    """Whether the embeddings hold a token-type table (BertGeneration's do not)."""
    return config.model_type != "bert-generation"


POSITION_EMBEDDING_TYPES = ("absolute", "relative_key", "relative_key_query")


def relative_positions(config) -> bool:
    """Whether self-attention adds learned relative-position scores (``distance_embedding``)."""
    return getattr(config, "position_embedding_type", "absolute") != "absolute"


def adds_absolute_positions(config) -> bool:
    """Whether the embeddings add the absolute position table: always for BertGeneration (as
    transformers), otherwise only for ``position_embedding_type="absolute"`` (the table is
    kept, unused, for the relative types)."""
    return config.model_type == "bert-generation" or not relative_positions(config)


def check_bert_like(config) -> None:
    """Refuse options our model code does not implement."""
    kind = getattr(config, "position_embedding_type", "absolute")
    if kind not in POSITION_EMBEDDING_TYPES:
        raise NotImplementedError(
            f"{config.model_type}: position_embedding_type={kind!r} is not implemented; "
            f"supported: {', '.join(POSITION_EMBEDDING_TYPES)}"
        )
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"{config.model_type}: hidden_size ({config.hidden_size}) must be a multiple of "
            f"num_attention_heads ({config.num_attention_heads})"
        )


def _embeddings(spec: ModelSpec, config, prefix: str, dim: int) -> None:
    spec.embedding(f"{prefix}.word_embeddings", config.vocab_size, dim)
    spec.embedding(f"{prefix}.position_embeddings", config.max_position_embeddings, dim)
    if has_token_types(config):
        spec.embedding(f"{prefix}.token_type_embeddings", config.type_vocab_size, dim)
    spec.norm(f"{prefix}.LayerNorm", dim)


def _attention(spec: ModelSpec, prefix: str, hidden: int, kv_dim: int) -> None:
    spec.linear(f"{prefix}.self.query", hidden, hidden)
    spec.linear(f"{prefix}.self.key", kv_dim, hidden)
    spec.linear(f"{prefix}.self.value", kv_dim, hidden)
    spec.linear(f"{prefix}.output.dense", hidden, hidden)
    spec.norm(f"{prefix}.output.LayerNorm", hidden)


def _layers(spec: ModelSpec, config, prefix: str) -> None:
    h, inter = config.hidden_size, config.intermediate_size
    cross = config.is_decoder and config.add_cross_attention
    kv_dim = config.cross_attention_hidden_size or h
    for i in range(config.num_hidden_layers):
        layer = f"{prefix}.layer.{i}"
        _attention(spec, f"{layer}.attention", h, h)
        if relative_positions(config):  # self-attention only; cross-attention stays absolute
            spec.embedding(f"{layer}.attention.self.distance_embedding", 2 * config.max_position_embeddings - 1,
                           h // config.num_attention_heads)
        if cross:
            _attention(spec, f"{layer}.crossattention", h, kv_dim)
        spec.linear(f"{layer}.intermediate.dense", h, inter)
        spec.linear(f"{layer}.output.dense", inter, h)
        spec.norm(f"{layer}.output.LayerNorm", h)


def bert_model_spec(config, add_pooling_layer: bool = True) -> ModelSpec:
    """``BertModel`` / ``RobertaModel`` (the encoder role keeps HF's pooler)."""
    check_bert_like(config)
    spec = ModelSpec()
    _embeddings(spec, config, "embeddings", config.hidden_size)
    _layers(spec, config, "encoder")
    if add_pooling_layer:
        spec.linear("pooler.dense", config.hidden_size, config.hidden_size)
    return spec


def electra_model_spec(config) -> ModelSpec:
    """``ElectraModel``: embeddings of ``embedding_size``, projected when it differs."""
    check_bert_like(config)
    spec = ModelSpec()
    _embeddings(spec, config, "embeddings", config.embedding_size)
    if config.embedding_size != config.hidden_size:
        spec.linear("embeddings_project", config.embedding_size, config.hidden_size)
    _layers(spec, config, "encoder")
    return spec


def _lm_head(spec: ModelSpec, config, head: str, base: str, transform: str | None, norm: str = "") -> None:
    """LM head: ``transform`` (dense, activation, norm; ``None`` for none) then the
    output projection ``decoder`` whose bias is the head's ``bias``."""
    h = config.hidden_size
    if transform is not None:
        spec.linear(f"{head}.{transform}dense", h, h)
        spec.norm(f"{head}.{transform}{norm}", h)
    spec.linear(f"{head}.decoder", h, config.vocab_size)
    spec.add(f"{head}.bias", (config.vocab_size,), BIAS)
    spec.tie(f"{head}.decoder.bias", f"{head}.bias")
    if config.tie_word_embeddings:
        spec.tie(f"{head}.decoder.weight", f"{base}.embeddings.word_embeddings.weight")


def bert_lm_head_spec(config) -> ModelSpec:
    """``BertLMHeadModel``: ``bert.*`` without pooler plus ``cls.predictions.*``."""
    spec = ModelSpec()
    spec.extend(bert_model_spec(config, add_pooling_layer=False), "bert")
    _lm_head(spec, config, "cls.predictions", "bert", "transform.", "LayerNorm")
    return spec


def roberta_causal_lm_spec(config) -> ModelSpec:
    """``RobertaForCausalLM``: ``roberta.*`` without pooler plus ``lm_head.*``."""
    spec = ModelSpec()
    spec.extend(bert_model_spec(config, add_pooling_layer=False), "roberta")
    _lm_head(spec, config, "lm_head", "roberta", "", "layer_norm")
    return spec


def bert_generation_encoder_spec(config) -> ModelSpec:
    """``BertGenerationEncoder``: word + position embeddings, BERT layers, no pooler."""
    check_cross_width(config)
    if config.add_cross_attention and not config.is_decoder:
        raise ValueError("bert-generation: add_cross_attention=True needs is_decoder=True")
    return bert_model_spec(config, add_pooling_layer=False)


def bert_generation_decoder_spec(config) -> ModelSpec:
    """``BertGenerationDecoder``: ``bert.*`` plus ``lm_head.decoder`` (+ ``lm_head.bias``)."""
    spec = ModelSpec()
    spec.extend(bert_generation_encoder_spec(config), "bert")
    _lm_head(spec, config, "lm_head", "bert", None)
    return spec


ENCODER_SPECS.update(bert=bert_model_spec, roberta=bert_model_spec, electra=electra_model_spec)
DECODER_SPECS.update(bert=bert_lm_head_spec, roberta=roberta_causal_lm_spec)
DECODER_BASE_PREFIX.update(bert="bert", roberta="roberta")


def roberta_max_length(config) -> int:
    """RoBERTa positions start after the padding index: ``pad + 1 + i`` must fit the table."""
    return config.max_position_embeddings - (config.pad_token_id or 0) - 1


MAX_LENGTHS.update(bert=lambda c: c.max_position_embeddings, electra=lambda c: c.max_position_embeddings,
                   roberta=roberta_max_length)
MAX_LENGTHS["bert-generation"] = lambda c: c.max_position_embeddings
ENCODER_SPECS["bert-generation"] = bert_generation_encoder_spec
DECODER_SPECS["bert-generation"] = bert_generation_decoder_spec
DECODER_BASE_PREFIX["bert-generation"] = "bert"
