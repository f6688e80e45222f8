"""RemBERT: ``RemBertModel`` (encoder) and ``RemBertForCausalLM`` (decoder).

BERT layers, but the embeddings have their own width (``input_embedding_size``), mapped to
``hidden_size`` by ``encoder.embedding_hidden_mapping_in``, and the LM head projects to
``output_embedding_size`` before its own, never tied, output embedding
``cls.predictions.decoder``.
"""
from __future__ import annotations

from encdec.specs import DECODER_BASE_PREFIX, DECODER_SPECS, ENCODER_SPECS, MAX_LENGTHS, ModelSpec, check_cross_width
from encdec.specs.bert import _embeddings, _layers


def check_rembert(config) -> None:
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"rembert: hidden_size ({config.hidden_size}) must be a multiple of num_attention_heads ({config.num_attention_heads})"
        )
    check_cross_width(config)
    if config.add_cross_attention and not config.is_decoder:
        raise ValueError("rembert: add_cross_attention=True needs is_decoder=True")


def rembert_model_spec(config, add_pooling_layer: bool = True) -> ModelSpec:
    """``RemBertModel`` (the encoder role keeps the pooler)."""
    check_rembert(config)
    spec = ModelSpec()
    _embeddings(spec, config, "embeddings", config.input_embedding_size)
    spec.linear("encoder.embedding_hidden_mapping_in", config.input_embedding_size, config.hidden_size)
    _layers(spec, config, "encoder")
    if add_pooling_layer:
        spec.linear("pooler.dense", config.hidden_size, config.hidden_size)
    return spec


def rembert_causal_lm_spec(config) -> ModelSpec:
    """``RemBertForCausalLM``: ``rembert.*`` without pooler plus ``cls.predictions.*``."""
    spec = ModelSpec()
    spec.extend(rembert_model_spec(config, add_pooling_layer=False), "rembert")
    head, out = "cls.predictions", config.output_embedding_size
    spec.linear(f"{head}.dense", config.hidden_size, out)
    spec.linear(f"{head}.decoder", out, config.vocab_size)
    spec.norm(f"{head}.LayerNorm", out)
    return spec


ENCODER_SPECS["rembert"] = rembert_model_spec
DECODER_SPECS["rembert"] = rembert_causal_lm_spec
DECODER_BASE_PREFIX["rembert"] = "rembert"
MAX_LENGTHS["rembert"] = lambda c: c.max_position_embeddings
