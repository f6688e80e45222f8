"""The shared case of the reduced-precision tests (bf16 / fp16 weights and activations
against the same model in fp32), used by every backend's test_reduced_precision.py.

A tiny bert2gpt2 with weights drawn at std 0.2 (not 0.02) so that logits are of order 1
and greedy argmaxes are not near-ties that half precision could flip by chance.
"""
from __future__ import annotations

import numpy as np
import pytest

from encdec.configuration import BertConfig, EncoderDecoderConfig, GPT2Config
from encdec.init import init_weights
from encdec.pretrained import save_pretrained
from encdec.specs import encoder_decoder_spec

#: max |Δlogits| / max |logits| allowed: bf16 keeps 8 mantissa bits (rounding ~2e-3
#: relative per op) and fp16 11; the errors of a few rounded matmuls and residual sums add up.
REL_TOL = {"bfloat16": 3e-2, "float16": 5e-3}
NEW_TOKENS = 6


def config() -> EncoderDecoderConfig:
    enc = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    dec = GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0)
    return EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, decoder_start_token_id=2, pad_token_id=0,
                                                             eos_token_id=3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A folder holding the case's model in fp32 (import this fixture into a test module)."""
    path = tmp_path_factory.mktemp("reduced_precision")
    cfg = config()
    save_pretrained(path, cfg, init_weights(encoder_decoder_spec(cfg), seed=0, std=0.2, randomize_all=True))
    return path


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    ids = rng.integers(4, 99, (3, 10))
    mask = np.ones_like(ids)
    mask[1, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": rng.integers(4, 99, (3, 7))}


def generate_kwargs() -> dict:
    return {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}


def check_close(dtype: str, ref_logits, logits, ref_loss, loss) -> float:
    """Assert the half-precision logits and loss are within the stated tolerance of fp32;
    returns the relative max |Δlogits|."""
    ref_logits, logits = np.asarray(ref_logits, np.float32), np.asarray(logits, np.float32)
    rel = float(np.abs(logits - ref_logits).max() / np.abs(ref_logits).max())
    assert 0 < rel < REL_TOL[dtype], (dtype, rel)
    assert abs(float(loss) - float(ref_loss)) < REL_TOL[dtype] * abs(float(ref_loss)), (float(loss), float(ref_loss))
    return rel
