"""BART decoder with cross-attention (``BartForCausalLM``)."""
from __future__ import annotations

from encdec.specs import DECODER_BASE_PREFIX, DECODER_SPECS, MAX_LENGTHS, ModelSpec

#: BART's learned positions are offset by 2 (fairseq heritage).
BART_POSITION_OFFSET = 2


def _attention(spec: ModelSpec, prefix: str, d: int, kv_dim: int) -> None:
    spec.linear(f"{prefix}.k_proj", kv_dim, d)
    spec.linear(f"{prefix}.v_proj", kv_dim, d)
    spec.linear(f"{prefix}.q_proj", d, d)
    spec.linear(f"{prefix}.out_proj", d, d)


def bart_causal_lm_spec(config) -> ModelSpec:
    if config.d_model % config.decoder_attention_heads:
        raise ValueError(
            f"bart: d_model ({config.d_model}) must be a multiple of "
            f"decoder_attention_heads ({config.decoder_attention_heads})"
        )
    spec = ModelSpec()
    d = config.d_model
    kv_dim = config.cross_attention_hidden_size or d
    base = "model.decoder"
    spec.embedding(f"{base}.embed_tokens", config.vocab_size, d)
    spec.embedding(f"{base}.embed_positions", config.max_position_embeddings + BART_POSITION_OFFSET, d)
    for i in range(config.decoder_layers):
        layer = f"{base}.layers.{i}"
        _attention(spec, f"{layer}.self_attn", d, d)
        spec.norm(f"{layer}.self_attn_layer_norm", d)
        if config.add_cross_attention:
            _attention(spec, f"{layer}.encoder_attn", d, kv_dim)
            spec.norm(f"{layer}.encoder_attn_layer_norm", d)
        spec.linear(f"{layer}.fc1", d, config.decoder_ffn_dim)
        spec.linear(f"{layer}.fc2", config.decoder_ffn_dim, d)
        spec.norm(f"{layer}.final_layer_norm", d)
    spec.norm(f"{base}.layernorm_embedding", d)
    spec.linear("lm_head", d, config.vocab_size, bias=False)
    if config.tie_word_embeddings:
        spec.tie("lm_head.weight", f"{base}.embed_tokens.weight")
    return spec


DECODER_SPECS["bart"] = bart_causal_lm_spec
DECODER_BASE_PREFIX["bart"] = "model.decoder"
MAX_LENGTHS["bart"] = lambda c: c.max_position_embeddings  # the table has OFFSET extra rows
