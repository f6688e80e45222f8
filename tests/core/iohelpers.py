"""Helpers for the checkpoint / hub / pretrained tests."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from encdec import configuration as C
from encdec.init import init_weights
from encdec.specs import encoder_decoder_spec

from .tiny import part_kwargs

ROOT = Path(__file__).resolve().parents[2]


def tiny_config(enc: str = "bert", dec: str = "gpt2", hidden: int = 32, **extra) -> C.EncoderDecoderConfig:
    e = C.config_class_for(enc)(**part_kwargs(enc, hidden))
    d = C.config_class_for(dec)(**part_kwargs(dec))
    extra.setdefault("decoder_start_token_id", 0)
    extra.setdefault("pad_token_id", 0)
    return C.EncoderDecoderConfig.from_encoder_decoder_configs(e, d, **extra)


def tiny_model(enc: str = "bert", dec: str = "gpt2", hidden: int = 32, seed: int = 1, **extra):
    """(config, canonical weights with random biases and norms, spec)."""
    config = tiny_config(enc, dec, hidden, **extra)
    spec = encoder_decoder_spec(config)
    return config, init_weights(spec, seed=seed, randomize_all=True), spec


def assert_same_weights(a, b) -> None:
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))[:10]
    for k in a:
        assert np.asarray(a[k]).shape == np.asarray(b[k]).shape, k
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


def fake_hub_cache(cache_dir: Path, repo_id: str, folder: Path, commit: str = "0123456789abcdef0123456789abcdef01234567", ref: str = "main") -> str:
    """Copy ``folder`` into huggingface_hub's cache layout: blobs by sha256, snapshot
    symlinks, ``refs/<ref>`` holding the commit hash.  Returns the commit."""
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    (repo / "blobs").mkdir(exist_ok=True)
    for src in sorted(folder.rglob("*")):
        if not src.is_file():
            continue
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / src.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return commit


def run_oracle(script: str, *args: str, env: dict[str, str], timeout: int = 300) -> str:
    """Run ``script`` with the venv's python in a subprocess; fail with its output."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    proc = subprocess.run([sys.executable, "-c", script, *args], env=full_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


