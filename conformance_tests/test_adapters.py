"""Adapters in every backend against the AdapterHub ``adapters`` library (1.3, test-only oracle).

The same adapter weights, loaded into transformers' ``EncoderDecoderModel`` after
``adapters.init`` and into each backend's model through ``load_adapter_state``, must give the
same logits and loss (fp32, 1e-5) with and without ``leave_out``; an inactive adapter changes nothing,
bit for bit; merged LoRA keeps the outputs; an adapter saved by one backend (or by the
``adapters`` library) loads in every other with the same outputs.  Training is backend
specific and lives in ``tests/<backend>/test_adapters.py``.
"""
from __future__ import annotations

import numpy as np
import pytest

from encdec.adapters import (LoRAConfig, SeqBnConfig, adapter_params, adapter_sites, init_adapter_weights,
                             save_adapter_files)
from encdec.init import init_weights
from encdec.runner import Runner, sample_inputs
from encdec.specs import encoder_decoder_spec

from conformance_tests.adapter_cases import CASES, CONFIGS, TOL, ours_config
from conformance_tests.conftest import max_abs, require, require_module
from conformance_tests.pairs import PAIRS

hub = require_module("adapters")  # the oracle: a skip locally, a failure under CI

_PAIRS: dict[str, tuple] = {}


def pair(name: str) -> tuple:
    """(config, base weights, inputs) of a tiny pair, built once."""
    if name not in _PAIRS:
        config = next(p for p in PAIRS if p.id == name).config()
        weights = init_weights(encoder_decoder_spec(config), seed=7, randomize_all=True)
        _PAIRS[name] = config, weights, sample_inputs(config, batch=3, seed=1)
    return _PAIRS[name]


def random_adapter(config, key: str, name: str = "a", seed: int = 3) -> dict[str, np.ndarray]:
    """Adapter weights with every entry random (a fresh LoRA's B is zero, which would hide bugs)."""
    rng = np.random.default_rng(seed)
    shapes = adapter_params(adapter_sites(config, name, ours_config(key)))
    return {n: (rng.standard_normal(s) * 0.3).astype(np.float32) for n, s in sorted(shapes.items())}


def oracle(pair_name: str, key: str, name: str = "a"):
    """transformers + ``adapters`` holding the pair's weights and the random adapter ``name``."""
    import torch

    from conformance_tests.oracle import torch_model

    config, weights, _ = pair(pair_name)
    model = torch_model(config, weights)
    hub.init(model)
    cls, kwargs = CONFIGS[key]
    model.add_adapter(name, config=getattr(hub, cls.__name__)(**kwargs))
    state = {k: torch.from_numpy(v) for k, v in random_adapter(config, key, name).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, f"our adapter names are not AdapterHub's: {unexpected[:4]}"
    assert not [k for k in missing if f".{name}." in k], "AdapterHub has adapter parameters our spec lacks"
    model.set_active_adapters(name)
    return model.eval()


_ORACLE_OUT: dict[tuple[str, str], dict] = {}


def oracle_out(pair_name: str, key: str) -> dict:
    """The ``adapters`` library's outputs (logits, loss) on the pair's inputs, computed once."""
    if (pair_name, key) not in _ORACLE_OUT:
        from conformance_tests.oracle import torch_forward

        _ORACLE_OUT[pair_name, key] = torch_forward(oracle(pair_name, key), pair(pair_name)[2])
    return _ORACLE_OUT[pair_name, key]


def oracle_logits(pair_name: str, key: str) -> np.ndarray:
    return oracle_out(pair_name, key)["logits"]


def base_runner(backend: str, pair_name: str) -> Runner:
    require(backend)
    config, weights, _ = pair(pair_name)
    return Runner.from_weights(backend, config, weights)


def with_adapter(backend: str, pair_name: str, key: str, name: str = "a") -> Runner:
    """A fresh model of ``backend`` with the random adapter ``name`` loaded and active."""
    runner = base_runner(backend, pair_name)
    config = pair(pair_name)[0]
    runner.model.add_adapter(name, ours_config(key))
    runner.model.load_adapter_state(name, random_adapter(config, key, name))
    runner.model.set_active_adapters(name)
    return runner


def logits(runner: Runner, pair_name: str) -> np.ndarray:
    return runner.forward(**pair(pair_name)[2])["logits"]


@pytest.mark.parametrize("pair_name,key", CASES, ids=[f"{p}-{k}" for p, k in CASES])
def test_logits_match_adapters_library(backend, pair_name, key):
    runner = with_adapter(backend, pair_name, key)
    out, want = runner.forward(**pair(pair_name)[2]), oracle_out(pair_name, key)
    got = out["logits"]
    runner.model.set_active_adapters(None)
    base = logits(runner, pair_name)
    assert max_abs(got, want["logits"]) < TOL
    assert max_abs(out["loss"], want["loss"]) < TOL
    assert max_abs(got, base) > 1e-3, "the adapter does not act"


@pytest.mark.parametrize("pair_name,key", [("bert2bert", "seqbn-mh-leave0"), ("bert2bert", "lora-all-leave1"),
                                           ("bert2gpt2", "seqbn-mh-leave0"), ("bert2gpt2", "lora-mlp-leave0"),
                                           ("bert2bart-decoder", "seqbn-mh-leave0")])
def test_inactive_adapter_is_bit_identical(backend, pair_name, key):
    runner = base_runner(backend, pair_name)
    plain = logits(runner, pair_name)
    model = runner.model
    model.add_adapter("a", ours_config(key))
    model.load_adapter_state("a", random_adapter(pair(pair_name)[0], key))
    assert np.array_equal(logits(runner, pair_name), plain), "an added, inactive adapter changed the outputs"
    model.set_active_adapters("a")
    assert not np.array_equal(logits(runner, pair_name), plain)
    model.set_active_adapters(None)
    assert np.array_equal(logits(runner, pair_name), plain)
    model.set_active_adapters("a")
    model.delete_adapter("a")
    assert model.active_adapter is None and model.adapter_configs == {}
    assert np.array_equal(logits(runner, pair_name), plain)
    assert set(model.canonical_state()) == set(pair(pair_name)[1])


def test_same_seed_same_adapter_in_every_backend(backend):
    """The core's portable init: ``add_adapter(seed=...)`` gives identical arrays everywhere."""
    config = pair("bert2bert")[0]
    lora = LoRAConfig(attn_matrices=["q", "k", "v"], intermediate_lora=True)
    model = base_runner(backend, "bert2bert").model
    model.add_adapter("x", lora, seed=11)
    want = init_adapter_weights(adapter_sites(config, "x", lora), lora, seed=11)
    got = model.adapter_state("x")
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("pair_name,key", [("bert2bert", "lora-all-leave1"), ("bert2gpt2", "lora"),
                                           ("bert2gpt2", "lora-all-leave1")])
def test_merge_lora_keeps_outputs(backend, pair_name, key):
    runner = with_adapter(backend, pair_name, key)
    before = logits(runner, pair_name)
    base_before = runner.model.canonical_state()
    runner.model.merge_adapter("a")
    assert runner.model.adapter_configs == {} and runner.model.active_adapter is None
    assert max_abs(logits(runner, pair_name), before) < TOL
    after = runner.model.canonical_state()
    changed = sorted(k for k in after if not np.array_equal(after[k], base_before[k]))
    assert changed and all(k.endswith(".weight") for k in changed)


@pytest.mark.parametrize("pair_name,key", [("bert2bert", "seqbn-mh-leave0"), ("bert2bert", "lora-all-leave1"),
                                           ("bert2gpt2", "seqbn-noln-before")])
def test_adapter_saved_by_one_backend_loads_in_another(tmp_path, backend, other, pair_name, key):
    if backend == other:
        pytest.skip("same backend")
    source = with_adapter(backend, pair_name, key)
    source.model.save_adapter(tmp_path, "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    target = base_runner(other, pair_name)
    assert target.model.load_adapter(tmp_path, set_active=True) == "a"
    assert target.model.adapter_configs == {"a": ours_config(key)}
    assert max_abs(logits(target, pair_name), logits(source, pair_name)) < TOL
    assert max_abs(logits(target, pair_name), oracle_logits(pair_name, key)) < TOL


@pytest.mark.parametrize("pair_name,key,fmt", [("bert2bert", "seqbn-mh-leave0", "adapterhub"),
                                               ("bert2gpt2", "lora-all-leave1", "adapterhub-safetensors")])
def test_adapter_saved_in_adapterhub_layout_loads_in_adapters_library(tmp_path, backend, pair_name, key, fmt):
    """``save_adapter(format="adapterhub")`` from any backend -> the ``adapters`` library's own
    ``load_adapter`` (on transformers' model after ``adapters.init``) gives our logits; the
    folder also loads back into every backend."""
    from conformance_tests.oracle import torch_forward, torch_model

    source = with_adapter(backend, pair_name, key)
    source.model.save_adapter(tmp_path, "a", format=fmt)
    weights_file = {"adapterhub": "pytorch_adapter.bin", "adapterhub-safetensors": "adapter.safetensors"}[fmt]
    assert {p.name for p in tmp_path.iterdir()} == {"adapter_config.json", weights_file}
    config, weights, inputs = pair(pair_name)
    hf = torch_model(config, weights)
    hub.init(hf)
    info: dict = {}
    assert hf.load_adapter(str(tmp_path), set_active=True, loading_info=info,
                           use_safetensors=fmt == "adapterhub-safetensors") == "a"
    assert not [k for k in info["missing_keys"] if ".a." in k]
    assert hf.adapters_config.get("a").to_dict() == getattr(hub, type(ours_config(key)).__name__)(**CONFIGS[key][1]).to_dict()
    got = torch_forward(hf.eval(), inputs)["logits"]
    ours = logits(source, pair_name)
    assert max_abs(got, ours) < TOL
    assert max_abs(got, oracle_logits(pair_name, key)) < TOL
    back = base_runner(backend, pair_name)
    assert back.model.load_adapter(tmp_path, set_active=True) == "a"
    assert max_abs(logits(back, pair_name), ours) < TOL


@pytest.mark.parametrize("pair_name,key", [("bert2bert", "seqbn-mh-leave0"), ("bert2bert", "lora-all-leave1"),
                                           ("bert2gpt2", "seqbn")])
def test_adapterhub_saved_adapter_loads(tmp_path, backend, pair_name, key):
    """``pytorch_adapter.bin`` + ``adapter_config.json`` written by the ``adapters`` library."""
    oracle(pair_name, key).save_adapter(str(tmp_path), "a")
    assert (tmp_path / "pytorch_adapter.bin").is_file()
    runner = base_runner(backend, pair_name)
    assert runner.model.load_adapter(tmp_path, set_active=True) == "a"
    assert max_abs(logits(runner, pair_name), oracle_logits(pair_name, key)) < TOL


@pytest.mark.parametrize("pair_name,key", [("bert2bert", "seqbn-mh-leave0"), ("bert2bert", "lora-all-leave1"),
                                           ("bert2gpt2", "seqbn"), ("bert2gpt2", "lora")])
def test_generate_runs_the_active_adapter(backend, pair_name, key):
    """Greedy ids equal the ``adapters`` library's: the cached decode path (cross-attention keys and
    values computed once) runs the adapter too."""
    from conformance_tests.oracle import torch_generate

    runner = with_adapter(backend, pair_name, key)
    x = pair(pair_name)[2]
    kwargs = dict(max_length=8, do_sample=False, num_beams=1)
    got = runner.generate(x["input_ids"], x["attention_mask"], **kwargs)
    # after adapters.init, transformers' cached GPT-2 cross-attention fails in generate (key length
    # mismatch, even with no adapter active), so there the oracle decodes with full forwards
    want = torch_generate(oracle(pair_name, key), x["input_ids"], x["attention_mask"], **kwargs,
                          use_cache=pair_name != "bert2gpt2")
    runner.model.set_active_adapters(None)
    base = runner.generate(x["input_ids"], x["attention_mask"], **kwargs)
    assert np.array_equal(got, want)
    assert not np.array_equal(got, base)


def test_only_the_active_adapter_runs(backend):
    runner = with_adapter(backend, "bert2bert", "seqbn-mh-leave0")
    runner.model.add_adapter("other", LoRAConfig(init_weights="bert"))  # B != 0: it would change outputs
    assert max_abs(logits(runner, "bert2bert"), oracle_logits("bert2bert", "seqbn-mh-leave0")) < TOL
    runner.model.set_active_adapters("other")
    assert max_abs(logits(runner, "bert2bert"), oracle_logits("bert2bert", "seqbn-mh-leave0")) > 1e-3


def test_merge_into_tied_weights_is_refused(backend):
    """With ``tie_encoder_decoder`` an encoder LoRA host is also a decoder weight: merging would
    change both parts, so every backend refuses it (through the core)."""
    runner = base_runner(backend, "bert2bert-tied")
    runner.model.add_adapter("a", LoRAConfig(init_weights="bert"))
    before = runner.model.canonical_state()
    with pytest.raises(NotImplementedError, match="shared"):
        runner.model.merge_adapter("a")
    after = runner.model.canonical_state()
    assert "a" in runner.model.adapter_configs and all(np.array_equal(before[k], after[k]) for k in before)


def test_errors(tmp_path, backend):
    model = with_adapter(backend, "bert2bert", "lora").model
    with pytest.raises(ValueError, match="already exists"):
        model.add_adapter("a", LoRAConfig())
    with pytest.raises(TypeError, match="SeqBnConfig or LoRAConfig"):
        model.add_adapter("b", 8)
    with pytest.raises(NotImplementedError, match="'prefix_tuning' is not supported"):
        model.add_adapter("b", "prefix_tuning")
    with pytest.raises(TypeError, match="one adapter name"):
        model.set_active_adapters(["a", "b"])
    for method in (model.set_active_adapters, model.delete_adapter, model.train_adapter, model.merge_adapter):
        with pytest.raises(KeyError, match="no adapter named 'b'"):
            method("b")
    with pytest.raises(ValueError, match="shape"):
        model.load_adapter_state("a", {k: v[..., :1] for k, v in model.adapter_state("a").items()})
    model.save_adapter(tmp_path, "a")
    model.delete_adapter("a")
    model.add_adapter("a", LoRAConfig(r=2))
    with pytest.raises(ValueError, match="config"):
        model.load_adapter(tmp_path)
    model.add_adapter("bn", SeqBnConfig())
    with pytest.raises(ValueError, match="only LoRA"):
        model.merge_adapter("bn")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        model.load_adapter(tmp_path / "missing")
    lora = LoRAConfig()
    bad = init_adapter_weights(adapter_sites(model.config, "c", lora), lora)
    save_adapter_files(tmp_path / "bad", "c", lora, {k: v[..., :1] for k, v in bad.items()})
    with pytest.raises(ValueError, match="shape"):
        model.load_adapter(tmp_path / "bad")
    assert "c" not in model.adapter_configs  # a bad file adds nothing
