"""Portable random init: the same spec and seed give the same numpy weights everywhere."""
from __future__ import annotations

import numpy as np

from encdec.specs import BIAS, NORM_BIAS, NORM_SCALE, ModelSpec


def init_weights(spec: ModelSpec, seed: int = 0, std: float = 0.02, randomize_all: bool = False, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Canonical weights for ``spec``: matrices ~ N(0, std); biases 0 and norm scales 1,
    as transformers initialises them.

    ``randomize_all`` also draws biases (N(0, std)) and norm scales (1 + N(0, std)) so
    tests notice a dropped bias or a swapped norm.  Each parameter gets its own stream
    derived from ``seed`` and its name, so adding a parameter never shifts the others.
    """
    out: dict[str, np.ndarray] = {}
    for p in spec.untied:
        rng = np.random.default_rng([seed, *p.name.encode()])
        if p.kind in (BIAS, NORM_BIAS):
            arr = rng.normal(0.0, std, p.shape) if randomize_all else np.zeros(p.shape)
        elif p.kind == NORM_SCALE:
            arr = 1.0 + rng.normal(0.0, std, p.shape) if randomize_all else np.ones(p.shape)
        else:
            arr = rng.normal(0.0, std, p.shape)
        out[p.name] = arr.astype(dtype)
    for tied, source in spec.ties.items():
        out[tied] = out[source]
    return out
