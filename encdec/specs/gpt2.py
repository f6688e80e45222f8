"""GPT-2 causal LM with optional cross-attention (``GPT2LMHeadModel``)."""
from __future__ import annotations

from encdec.specs import DECODER_BASE_PREFIX, DECODER_SPECS, MAX_LENGTHS, ModelSpec


def attention_scale(config, layer_idx: int) -> float:
    """Factor on a layer's attention scores (self and cross), as transformers' eager GPT-2:
    ``1/sqrt(head_dim)`` unless ``scale_attn_weights=False``, further divided by
    ``layer_idx + 1`` with ``scale_attn_by_inverse_layer_idx``.  ``reorder_and_upcast_attn``
    only changes the order / precision of the same product (scores are float32 anyway)."""
    scale = 1.0
    if getattr(config, "scale_attn_weights", True):
        scale /= float(config.n_embd // config.n_head) ** 0.5
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        scale /= float(layer_idx + 1)
    return scale


def check_gpt2(config) -> None:
    """Refuse GPT-2 options our model code does not implement."""
    if config.n_embd % config.n_head:
        raise ValueError(f"gpt2: n_embd ({config.n_embd}) must be a multiple of n_head ({config.n_head})")


def gpt2_lm_head_spec(config) -> ModelSpec:
    check_gpt2(config)
    spec = ModelSpec()
    d = config.n_embd
    inner = config.n_inner or 4 * d
    kv_dim = config.cross_attention_hidden_size or d
    spec.embedding("transformer.wte", config.vocab_size, d)
    spec.embedding("transformer.wpe", config.n_positions, d)
    for i in range(config.n_layer):
        block = f"transformer.h.{i}"
        spec.norm(f"{block}.ln_1", d)
        spec.conv1d(f"{block}.attn.c_attn", d, 3 * d)
        spec.conv1d(f"{block}.attn.c_proj", d, d)
        spec.norm(f"{block}.ln_2", d)
        if config.add_cross_attention:
            spec.conv1d(f"{block}.crossattention.c_attn", kv_dim, 2 * d)
            spec.conv1d(f"{block}.crossattention.q_attn", d, d)
            spec.conv1d(f"{block}.crossattention.c_proj", d, d)
            spec.norm(f"{block}.ln_cross_attn", d)
        spec.conv1d(f"{block}.mlp.c_fc", d, inner)
        spec.conv1d(f"{block}.mlp.c_proj", inner, d)
    spec.norm("transformer.ln_f", d)
    spec.linear("lm_head", d, config.vocab_size, bias=False)
    if config.tie_word_embeddings:
        spec.tie("lm_head.weight", "transformer.wte.weight")
    return spec


DECODER_SPECS["gpt2"] = gpt2_lm_head_spec
DECODER_BASE_PREFIX["gpt2"] = "transformer"
MAX_LENGTHS["gpt2"] = lambda c: c.n_positions
