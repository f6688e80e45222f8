"""Core adapter configs, spec, init and files (numpy only; the ``adapters`` library is an oracle)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from encdec.adapters import (
    LoRAConfig,
    SeqBnConfig,
    adapter_params,
    adapter_sites,
    check_adapter_weights,
    config_from_dict,
    config_to_dict,
    expand_lora_b,
    init_adapter_weights,
    load_adapter_files,
    lora_delta,
    resolve_config,
    save_adapter_files,
)
from encdec.configuration import EncoderDecoderConfig, config_class_for
from tests.core.tiny import part_kwargs


def pair_config(dec_type: str = "bert") -> EncoderDecoderConfig:
    enc = config_class_for("bert")(**part_kwargs("bert"))
    dec = config_class_for(dec_type)(**part_kwargs(dec_type))
    return EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)


@pytest.mark.parametrize("ours,theirs", [(SeqBnConfig, "SeqBnConfig"), (LoRAConfig, "LoRAConfig")])
def test_defaults_equal_adapterhub(ours, theirs):
    hub = pytest.importorskip("adapters")
    reference = getattr(hub, theirs)()
    for f in dataclasses.fields(ours):
        assert getattr(ours(), f.name) == getattr(reference, f.name), f.name


@pytest.mark.parametrize("cls,kwargs", [
    (SeqBnConfig, dict(is_parallel=True)), (SeqBnConfig, dict(ln_after=True)), (SeqBnConfig, dict(scaling="learned")),
    (SeqBnConfig, dict(phm_layer=True)), (SeqBnConfig, dict(cross_adapter=True)), (LoRAConfig, dict(use_dora=True)),
    (LoRAConfig, dict(composition_mode="scale")), (LoRAConfig, dict(init_weights="vera")),
])
def test_unsupported_options_refused(cls, kwargs):
    with pytest.raises(NotImplementedError, match=next(iter(kwargs))):
        cls(**kwargs)


def test_invalid_values_refused():
    with pytest.raises(ValueError, match="attn_matrices"):
        LoRAConfig(attn_matrices=["q", "o"])
    with pytest.raises(ValueError, match="post_add"):
        SeqBnConfig(original_ln_before=False, residual_before_ln="post_add")
    with pytest.raises(NotImplementedError, match="architecture 'prefix_tuning'"):
        config_from_dict({"architecture": "prefix_tuning"})
    # NaN would reach every output silently; a string alpha raised a bare TypeError
    with pytest.raises(ValueError, match="alpha must be a finite number, got nan"):
        LoRAConfig(alpha=float("nan"))
    with pytest.raises(ValueError, match="scaling must be a finite number"):
        SeqBnConfig(scaling=float("inf"))
    with pytest.raises(ValueError, match="reduction_factor must be a finite number > 0, got nan"):
        SeqBnConfig(reduction_factor=float("nan")).bottleneck_size(32, 0)


def test_config_dict_round_trip_and_adapterhub_json():
    for config in (SeqBnConfig(mh_adapter=True, leave_out=[1]), LoRAConfig(r=2, intermediate_lora=True)):
        assert config_from_dict(json.loads(json.dumps(config_to_dict(config)))) == config
    hub = pytest.importorskip("adapters")
    for theirs, ours in ((hub.SeqBnConfig(reduction_factor=4), SeqBnConfig(reduction_factor=4)),
                         (hub.LoRAConfig(alpha=4), LoRAConfig(alpha=4))):
        assert config_from_dict(theirs.to_dict()) == ours


def test_leave_out_counts_encoder_and_decoder_separately():
    names = adapter_params(adapter_sites(pair_config(), "x", SeqBnConfig(mh_adapter=True, leave_out=[0])))
    for prefix in ("encoder.encoder.layer", "decoder.bert.encoder.layer"):
        assert not [n for n in names if n.startswith(f"{prefix}.0.")]
        assert [n for n in names if n.startswith(f"{prefix}.1.")]
    assert "decoder.bert.encoder.layer.1.crossattention.output.adapters.x.adapter_down.0.weight" in names
    assert not [n for n in names if n.startswith("encoder.") and "crossattention" in n]


def test_shapes_and_reduction_factor_mapping():
    names = adapter_params(adapter_sites(pair_config(), "x", SeqBnConfig(reduction_factor={"1": 4, "default": 16})))
    assert names["encoder.encoder.layer.0.output.adapters.x.adapter_down.0.weight"] == (2, 32)
    assert names["encoder.encoder.layer.1.output.adapters.x.adapter_up.weight"] == (32, 8)
    lora = adapter_params(adapter_sites(pair_config(), "y", LoRAConfig(r=3, attn_matrices=["k"], output_lora=True)))
    assert lora["decoder.bert.encoder.layer.0.crossattention.self.key.loras.y.lora_A"] == (3, 32)
    assert lora["encoder.encoder.layer.1.output.dense.loras.y.lora_A"] == (3, 37)
    assert lora["encoder.encoder.layer.1.output.dense.loras.y.lora_B"] == (32, 3)
    assert not [n for n in lora if ".query." in n or ".value." in n]


def test_gpt2_decoder_sites():
    names = adapter_params(adapter_sites(pair_config("gpt2"), "x", SeqBnConfig(mh_adapter=True, leave_out=[1])))
    assert names["decoder.transformer.h.0.attention_adapters.adapters.x.adapter_down.0.weight"] == (2, 32)
    assert "decoder.transformer.h.0.output_adapters.adapters.x.adapter_up.bias" in names
    assert not [n for n in names if n.startswith("decoder.transformer.h.1.")]
    assert not [n for n in names if n.startswith("encoder.encoder.layer.1.")]
    assert [n for n in names if n.startswith("encoder.encoder.layer.0.")]
    lora = adapter_sites(pair_config("gpt2"), "y", LoRAConfig(r=2, selfattn_lora=False, intermediate_lora=True))
    decoder = [s for s in lora if s.host.startswith("decoder.")]
    assert [s.host for s in decoder] == ["decoder.transformer.h.0.mlp.c_fc", "decoder.transformer.h.1.mlp.c_fc"]
    assert decoder[0].host_transposed and decoder[0].params[1].shape == (128, 2)


def test_unsupported_architecture_refused():
    with pytest.raises(NotImplementedError, match="decoder model_type 'electra'"):
        adapter_sites(pair_config("electra"), "x", SeqBnConfig())
    with pytest.raises(NotImplementedError, match="post_add"):
        adapter_sites(pair_config("gpt2"), "x", SeqBnConfig(residual_before_ln="post_add"))
    with pytest.raises(ValueError, match="adapter name"):
        adapter_sites(pair_config(), "a.b", LoRAConfig())


def test_fused_qkv_lora_expansion_by_hand():
    """GPT-2's c_attn with attn_matrices q, v: A [2r, in], B [2d, r]; group 0 updates the q block,
    group 1 the v block, the k block is untouched (AdapterHub's grouped conv1d + padding)."""
    config = pair_config("gpt2")
    d, r = config.decoder.n_embd, 3
    sites = [s for s in adapter_sites(config, "x", LoRAConfig(r=r, alpha=6, attn_matrices=["v", "q"])) if "c_attn" in s.host]
    assert len(sites) == config.decoder.n_layer
    site = sites[0]
    assert site.lora_blocks == (0, 2) and site.host_transposed
    assert [p.shape for p in site.params] == [(2 * r, d), (2 * d, r)]
    rng = np.random.default_rng(0)
    a, b, x = rng.standard_normal((2 * r, d)), rng.standard_normal((2 * d, r)), rng.standard_normal((4, d))
    want = np.zeros((4, 3 * d))
    want[:, :d] = x @ a[:r].T @ b[:d].T
    want[:, 2 * d:] = x @ a[r:].T @ b[d:].T
    np.testing.assert_allclose(x @ a.T @ expand_lora_b(site, b).T, want, rtol=0, atol=1e-12)
    # merge: the canonical Conv1D weight [in, out] gains the same update, times alpha / r
    np.testing.assert_allclose(x @ lora_delta(site, a, b, LoRAConfig(r=r, alpha=6)), want * 2, rtol=0, atol=1e-12)


def test_init_is_seeded_and_fresh_lora_is_zero():
    sites = adapter_sites(pair_config(), "x", LoRAConfig())
    a, b = init_adapter_weights(sites, LoRAConfig(), seed=1), init_adapter_weights(sites, LoRAConfig(), seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(not v.any() for k, v in a.items() if k.endswith("lora_B"))
    assert all(v.any() for k, v in a.items() if k.endswith("lora_A"))


def test_files_round_trip_and_mismatch(tmp_path):
    config = SeqBnConfig(leave_out=[0])
    sites = adapter_sites(pair_config(), "x", config)
    weights = init_adapter_weights(sites, config, seed=2)
    save_adapter_files(tmp_path, "x", config, weights)
    name, loaded_config, loaded = load_adapter_files(tmp_path)
    assert (name, loaded_config) == ("x", config)
    assert all(np.array_equal(weights[k], loaded[k]) for k in weights) and loaded.keys() == weights.keys()
    with pytest.raises(ValueError, match="missing"):
        check_adapter_weights(adapter_sites(pair_config(), "x", SeqBnConfig()), loaded, "test")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter_files(tmp_path / "nowhere")
    for hostile in (b"{x", b"[" * 100_000 + b"]" * 100_000, b"\xff", b'{"config": {}, "name": {"a": 1}}'):
        (tmp_path / "adapter_config.json").write_bytes(hostile)
        with pytest.raises(ValueError, match="load_adapter: .*adapter_config.json"):
            load_adapter_files(tmp_path)


@pytest.mark.parametrize("fmt,weights_file", [("adapterhub-safetensors", "adapter.safetensors"),
                                              ("adapterhub", "pytorch_adapter.bin")])
def test_adapterhub_layout_round_trip(tmp_path, fmt, weights_file):
    """``format="adapterhub..."``: AdapterHub's file names and its meta keys; read back as ours."""
    if fmt == "adapterhub":
        pytest.importorskip("torch")
    config = LoRAConfig(r=2, leave_out=[1])
    weights = init_adapter_weights(adapter_sites(pair_config(), "x", config), config, seed=4)
    save_adapter_files(tmp_path, "x", config, weights, format=fmt)
    assert {p.name for p in tmp_path.iterdir()} == {"adapter_config.json", weights_file}
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    assert meta["model_class"] == "EncoderDecoderModelWithAdapters" and meta["config"]["architecture"] == "lora"
    assert not meta["version"].startswith("adapters.")  # AdapterHub rewrites LoRA alpha for old adapters.* versions
    name, loaded_config, loaded = load_adapter_files(tmp_path)
    assert (name, loaded_config) == ("x", config)
    assert loaded.keys() == weights.keys() and all(np.array_equal(weights[k], loaded[k]) for k in weights)
    save_adapter_files(tmp_path, "x", config, weights)  # switching back to ours replaces the AdapterHub file
    assert {p.name for p in tmp_path.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    with pytest.raises(ValueError, match="format='peft'; expected one of safetensors, adapterhub"):
        save_adapter_files(tmp_path, "x", config, weights, format="peft")


def test_config_names_and_dicts_resolve_as_adapterhub():
    assert resolve_config("seq_bn") == resolve_config("pfeiffer") == SeqBnConfig()
    houlsby = resolve_config("double_seq_bn")
    assert (houlsby.mh_adapter, houlsby.output_adapter, houlsby.original_ln_before, houlsby.non_linearity) == (
        True, True, False, "swish")
    assert resolve_config("lora") == LoRAConfig()
    assert resolve_config({"architecture": "lora", "r": 2}) == LoRAConfig(r=2)
    with pytest.raises(NotImplementedError, match="'compacter' is not supported"):
        resolve_config("compacter")
    with pytest.raises(TypeError, match="config must be"):
        resolve_config(3)
