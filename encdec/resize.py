"""Vocabulary resizing (transformers' ``resize_token_embeddings``), once for every backend:
the new size and the rows of a resized embedding / LM-head matrix or bias, in numpy."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


#: transformers 4.57's refusal on the composite models (the parts resize; their configs are the
#: composite's ``config.encoder`` / ``config.decoder``, so the composite stays in step).
COMPOSITE_REFUSAL = (
    "Resizing the embedding layers via the EncoderDecoderModel directly is not supported. Please use the "
    "respective methods of the wrapped objects (model.encoder.resize_token_embeddings(...) or "
    "model.decoder.resize_token_embeddings(...))"
)


def new_vocab_size(current: int, new_num_tokens: Any, pad_to_multiple_of: Any) -> int:
    """transformers' rule: ``new_num_tokens`` (default: the current size) rounded up to a
    multiple of ``pad_to_multiple_of`` when given."""
    size = current if new_num_tokens is None else new_num_tokens
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"new_num_tokens must be a positive int or None, got {new_num_tokens!r}")
    if pad_to_multiple_of is not None:
        if isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, (int, np.integer)) \
                or pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive int or None, got {pad_to_multiple_of!r}")
        size = int(math.ceil(size / pad_to_multiple_of) * pad_to_multiple_of)
    return int(size)


def resize_rows(old: np.ndarray, rows: int, mean_resizing: bool, std: float, seed: int = 0) -> np.ndarray:
    """``old`` [vocab, ...] cut or grown to ``rows`` rows; kept rows are copied.  New rows:
    with ``mean_resizing`` the mean of the old rows (transformers draws them from a normal
    around that mean with covariance 1e-9 x the old one, i.e. the mean to ~1e-5 of the
    weights' scale), else N(0, ``std``) for matrices and 0 for biases (transformers' init)."""
    old = np.asarray(old)
    keep = min(rows, old.shape[0])
    out = np.empty((rows,) + old.shape[1:], old.dtype)
    out[:keep] = old[:keep]
    if rows > keep:
        if mean_resizing:
            out[keep:] = old.astype(np.float64).mean(axis=0).astype(old.dtype)
        elif old.ndim == 1:
            out[keep:] = 0
        else:
            out[keep:] = np.random.default_rng(seed).normal(0.0, std, (rows - keep,) + old.shape[1:]).astype(old.dtype)
    return out


def resize_canonical(weights: dict[str, np.ndarray], old_spec: Any, new_spec: Any, mean_resizing: bool, std: float,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical ``weights`` of ``old_spec`` moved onto ``new_spec`` (the same part with another
    ``vocab_size``): every untied parameter whose row count changed goes through
    :func:`resize_rows`, the rest is kept; tie targets follow their sources when loaded."""
    out = {}
    for i, p in enumerate(new_spec.untied):
        old = np.asarray(weights[p.name])
        if tuple(old.shape) == tuple(p.shape):
            out[p.name] = old
        elif old.shape[1:] == tuple(p.shape[1:]):
            out[p.name] = resize_rows(old, p.shape[0], mean_resizing, std, seed + i)
        else:
            raise ValueError(f"resizing the vocabulary changed {p.name} from {old.shape} to {p.shape} beyond its rows")
    return out
