"""Checkpoint files: every format round-trips, bad input fails loudly and names the file."""
import json
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from encdec import checkpoint as ck
from encdec.checkpoint import CheckpointError, LoadError, load_state, match_state, parse_size
from encdec.init import init_weights
from encdec.specs import encoder_decoder_spec
from encdec.pretrained import load_pretrained, save_pretrained

from .iohelpers import assert_same_weights, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("bert", "gpt2")


def test_core_imports_no_framework():
    code = (
        "import sys, encdec.hub, encdec.checkpoint, encdec.pretrained, encdec.formats.tf_h5, encdec.formats.flax_msgpack\n"
        "bad = {'torch', 'tensorflow', 'jax', 'flax', 'h5py', 'msgpack', 'transformers'} & set(sys.modules)\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("text,expected", [(123, 123), ("5GB", 5 * 10**9), ("500MB", 5 * 10**8), ("10KiB", 10240), ("2 gib", 2 * 2**30)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["5 parsecs", "", 0, -3, 1.5, True])
def test_parse_size_rejects(bad):
    with pytest.raises((ValueError, TypeError), match="max_shard_size"):
        parse_size(bad)


@pytest.mark.parametrize("fmt", ["safetensors", "pt-bin", "tf-h5", "flax-msgpack"])
def test_round_trip_every_format(model, tmp_path, fmt):
    if fmt == "pt-bin":
        pytest.importorskip("torch")
    config, weights, spec = model
    files = save_pretrained(tmp_path / "m", config, weights, format=fmt)
    assert sorted(os.listdir(tmp_path / "m")) == sorted(files)
    _, loaded, _, _ = load_pretrained(tmp_path / "m")
    assert_same_weights(weights, loaded)
    raw = load_state(tmp_path / "m")
    assert "decoder.lm_head.weight" not in raw  # tie targets are not written


@pytest.mark.parametrize("fmt", ["safetensors", "pt-bin"])
def test_sharded_round_trip(model, tmp_path, fmt):
    if fmt == "pt-bin":
        pytest.importorskip("torch")
    config, weights, spec = model
    files = save_pretrained(tmp_path / "m", config, weights, format=fmt, max_shard_size="30KB")
    stem = "model" if fmt == "safetensors" else "pytorch_model"
    shards = [f for f in files if f.startswith(stem + "-")]
    assert len(shards) > 2 and shards[0].startswith(f"{stem}-00001-of-{len(shards):05d}")
    index = json.loads((tmp_path / "m" / (ck.FORMATS[fmt] + ".index.json")).read_text())
    untied = {p.name: weights[p.name] for p in spec.untied}
    assert set(index["weight_map"]) == set(untied)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in untied.values())
    for shard in shards:
        size = sum(untied[n].nbytes for n, s in index["weight_map"].items() if s == shard)
        names = [n for n, s in index["weight_map"].items() if s == shard]
        assert size <= 30_000 or len(names) == 1
    _, loaded, _, _ = load_pretrained(tmp_path / "m")
    assert_same_weights(weights, loaded)


def test_safetensors_metadata_format_pt(model, tmp_path):
    from safetensors import safe_open

    config, weights, _ = model
    save_pretrained(tmp_path, config, weights)
    with safe_open(str(tmp_path / "model.safetensors"), "np") as f:
        assert f.metadata() == {"format": "pt"}


def _handmade_safetensors(path, name, dtype, shape, raw: bytes):
    header = json.dumps({name: {"dtype": dtype, "shape": shape, "data_offsets": [0, len(raw)]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + raw)


def test_bf16_widened_to_float32(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 1e-3], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")
    path = tmp_path / "bf16.safetensors"
    _handmade_safetensors(path, "w", "BF16", [2, 2], bits.tobytes())
    out = ck.read_safetensors(path)["w"]
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_array_equal(out.ravel(), (bits.astype(np.uint32) << 16).view(np.float32))
    assert out[0, 0] == 1.0 and out[0, 1] == -2.5
    assert ck.safetensors_dtypes(path) == {"w": "BF16"}


def test_truncated_safetensors_names_file(model, tmp_path):
    config, weights, _ = model
    save_pretrained(tmp_path, config, weights)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_pretrained(tmp_path)
    path.write_bytes(data[:20])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated"):
        load_pretrained(tmp_path)
    path.write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(CheckpointError, match="model.safetensors.*bad header"):
        load_pretrained(tmp_path)


def test_read_split_between_threads(model, tmp_path, monkeypatch):
    """Large reads are split between reader threads: the same arrays as one read, and a file
    shorter than the header says is still reported as fewer bytes (then "truncated")."""
    config, weights, _ = model
    save_pretrained(tmp_path, config, weights)
    path = tmp_path / "model.safetensors"
    whole = ck.read_safetensors(path)
    monkeypatch.setattr(ck, "READ_BYTES_PER_THREAD", 1000)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    split = ck.read_safetensors(path)
    assert sorted(split) == sorted(whole)
    for name in whole:
        np.testing.assert_array_equal(split[name], whole[name])
    data = path.read_bytes()
    view = memoryview(bytearray(len(data) + 5000))
    with open(path, "rb", buffering=0) as f:
        assert ck._read_into(f, view, 0) == len(data)
    assert bytes(view[:len(data)]) == data


@pytest.mark.parametrize("fmt,name", [("flax-msgpack", "flax_model.msgpack"), ("tf-h5", "tf_model.h5"), ("pt-bin", "pytorch_model.bin")])
def test_corrupt_files_name_file(model, tmp_path, fmt, name):
    if fmt == "pt-bin":
        pytest.importorskip("torch")
    config, weights, _ = model
    save_pretrained(tmp_path, config, weights, format=fmt)
    path = tmp_path / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=name):
        load_pretrained(tmp_path)
    path.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CheckpointError, match=name):
        load_pretrained(tmp_path)


def test_missing_shard_names_shard_and_index(model, tmp_path):
    config, weights, _ = model
    save_pretrained(tmp_path, config, weights, max_shard_size="30KB")
    shard = sorted(f for f in os.listdir(tmp_path) if f.startswith("model-"))[2]
    (tmp_path / shard).unlink()
    with pytest.raises(FileNotFoundError, match=rf"shard '{shard}' listed in .*model.safetensors.index.json is missing"):
        load_pretrained(tmp_path)


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickle_with_objects_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(2), "evil": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*pytorch_model.bin.*weights_only=True"):
        ck.read_pt_bin(path)
    with open(path, "wb") as f:
        pickle.dump({"w": np.zeros(2)}, f)
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        ck.read_pt_bin(path)


def test_pt_bin_without_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"x")
    with pytest.raises(ImportError, match=r"pytorch_model.bin needs PyTorch"):
        ck.read_pt_bin(path)


def test_match_state_reports(model):
    _, weights, spec = model
    state = {k: v for k, v in weights.items() if k not in spec.ties}
    state.pop("encoder.pooler.dense.bias")
    state["encoder.embeddings.word_embeddings.weight"] = np.zeros((98, 32), np.float32)
    state["decoder.transformer.h.0.attn.rotary.weight"] = np.zeros(3, np.float32)
    with pytest.raises(LoadError) as err:
        match_state(state, spec)
    report = err.value.report
    assert report.missing == ["encoder.pooler.dense.bias"]
    assert report.unexpected == ["decoder.transformer.h.0.attn.rotary.weight"]
    assert report.mismatched == [("encoder.embeddings.word_embeddings.weight", (99, 32), (98, 32))]
    message = str(err.value)
    assert "1 missing: encoder.pooler.dense.bias" in message
    assert "expected (99, 32), checkpoint has (98, 32)" in message
    assert "1 unexpected: decoder.transformer.h.0.attn.rotary.weight" in message


def test_match_state_unexpected_lenient_and_tie_from_either_member(model):
    _, weights, spec = model
    state = {k: v for k, v in weights.items() if k != "decoder.transformer.wte.weight"}
    state["extra"] = np.zeros(1)
    out, report = match_state(state, spec, strict=False)
    assert report.unexpected == ["extra"] and report.tied == ["decoder.transformer.wte.weight"]
    np.testing.assert_array_equal(out["decoder.transformer.wte.weight"], weights["decoder.lm_head.weight"])
    assert list(out) == list(spec.params)


def test_load_pretrained_shape_mismatch(model, tmp_path):
    config, weights, _ = model
    save_pretrained(tmp_path, config, weights)
    other, _, _ = tiny_model("bert", "gpt2")
    other.decoder.n_positions = 32
    with pytest.raises(LoadError, match=r"decoder.transformer.wpe.weight: expected \(32, 32\), checkpoint has \(64, 32\)"):
        load_pretrained(tmp_path, config=other)


def test_atomic_save_keeps_old_checkpoint(model, tmp_path, monkeypatch):
    config, weights, _ = model
    target = tmp_path / "ckpt"
    save_pretrained(target, config, weights, max_shard_size="30KB")
    (target / "tokenizer.json").write_text("{}")
    before = {p: (target / p).read_bytes() for p in os.listdir(target)}

    real = ck.write_safetensors
    calls = []

    def failing(path, w, metadata=None):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        real(path, w, metadata)

    monkeypatch.setattr(ck, "write_safetensors", failing)
    other, new_weights, _ = tiny_model("bert", "gpt2", seed=7)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(target, other, new_weights, max_shard_size="30KB")
    assert {p: (target / p).read_bytes() for p in os.listdir(target)} == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]  # no temporary folders left
    monkeypatch.undo()
    _, loaded, _, _ = load_pretrained(target)
    assert_same_weights(weights, loaded)


def test_resave_removes_stale_shards_keeps_other_files(model, tmp_path):
    config, weights, _ = model
    save_pretrained(tmp_path / "c", config, weights, max_shard_size="30KB")
    (tmp_path / "c" / "tokenizer.json").write_text("{}")
    save_pretrained(tmp_path / "c", config, weights, format="flax-msgpack")
    save_pretrained(tmp_path / "c", config, weights)
    assert sorted(os.listdir(tmp_path / "c")) == ["config.json", "flax_model.msgpack", "model.safetensors", "tokenizer.json"]
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_format_hints(model, tmp_path):
    config, weights, _ = model
    save_pretrained(tmp_path, config, weights, format="flax-msgpack")
    other = dict(weights)
    other["encoder.pooler.dense.bias"] = weights["encoder.pooler.dense.bias"] + 1
    save_pretrained(tmp_path, config, other, format="safetensors")
    _, from_default, _, _ = load_pretrained(tmp_path)
    _, from_flax, _, _ = load_pretrained(tmp_path, from_flax=True)
    np.testing.assert_array_equal(from_default["encoder.pooler.dense.bias"], other["encoder.pooler.dense.bias"])
    np.testing.assert_array_equal(from_flax["encoder.pooler.dense.bias"], weights["encoder.pooler.dense.bias"])


def test_msgpack_chunked_arrays_and_flax_compat(model, tmp_path, monkeypatch):
    from encdec.formats import flax_msgpack

    config, weights, spec = model
    monkeypatch.setattr(flax_msgpack, "_MAX_CHUNK_BYTES", 1000)
    save_pretrained(tmp_path, config, weights, format="flax-msgpack")
    _, loaded, _, _ = load_pretrained(tmp_path)
    assert_same_weights(weights, loaded)
    serialization = pytest.importorskip("flax.serialization")
    tree = serialization.msgpack_restore((tmp_path / "flax_model.msgpack").read_bytes())
    kernel = tree["decoder"]["transformer"]["h"]["0"]["attn"]["c_attn"]["kernel"]
    np.testing.assert_array_equal(np.asarray(kernel), weights["decoder.transformer.h.0.attn.c_attn.weight"].T)
    assert "lm_head" not in tree["decoder"]
    np.testing.assert_array_equal(np.asarray(tree["encoder"]["embeddings"]["LayerNorm"]["scale"]),
                                  weights["encoder.embeddings.LayerNorm.weight"])


def test_h5_long_attribute_lists_are_chunked(model, tmp_path, monkeypatch):
    import h5py

    from encdec.formats import tf_h5

    config, weights, _ = model
    monkeypatch.setattr(tf_h5, "_HDF5_ATTR_LIMIT", 500)
    save_pretrained(tmp_path, config, weights, format="tf-h5")
    with h5py.File(tmp_path / "tf_model.h5") as f:
        assert "weight_names" not in f["encoder"].attrs and "weight_names1" in f["encoder"].attrs
    _, loaded, _, _ = load_pretrained(tmp_path)
    assert_same_weights(weights, loaded)


def test_tf_h5_refuses_architectures_without_tf_model(tmp_path):
    config, weights, _ = tiny_model("bert", "bart")
    with pytest.raises(NotImplementedError, match="bart decoder"):
        save_pretrained(tmp_path / "x", config, weights, format="tf-h5")
    assert not (tmp_path / "x").exists()


def test_tf_h5_refuses_untied_output_embedding(tmp_path):
    config, _, _ = tiny_model("bert", "gpt2")
    config.decoder.tie_word_embeddings = False
    weights = init_weights(encoder_decoder_spec(config))
    with pytest.raises(NotImplementedError, match="untied lm_head.weight"):
        save_pretrained(tmp_path / "x", config, weights, format="tf-h5")
    save_pretrained(tmp_path / "y", config, weights, format="flax-msgpack")
    _, loaded, _, _ = load_pretrained(tmp_path / "y")
    assert_same_weights(weights, loaded)


def test_save_into_current_directory(model, tmp_path, monkeypatch):
    config, weights, _ = model
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    save_pretrained(".", config, weights, format="flax-msgpack")
    save_pretrained(".", config, weights)  # (the other order removes model.safetensors, read first)
    assert sorted(os.listdir(".")) == ["config.json", "flax_model.msgpack", "model.safetensors"]


def test_unknown_format(model, tmp_path):
    config, weights, _ = model
    with pytest.raises(ValueError, match="unknown format 'onnx'"):
        save_pretrained(tmp_path, config, weights, format="onnx")
