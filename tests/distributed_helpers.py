"""Shared by the engines' distributed tests: run a check script in a child process (the
simulated devices / process group must not leak into the test process), read its report,
and load the checkpoint it saved from sharded state with transformers' PyTorch class."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_check(args: list[str], timeout: int = 600, env: dict | None = None) -> dict:
    """Run ``python args...`` from the repository root; return the dict printed after
    ``REPORT `` (the test fails with the child's output tail otherwise)."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1][len("REPORT "):])


def _torch_batch(data) -> dict:
    import torch

    return {k: torch.as_tensor(data[k].astype(np.int64)) for k in ("input_ids", "attention_mask", "labels")}


def transformers_logits_diff(checkpoint: Path, npz: Path) -> float:
    """max |logits of transformers' EncoderDecoderModel on the saved batch - saved logits|."""
    import torch
    import transformers

    data = np.load(npz)
    model = transformers.EncoderDecoderModel.from_pretrained(checkpoint).eval()
    with torch.no_grad():
        out = model(**_torch_batch(data))
    return float(np.max(np.abs(out.logits.numpy() - data["logits"])))


def backend_logits_diff(backend: str, checkpoint: Path, npz: Path) -> float:
    """The same with encdec's ``"torch"``, ``"tf"`` or ``"flax"`` backend (in this process:
    the test process imports every installed backend anyway); skips when it is not installed."""
    import pytest

    data = np.load(npz)
    if backend == "torch":
        pytest.importorskip("torch")
        import torch

        from encdec_torch import EncoderDecoderModel

        model = EncoderDecoderModel.from_pretrained(checkpoint).eval()
        with torch.no_grad():
            logits = model(**_torch_batch(data)).logits.numpy()
    else:
        pytest.importorskip({"tf": "tensorflow", "flax": "flax"}[backend])
        batch = {k: data[k].astype(np.int32) for k in ("input_ids", "attention_mask", "labels")}
        if backend == "tf":
            from encdec_tf import TFEncoderDecoderModel as cls
        else:
            from encdec_flax import FlaxEncoderDecoderModel as cls
        logits = np.asarray(cls.from_pretrained(checkpoint)(**batch).logits)
    return float(np.max(np.abs(logits - data["logits"])))
