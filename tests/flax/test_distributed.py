"""Sharded training on 8 simulated host devices (a child process: XLA_FLAGS must be set
before JAX starts): a (data 2 x model 4) mesh with the core plan's tensor-parallel and FSDP
placements gives the single-device losses, weights and generated ids (and so does
``jax.pmap`` of ``generate``); the checkpoint saved from the sharded parameters loads in the
PyTorch and TensorFlow backends and transformers."""
import pytest

from tests.distributed_helpers import backend_logits_diff, run_check, transformers_logits_diff


def test_sharded_step_generate_and_checkpoint(tmp_path):
    report = run_check(["tests/flax/distributed_check.py", str(tmp_path)], env={"JAX_PLATFORMS": "cpu"})
    assert report["pmap_generate_equal"]  # jax.pmap of generate, one row per device
    r = report["dp2_tp4_fsdp"]
    assert r["max_loss_diff"] <= 1e-5 and r["max_param_diff"] <= 1e-5, r  # two AdamW steps
    assert r["losses"][1] < r["losses"][0]
    assert r["params_keep_sharding"] and r["adam_state_sharded_like_params"], r
    # query kernel [in 32, out 32]: out split over model (4), in over data (2) by FSDP
    assert r["query_kernel_shard"] == [16, 8] and r["split_leaves"] > 40
    assert r["generate_equal"] and r["reload_equal"]
    for backend in ("torch", "tf"):
        assert backend_logits_diff(backend, tmp_path / "ckpt", tmp_path / "batch_logits.npz") <= 1e-5, backend
    pytest.importorskip("transformers")
    assert transformers_logits_diff(tmp_path / "ckpt", tmp_path / "batch_logits.npz") <= 1e-5
