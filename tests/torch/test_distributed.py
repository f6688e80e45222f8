"""DDP, FSDP2 and tensor parallelism with gloo, 2 processes (torchrun): same losses and weights as one process,
and the checkpoint gathered from FSDP2 shards loads in every backend and transformers with the same logits."""
import pytest

from tests.distributed_helpers import backend_logits_diff, run_check, transformers_logits_diff

pytest.importorskip("torch.distributed.fsdp")


def test_ddp_fsdp2_and_tensor_parallel_match_single_process(tmp_path):
    report = run_check(["-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                        "tests/torch/distributed_check.py", str(tmp_path)], env={"OMP_NUM_THREADS": "1"})
    for engine in ("ddp", "fsdp2", "tp"):
        r = report[engine]
        assert r["max_loss_diff"] <= 1e-5, (engine, r)
        assert r["max_param_diff"] <= 1e-5, (engine, r)  # after two AdamW steps
        assert r["losses"][1] < r["losses"][0]
    # FSDP2 wrapped each of the 2 + 2 layers; parameters are DTensor shards on dim 0 (32 rows / 2 ranks)
    assert report["fsdp2"]["layers_wrapped"] == 4
    assert report["fsdp2"]["query_type"] == "DTensor" and report["fsdp2"]["query_local_shape"] == [16, 32]
    for backend in ("tf", "flax"):  # rank 0 computed the logits with the torch backend
        assert backend_logits_diff(backend, tmp_path / "ckpt", tmp_path / "batch_logits.npz") <= 1e-5, backend
    # tensor parallel (bert2bert): query [32 out, 32 in] split on out, MLP output [32, 64] on in, 4 heads -> 2 per rank
    tp = report["tp"]
    assert tp["heads"] == 2 and tp["query_local_shape"] == [16, 32] and tp["output_local_shape"] == [32, 32], tp
    pytest.importorskip("transformers")
    assert transformers_logits_diff(tmp_path / "ckpt", tmp_path / "batch_logits.npz") <= 1e-5
