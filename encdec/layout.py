"""The one routine mapping canonical weights <-> a backend's own parameter names.

A backend declares a :class:`Layout`: for each parameter *kind*, the leaf name it uses
and whether the array is transposed relative to the PyTorch layout.  Module paths are
the canonical ones, so ``encoder.embeddings.LayerNorm.weight`` (kind ``norm_scale``)
becomes ``encoder.embeddings.LayerNorm.scale`` under a Flax layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from encdec.specs import KINDS, ModelSpec


@dataclass(frozen=True)
class Layout:
    """``leaf``: kind -> leaf name; ``transpose``: kinds stored transposed (2-D)."""

    leaf: Mapping[str, str]
    transpose: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        missing = set(KINDS) - set(self.leaf)
        if missing:
            raise ValueError(f"layout misses kinds {sorted(missing)}")

    def backend_name(self, canonical: str, kind: str) -> str:
        module, _, _ = canonical.rpartition(".")
        return f"{module}.{self.leaf[kind]}" if module else self.leaf[kind]


#: PyTorch's own layout: canonical names unchanged.
TORCH_LAYOUT = Layout({k: ("weight" if k not in ("bias", "norm_bias") else "bias") for k in KINDS})


def to_backend(weights: Mapping[str, np.ndarray], spec: ModelSpec, layout: Layout, include_tied: bool = False) -> dict[str, np.ndarray]:
    """Canonical ``{name: array}`` -> ``{backend name: array}`` (dotted paths).

    Tie targets are left out unless ``include_tied``: a backend that shares a tensor
    holds it once, under the source name.
    """
    out = {}
    for p in spec:
        if p.name in spec.ties and not include_tied:
            continue
        arr = np.asarray(weights[p.name])
        if p.kind in layout.transpose and arr.ndim == 2:
            arr = arr.T
        out[layout.backend_name(p.name, p.kind)] = arr
    return out


def from_backend(weights: Mapping[str, np.ndarray], spec: ModelSpec, layout: Layout) -> dict[str, np.ndarray]:
    """``{backend name: array}`` -> canonical ``{name: array}``, tie targets filled in."""
    out = {}
    for p in spec:
        if p.name in spec.ties:
            continue
        key = layout.backend_name(p.name, p.kind)
        if key not in weights:
            raise KeyError(f"backend weights lack {key!r} (canonical {p.name!r})")
        arr = np.asarray(weights[key])
        if p.kind in layout.transpose and arr.ndim == 2:
            arr = arr.T
        out[p.name] = arr
    for tied, source in spec.ties.items():
        out[tied] = out[source]
    return out
