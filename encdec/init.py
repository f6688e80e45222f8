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


def init_model_weights(config, seed: int = 0, dtype: str = "float32") -> dict[str, np.ndarray]:
    """Portable init of a whole encoder-decoder: each part drawn with its own
    ``initializer_range`` (``enc_to_dec_proj`` with the decoder's), as transformers does."""
    from encdec.specs import encoder_decoder_spec

    spec = encoder_decoder_spec(config)
    ranges = {"encoder": float(config.encoder.initializer_range), "decoder": float(config.decoder.initializer_range)}
    out: dict[str, np.ndarray] = {}
    for role, std in ranges.items():
        part = ModelSpec()
        part.params = {n: p for n, p in spec.params.items() if n.startswith(role + ".")}
        out.update(init_weights(part, seed=seed, std=std, dtype=dtype))
    rest = ModelSpec()
    rest.params = {n: p for n, p in spec.params.items() if n.split(".", 1)[0] not in ranges}
    out.update(init_weights(rest, seed=seed, std=ranges["decoder"], dtype=dtype))
    for tied, source in spec.ties.items():
        out[tied] = out[source]
    return out
