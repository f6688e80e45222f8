"""The save/load matrix: a model saved by each backend (in each format it offers) loads
in every backend and in transformers with identical logits."""
from __future__ import annotations

import numpy as np
import pytest

from conformance_tests import oracle
from conformance_tests.conftest import max_abs, require
from conformance_tests.runners import runner
from encdec.formats.tf_h5 import TF_NAMING
from encdec.runner import Runner, sample_inputs

FORMATS = {"torch": ("safetensors", "pt-bin"), "tf": ("safetensors", "tf-h5"), "flax": ("safetensors", "flax-msgpack")}
#: light pairs save in each native format once and load in the next backend
_NEXT = {"torch": "tf", "tf": "flax", "flax": "torch"}


@pytest.fixture(scope="module")
def saved(case, tmp_path_factory):
    """{(backend, format): folder}, filled lazily."""
    return {"root": tmp_path_factory.mktemp(f"saved-{case.name}")}


def folder_for(case, saved, backend, fmt):
    key = (backend, fmt)
    if key not in saved:
        path = saved["root"] / f"{backend}-{fmt}"
        runner(case, backend).save(str(path), format=fmt)
        saved[key] = path
    return saved[key]


@pytest.mark.parametrize("fmt_index", [0, 1], ids=["safetensors", "native"])
def test_matrix(case, saved, backend, other, fmt_index):
    if case.light and (fmt_index == 0 or _NEXT[backend] != other):
        case.skip_if_light("save/load matrix beyond one round trip per native format")
    require(backend)
    require(other)
    fmt = FORMATS[backend][fmt_index]
    if fmt == "tf-h5" and case.config.decoder.model_type not in TF_NAMING:
        pytest.skip(f"transformers has no TF {case.config.decoder.model_type} causal LM, so tf_model.h5 has no naming for it")
    folder = folder_for(case, saved, backend, fmt)
    inputs = sample_inputs(case.config, labels=False)
    reloaded = Runner.from_pretrained(other, str(folder)).forward(**inputs)["logits"]
    direct = runner(case, other).forward(**inputs)["logits"]
    # Same loader backend, same weights: the logits are bit-for-bit the same.
    assert max_abs(reloaded, direct) == 0.0, f"{backend} --{fmt}--> {other}"


def test_transformers_loads_ours(case, saved, backend):
    if backend != "torch":  # every backend writes through the same core writer
        case.skip_if_light("transformers reading each backend's safetensors")
    require(backend)
    transformers = pytest.importorskip("transformers")
    import torch

    folder = folder_for(case, saved, backend, "safetensors")
    hf = transformers.EncoderDecoderModel.from_pretrained(str(folder), attn_implementation="eager").eval()
    inputs = sample_inputs(case.config, labels=False)
    with torch.no_grad():
        logits = hf(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.numpy()
    ref = oracle.torch_forward(oracle.torch_model(case.config, case.weights), inputs)["logits"]
    assert max_abs(logits, ref) == 0.0


def test_ours_loads_transformers(case, backend, tmp_path):
    require(backend)
    pytest.importorskip("transformers")
    oracle.torch_model(case.config, case.weights).save_pretrained(str(tmp_path))
    inputs = sample_inputs(case.config, labels=False)
    reloaded = Runner.from_pretrained(backend, str(tmp_path)).forward(**inputs)["logits"]
    assert max_abs(reloaded, runner(case, backend).forward(**inputs)["logits"]) == 0.0
    assert np.isfinite(reloaded).all()
