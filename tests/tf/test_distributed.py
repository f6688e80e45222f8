"""Keras fit (AdamW) under tf.distribute.MirroredStrategy on two logical CPU devices (a child
process: logical devices must be set before TensorFlow starts) gives the one-device losses
and weights, and the checkpoint it saves loads in the other backends and transformers with
the same logits."""
import pytest

from tests.distributed_helpers import backend_logits_diff, run_check, transformers_logits_diff


def test_mirrored_fit_matches_one_device(tmp_path):
    report = run_check(["tests/tf/distributed_check.py", str(tmp_path)])
    r = report["mirrored"]
    assert r["replicas"] == 2
    assert r["max_loss_diff"] <= 1e-5 and r["max_param_diff"] <= 1e-5, r  # after two AdamW steps
    assert r["losses"][1] < r["losses"][0] and r["iterations"] == 2
    assert r["mirrored_variables"] == "MirroredVariable"
    for backend in ("torch", "flax"):
        assert backend_logits_diff(backend, tmp_path / "ckpt", tmp_path / "batch_logits.npz") <= 1e-5, backend
    pytest.importorskip("transformers")
    assert transformers_logits_diff(tmp_path / "ckpt", tmp_path / "batch_logits.npz") <= 1e-5
