"""The benchmark harness in ``--quick`` mode (tiny model, one repetition) through
bench_torch.py: a smoke test of the script and of its checks, not of any speed."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_torch_quick(tmp_path, capsys):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import bench_torch
    finally:
        sys.path.pop(0)
    out = tmp_path / "figures.json"
    report = bench_torch.main(["--quick", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    ours, theirs = report["results"]["ours"], report["results"]["theirs"]
    assert ours["greedy ids equal"] == 1.0 and ours["beam ids equal"] == 1.0
    assert ours["forward max|dlogits|"] < 1e-5
    for name in ("load", "forward", "greedy", "beam"):
        assert ours[name] > 0 and theirs[name] > 0 and report["bounds"][name] > 0
    assert report["bandwidth_GBps"] > 0 and report["matmul_GFLOPs"] > 0
    table = capsys.readouterr().out
    assert "ours/bound" in table and "beam compile" in table
