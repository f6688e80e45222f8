"""Every activation name in encdec.activations: each backend's function against transformers
4.57's ``ACT2FN`` on a grid covering the tails, and the names encdec refuses."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from conformance_tests.conftest import require
from encdec.activations import ACTIVATIONS, REFUSED, check_activation

GRID = np.concatenate([np.linspace(-12, 12, 241), [-1e-3, 0.0, 1e-3, 0.707107]]).astype(np.float32)
_TABLES = {"torch": "encdec_torch.models.common", "tf": "encdec_tf.models.common", "flax": "encdec_flax.models.layers"}


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("transformers")
    import torch
    from transformers.activations import ACT2FN

    missing = set(ACT2FN) - set(ACTIVATIONS) - set(REFUSED)
    assert not missing, f"transformers has activations encdec neither implements nor refuses: {sorted(missing)}"
    with torch.no_grad():
        return {name: ACT2FN[name](torch.from_numpy(GRID)).numpy() for name in ACTIVATIONS}


def test_activations_match_transformers(backend, reference):
    require(backend)
    module = importlib.import_module(_TABLES[backend])
    worst = {}
    for name in ACTIVATIONS:
        fn = module.activation(name, "test")
        x = GRID if backend == "flax" else (_to_torch(GRID) if backend == "torch" else _to_tf(GRID))
        ours, ref = np.asarray(fn(x), np.float64), reference[name].astype(np.float64)
        # float32 rounding: 1e-6 relative to the value (|f(x)| reaches 12 on this grid)
        worst[name] = float(np.max(np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))))
    bad = {n: d for n, d in worst.items() if d > 1e-6}
    assert not bad, f"{backend}: activations off transformers by more than 1e-6 (relative above 1): {bad}"


def test_refused_names_say_why():
    with pytest.raises(NotImplementedError, match=r"hidden_act='prelu' is not implemented \(it has a learned slope"):
        check_activation("prelu", "hidden_act")
    with pytest.raises(NotImplementedError, match=r"activation_function='gelu_2' is not implemented; supported: gelu, "):
        check_activation("gelu_2", "activation_function")


def _to_torch(x):
    import torch

    return torch.from_numpy(x)


def _to_tf(x):
    import tensorflow as tf

    return tf.constant(x)
