"""Checkpoint integrity and crash safety: hostile headers and indexes, non-finite and
integer weights, loads that never depend on the file afterwards, loads racing saves,
SIGKILL at each step of a save, concurrent saves, permissions and write errors.

Crash and race cases fork the test process (cheap, deterministic crash points) and end
the child with ``os.kill(os.getpid(), SIGKILL)`` at the chosen step."""
import errno
import json
import os
import resource
import signal
import stat
import struct
import time
import zipfile

import numpy as np
import pytest

from encdec import checkpoint as ck
from encdec.adapters import SeqBnConfig, adapter_sites, init_adapter_weights, load_adapter_files, save_adapter_files
from encdec.checkpoint import CheckpointError
from encdec.pretrained import load_pretrained, save_pretrained

from .iohelpers import assert_same_weights, tiny_model

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="crash points fork the test process")


@pytest.fixture(scope="module")
def v1():
    return tiny_model("bert", "gpt2", seed=1)


@pytest.fixture(scope="module")
def v2():
    config, weights, spec = tiny_model("bert", "gpt2", seed=2)
    config.decoder_start_token_id = 5  # the config differs too: a mix of versions is visible
    return config, weights, spec


def _st_bytes(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _f32(n):
    return np.arange(n, dtype="<f4").tobytes()


# --- hostile safetensors headers: refused by us whenever (at least) the library refuses ---
HOSTILE = {
    "overlap": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                 "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, _f32(3), "overlaps"),
    "shared": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, _f32(2), "overlaps"),
    "gap": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}}, _f32(5), "gap"),
    "trailing": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, _f32(3), "trailing"),
    "size": ({"a": {"dtype": "F64", "shape": [2], "data_offsets": [0, 8]}}, _f32(2), "need 16"),
    "offset_type": ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8]}}, _f32(2), "bad header entry"),
    "negative_dim": ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, _f32(2), "bad header entry"),
    "dtype": ({"a": {"dtype": "F31", "shape": [2], "data_offsets": [0, 8]}}, _f32(2), "bad header entry"),
    "metadata": ({"__metadata__": {"format": 1}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                 _f32(2), "__metadata__"),
    "reversed": ({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}, _f32(2), "gap|ends before"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_safetensors_headers_refused(tmp_path, case):
    header, data, message = HOSTILE[case]
    path = tmp_path / "model.safetensors"
    path.write_bytes(_st_bytes(header, data))
    with pytest.raises(CheckpointError, match=rf"model\.safetensors.*({message})"):
        ck.read_safetensors(path)
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    if case not in ("overlap", "shared", "gap", "trailing", "size", "metadata"):
        return  # the library accepts or mis-reads the rest; we are stricter
    with pytest.raises(Exception):
        safetensors_numpy.load_file(str(path))


def test_duplicate_keys_and_huge_header_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    entry = '{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}'
    text = ('{"a": %s, "a": %s}' % (entry, entry)).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + _f32(2))
    with pytest.raises(CheckpointError, match="x.safetensors.*duplicate key 'a'"):
        ck.read_safetensors(path)
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(CheckpointError, match="x.safetensors.*header of 1099511627776 bytes"):
        ck.read_safetensors(path)


def test_writer_matches_library_bytes(tmp_path, v1):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    _, weights, _ = v1
    arrays = {**dict(list(weights.items())[:6]), "h": np.ones(3, np.float16), "e": np.zeros((0, 2), np.float32)}
    ck.write_safetensors(tmp_path / "ours.safetensors", arrays)
    safetensors_numpy.save_file(arrays, str(tmp_path / "lib.safetensors"), metadata={"format": "pt"})
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "lib.safetensors").read_bytes()


def _resave_tensor(folder, name, array):
    """Rewrite ``name`` in ``folder/model.safetensors`` with ``array`` (any dtype)."""
    state = ck.read_safetensors(folder / "model.safetensors")
    state[name] = array
    ck.write_safetensors(folder / "model.safetensors", state)


def test_integer_tensor_in_float_parameter_named(tmp_path, v1):
    config, weights, _ = v1
    save_pretrained(tmp_path, config, weights)
    name = "encoder.pooler.dense.bias"
    # float32 bytes declared as int32: same size, a valid header; the dtype must not pass
    _resave_tensor(tmp_path, name, weights[name].view(np.int32))
    with pytest.raises(CheckpointError, match=rf"{name} \(int32, a bias parameter\)"):
        load_pretrained(tmp_path)
    _resave_tensor(tmp_path, name, weights[name].astype(np.float64))  # wider floats still load
    _, loaded, _, _ = load_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded[name], weights[name])


def test_nonfinite_weights_refused_with_opt_out(tmp_path, v1):
    config, weights, _ = v1
    save_pretrained(tmp_path, config, weights)
    name = "decoder.transformer.h.1.mlp.c_fc.weight"
    bad = weights[name].copy()
    bad[0, 3] = np.nan
    bad[1, 1] = -np.inf
    _resave_tensor(tmp_path, name, bad)
    with pytest.raises(CheckpointError, match=rf"NaN or infinite values in 1 tensors: {name}.*allow_nonfinite_weights=True"):
        load_pretrained(tmp_path)
    _, loaded, _, _ = load_pretrained(tmp_path, allow_nonfinite_weights=True)
    assert np.isnan(loaded[name][0, 3]) and np.isneginf(loaded[name][1, 1])


# --- sharded index: shard names stay inside the folder ----------------------------------
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_shard_outside_folder_refused(tmp_path, v1, how):
    config, weights, _ = v1
    ckpt = tmp_path / "ckpt"
    save_pretrained(ckpt, config, weights, max_shard_size="100KB")
    index_path = ckpt / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes((ckpt / first).read_bytes())
    if how == "symlink":
        (ckpt / first).unlink()
        os.symlink(outside, ckpt / first)
        match = "resolves to .*outside the checkpoint folder"
    else:
        shard = "../elsewhere.safetensors" if how == "dotdot" else str(outside)
        index["weight_map"] = {k: shard if v == first else v for k, v in index["weight_map"].items()}
        index_path.write_text(json.dumps(index))
        match = "shard names must be relative file names inside the checkpoint folder"
    with pytest.raises(CheckpointError, match=match):
        load_pretrained(ckpt)


# --- a loaded model never depends on the file afterwards ---------------------------------
def test_loaded_arrays_own_their_memory(tmp_path, v1, v2):
    config, weights, _ = v1
    save_pretrained(tmp_path, config, weights)
    state = ck.read_safetensors(tmp_path / "model.safetensors")
    path = tmp_path / "model.safetensors"
    size = path.stat().st_size
    with open(path, "r+b") as f:  # rewrite in place (cp / rsync --inplace), then truncate
        f.seek(size // 2)
        f.write(b"\xff" * (size - size // 2))
        f.truncate(100)
    for name, arr in state.items():
        assert arr.base is None or not isinstance(arr.base, np.memmap)
        np.testing.assert_array_equal(arr, weights[name])


def test_torch_model_survives_file_rewrite_and_truncation(tmp_path, v1):
    torch = pytest.importorskip("torch")
    from encdec_torch import EncoderDecoderModel

    config, weights, _ = v1
    save_pretrained(tmp_path, config, weights)
    model = EncoderDecoderModel.from_pretrained(tmp_path)
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        before = model(input_ids=ids, decoder_input_ids=ids).logits
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x00" * 64)  # same inode, truncated: a mapped model would die of SIGBUS
    with torch.no_grad():
        after = model(input_ids=ids, decoder_input_ids=ids).logits
    assert torch.equal(before, after)


# --- loads racing saves ------------------------------------------------------------------
def _version_of(config, loaded, v1, v2):
    """1 or 2 when config and weights both come from that version; fails on a mix."""
    name = "decoder.transformer.h.0.attn.c_attn.weight"
    by_config = 2 if config.decoder_start_token_id == 5 else 1
    by_weights = 2 if np.array_equal(loaded[name], v2[1][name]) else 1
    assert np.array_equal(loaded[name], (v1, v2)[by_weights - 1][1][name])
    assert by_config == by_weights, f"config of version {by_config} with weights of version {by_weights}"
    return by_config


def test_save_between_config_and_weights_reads_one_version(tmp_path, v1, v2, monkeypatch):
    from encdec import pretrained

    save_pretrained(tmp_path / "c", v1[0], v1[1])
    real = pretrained._load_weight_files
    calls = []

    def racing(*args, **kwargs):  # a save lands after config.json was read
        if not calls:
            save_pretrained(tmp_path / "c", v2[0], v2[1])
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrained, "_load_weight_files", racing)
    config, loaded, _, _ = load_pretrained(tmp_path / "c")
    assert _version_of(config, loaded, v1, v2) in (1, 2)


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic-exchange", "two-renames"])
def test_loads_racing_a_saving_process(tmp_path, v1, v2, exchange):
    target = tmp_path / "c"
    save_pretrained(target, v1[0], v1[1])
    pid = os.fork()
    if pid == 0:  # saver: alternate the two versions
        try:
            if not exchange:  # a system without renameat2: the folder is briefly missing
                ck._exchange = lambda a, b: False
            for i in range(40):
                v = (v1, v2)[i % 2]
                save_pretrained(target, v[0], v[1])
        finally:
            os._exit(0)
    seen = set()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            config, loaded, _, _ = load_pretrained(target)
            seen.add(_version_of(config, loaded, v1, v2))
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                pid = None
                break
    finally:
        if pid:
            os.waitpid(pid, 0)
    assert seen


# --- SIGKILL at each step of a save ------------------------------------------------------
def _run_child(fn) -> int:
    """Run ``fn`` in a forked child; returns its wait status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException as err:  # the parent reads the message from the exit code only
            print(f"child error: {type(err).__name__}: {err}", flush=True)
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _killed(status) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


CRASH_POINTS = ["mid-weights", "before-swap", "after-swap", "between-renames"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_during_save_never_loses_the_checkpoint(tmp_path, v1, v2, point):
    target = tmp_path / "ckpt"
    save_pretrained(target, v1[0], v1[1], max_shard_size="100KB")

    def crashing_save():
        if point == "mid-weights":
            real = ck.write_safetensors
            count = []

            def half(path, w, metadata=None):
                count.append(1)
                if len(count) == 2:
                    with open(path, "wb") as f:
                        f.write(b"\x00" * 100)
                    _die()
                real(path, w, metadata)

            ck.write_safetensors = half
        elif point in ("before-swap", "after-swap"):
            real_exchange = ck._exchange

            def exchange(a, b):
                if point == "before-swap":
                    _die()
                done = real_exchange(a, b)
                _die()
                return done

            ck._exchange = exchange
        else:  # no atomic exchange on this system: killed between the two renames
            ck._exchange = lambda a, b: False
            real_rename = os.rename

            def rename(src, dst):
                real_rename(src, dst)
                if os.path.basename(str(dst)).startswith(".old-"):
                    _die()

            os.rename = rename
        save_pretrained(target, v2[0], v2[1], max_shard_size="100KB")

    assert _killed(_run_child(crashing_save))
    config, loaded, _, _ = load_pretrained(target)  # a complete checkpoint, old or new
    version = _version_of(config, loaded, v1, v2)
    assert version == (2 if point == "after-swap" else 1)
    save_pretrained(target, v2[0], v2[1])  # the next save removes the killed save's folders
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert _version_of(*load_pretrained(target)[:2], v1, v2) == 2


def test_concurrent_saves_both_succeed_last_wins(tmp_path, v1, v2):
    target = tmp_path / "ckpt"
    save_pretrained(target, v1[0], v1[1])
    holding = tmp_path.parent / f"{tmp_path.name}-holding"  # outside tmp_path: its listing is checked
    from encdec import pretrained

    real_write = pretrained.write_weights

    def save(v, first):
        def slow(*args, **kwargs):
            if first:  # holds the lock now: let the second saver start, give it time to block
                holding.write_text("1")
                time.sleep(0.3)
            return real_write(*args, **kwargs)

        pretrained.write_weights = slow
        save_pretrained(target, v[0], v[1])

    pids = []
    for v, first in ((v2, True), (v1, False)):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                save(v, first)
            except BaseException as err:
                print(f"child error: {type(err).__name__}: {err}", flush=True)
                code = 3
            os._exit(code)
        pids.append(pid)
        deadline = time.monotonic() + 30
        while first and not holding.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
    statuses = [os.waitpid(p, 0)[1] for p in pids]
    assert holding.exists()
    assert all(os.WIFEXITED(s) and os.WEXITSTATUS(s) == 0 for s in statuses), statuses
    assert _version_of(*load_pretrained(target)[:2], v1, v2) == 1  # the second save ran last
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


# --- where a save goes, and what it may not do ------------------------------------------
def test_save_in_another_format_replaces_the_old_weights(tmp_path, v1, v2):
    """The old model.safetensors, read before flax_model.msgpack, used to survive a msgpack
    save: the load then gave the new config with the old weights."""
    save_pretrained(tmp_path / "c", v1[0], v1[1], max_shard_size="100KB")
    (tmp_path / "c" / "tokenizer.json").write_text("{}")
    save_pretrained(tmp_path / "c", v2[0], v2[1], format="flax-msgpack")
    assert sorted(os.listdir(tmp_path / "c")) == ["config.json", "flax_model.msgpack", "tokenizer.json"]
    assert _version_of(*load_pretrained(tmp_path / "c")[:2], v1, v2) == 2


def test_save_through_symlink_updates_its_target(tmp_path, v1, v2):
    real = tmp_path / "real"
    save_pretrained(real, v1[0], v1[1])
    os.symlink("real", tmp_path / "link")
    save_pretrained(tmp_path / "link", v2[0], v2[1])
    assert os.path.islink(tmp_path / "link") and os.readlink(tmp_path / "link") == "real"
    assert _version_of(*load_pretrained(real)[:2], v1, v2) == 2


def test_write_protected_folder_refused(tmp_path, v1, v2):
    target = tmp_path / "ro"
    save_pretrained(target, v1[0], v1[1])
    os.chmod(target, 0o555)
    try:
        with pytest.raises(PermissionError, match=r"ro is write-protected"):
            save_pretrained(target, v2[0], v2[1])
    finally:
        os.chmod(target, 0o755)
    assert _version_of(*load_pretrained(target)[:2], v1, v2) == 1


def test_mount_point_refused_before_copying(tmp_path, v1, monkeypatch):
    """`encdec convert SRC / --force` used to hard-link a copy of the whole file system into
    /.tmp--XXXX before trying to swap "/": a root or mount point is refused up front."""
    target = tmp_path / "volume"
    target.mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == str(target))
    with pytest.raises(ValueError, match=r"volume is a file-system root or mount point"):
        save_pretrained(target, v1[0], v1[1])
    assert os.listdir(tmp_path) == ["volume"] and not os.listdir(target)


def test_adapter_save_atomic_with_plain_permissions(tmp_path, monkeypatch):
    from .test_adapters_core import pair_config

    old_mask = os.umask(0o022)
    try:
        sites = adapter_sites(pair_config(), "x", SeqBnConfig())
        first, second = (init_adapter_weights(sites, SeqBnConfig(), seed=s) for s in (1, 2))
        save_adapter_files(tmp_path / "a", "x", SeqBnConfig(), first)
        modes = {f: stat.S_IMODE(os.stat(tmp_path / "a" / f).st_mode) for f in os.listdir(tmp_path / "a")}
        assert set(modes.values()) == {0o644}, modes
        real = ck.write_safetensors

        def failing(path, w, metadata=None):
            real(path, w, metadata)
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ck, "write_safetensors", failing)
        with pytest.raises(OSError):
            save_adapter_files(tmp_path / "a", "y", SeqBnConfig(reduction_factor=4), second)
        monkeypatch.undo()
        name, config, loaded = load_adapter_files(tmp_path / "a")
        assert (name, config) == ("x", SeqBnConfig())
        assert all(np.array_equal(loaded[k], first[k]) for k in first)
        assert sorted(os.listdir(tmp_path)) == ["a"]
    finally:
        os.umask(old_mask)


@pytest.mark.parametrize("fmt,name", [("safetensors", "model.safetensors"), ("pt-bin", "pytorch_model.bin"),
                                      ("tf-h5", "tf_model.h5"), ("flax-msgpack", "flax_model.msgpack")])
def test_write_error_names_file_and_keeps_old_checkpoint(tmp_path, v1, v2, fmt, name):
    if fmt == "pt-bin":
        pytest.importorskip("torch")
    target = tmp_path / "ckpt"
    save_pretrained(target, v1[0], v1[1])
    out = tmp_path / "child.txt"

    def limited_save():
        # a file-size limit: writes past 20 kB fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        try:
            save_pretrained(target, v2[0], v2[1], format=fmt)
        except OSError as err:
            out.write_text(str(err))
            return
        out.write_text("no error")

    status = _run_child(limited_save)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status  # no crash
    message = out.read_text()
    assert "could not write" in message and name in message, message
    assert _version_of(*load_pretrained(target)[:2], v1, v2) == 1
    assert sorted(os.listdir(tmp_path)) == ["child.txt", "ckpt"]


def test_part_checkpoint_nonfinite_opt_out(tmp_path):
    from encdec import configuration as C
    from encdec.init import init_weights
    from encdec.pretrained import load_part
    from encdec.specs import encoder_spec

    from .tiny import part_kwargs

    config = C.config_class_for("bert")(**part_kwargs("bert"))
    weights = init_weights(encoder_spec(config), seed=0)
    weights["embeddings.LayerNorm.bias"][2] = np.inf
    config.save_pretrained(tmp_path)
    ck.write_safetensors(tmp_path / "model.safetensors", weights)
    with pytest.raises(CheckpointError, match="NaN or infinite values in 1 tensors: embeddings.LayerNorm.bias"):
        load_part(tmp_path, "encoder")
    part = load_part(tmp_path, "encoder", {"allow_nonfinite_weights": True})
    assert np.isposinf(part.weights["embeddings.LayerNorm.bias"][2])
    assert not hasattr(part.config, "allow_nonfinite_weights")
    torch_backend = pytest.importorskip("encdec_torch")
    with pytest.raises(CheckpointError, match="embeddings.LayerNorm.bias"):
        torch_backend.EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path, tmp_path)
    model = torch_backend.EncoderDecoderModel.from_encoder_decoder_pretrained(
        tmp_path, tmp_path, encoder_allow_nonfinite_weights=True, decoder_allow_nonfinite_weights=True)
    assert np.isposinf(model.canonical_state()["encoder.embeddings.LayerNorm.bias"][2])


def test_shard_holding_weights_of_another_shard_refused(tmp_path, v1):
    config, weights, _ = v1
    save_pretrained(tmp_path, config, weights, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    foreign = next(k for k, v in index["weight_map"].items() if v == shards[1])
    state = ck.read_safetensors(tmp_path / shards[0])
    state[foreign] = np.zeros_like(weights[foreign])  # a second, conflicting copy
    ck.write_safetensors(tmp_path / shards[0], state)
    with pytest.raises(CheckpointError, match=rf"assigns to other shards: \['{foreign}'\]"):
        load_pretrained(tmp_path)


def test_h5_external_link_refused(tmp_path, v1):
    h5py = pytest.importorskip("h5py")
    config, weights, _ = v1
    save_pretrained(tmp_path / "c", config, weights, format="tf-h5")
    path = tmp_path / "c" / "tf_model.h5"
    with h5py.File(path, "r+") as f:
        group = f["encoder"]
        name = next(n for n in (v.decode() if isinstance(v, bytes) else v for v in group.attrs["weight_names"]) if "pooler" in n)
        data = np.asarray(group[name])
        with h5py.File(tmp_path / "outside.h5", "w") as other:
            other["w"] = data
        del group[name]
        group[name] = h5py.ExternalLink(str(tmp_path / "outside.h5"), "w")
    with pytest.raises(CheckpointError, match=r"tf_model.h5: weight .*pooler.* is a ExternalLink"):
        load_pretrained(tmp_path / "c")


def test_h5_weight_stored_twice(tmp_path):
    """Keras saves a tied weight under every layer holding it (transformers' TF MLM heads):
    equal copies read as one weight; copies that differ are refused, naming the weight."""
    h5py = pytest.importorskip("h5py")
    from encdec.formats.tf_h5 import read_tf_h5

    def write(second):
        with h5py.File(tmp_path / "tf_model.h5", "w") as f:
            f.attrs["layer_names"] = [b"a", b"b"]
            for layer, value in (("a", np.ones((2, 3), np.float32)), ("b", second)):
                f.create_dataset(f"{layer}/{layer}/emb/weight:0", data=value)
                f[layer].attrs["weight_names"] = [f"{layer}/emb/weight:0".encode()]

    write(np.ones((2, 3), np.float32))
    assert list(read_tf_h5(tmp_path / "tf_model.h5")) == ["emb.weight"]
    write(np.zeros((2, 3), np.float32))
    with pytest.raises(CheckpointError, match=r"two datasets of different values hold weight 'emb.weight'"):
        read_tf_h5(tmp_path / "tf_model.h5")


def test_adapter_weights_checked_like_checkpoints(tmp_path):
    from .test_adapters_core import pair_config

    sites = adapter_sites(pair_config(), "x", SeqBnConfig())
    weights = init_adapter_weights(sites, SeqBnConfig(), seed=1)
    name = sorted(weights)[0]
    save_adapter_files(tmp_path, "x", SeqBnConfig(), {**weights, name: weights[name].view(np.int32)})
    with pytest.raises(CheckpointError, match=rf"non-float adapter weights: \['{name}'\]"):
        load_adapter_files(tmp_path)
    bad = weights[name].copy()
    bad.flat[0] = np.nan
    save_adapter_files(tmp_path, "x", SeqBnConfig(), {**weights, name: bad})
    with pytest.raises(CheckpointError, match=rf"NaN or infinite values in 1 tensors: {name}"):
        load_adapter_files(tmp_path)


def test_deeply_nested_header_and_malformed_chunks_named(tmp_path):
    path = tmp_path / "model.safetensors"
    text = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    with pytest.raises(CheckpointError, match="model.safetensors is not a valid safetensors file: bad header"):
        ck.read_safetensors(path)
    msgpack = pytest.importorskip("msgpack")
    from encdec.formats.flax_msgpack import read_flax_msgpack

    bad = tmp_path / "flax_model.msgpack"
    bad.write_bytes(msgpack.packb({"w": {"__msgpack_chunked_array__": True, "shape": {"0": 2}, "chunks": {"1": 0}}}))
    with pytest.raises(CheckpointError, match="flax_model.msgpack: malformed chunked array"):
        read_flax_msgpack(bad)


def test_pt_bin_entries_sharing_storage_get_own_memory(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(8, dtype=torch.float32)
    torch.save({"a": base[:4], "b": base[2:6]}, tmp_path / "pytorch_model.bin")  # overlapping views
    state = ck.read_pt_bin(tmp_path / "pytorch_model.bin")
    assert not np.shares_memory(state["a"], state["b"])
    np.testing.assert_array_equal(state["b"], [2, 3, 4, 5])


def test_killed_single_file_writes_not_carried_over(tmp_path, v1):
    config, weights, _ = v1
    save_pretrained(tmp_path / "c", config, weights)
    (tmp_path / "c" / ".tmp-ab12cd34-config.json").write_text("{")  # a killed atomic_write
    (tmp_path / "c" / "tokenizer.json").write_text("{}")
    save_pretrained(tmp_path / "c", config, weights)
    assert sorted(os.listdir(tmp_path / "c")) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_weight_files_that_inflate_or_mislead_refused(tmp_path):
    """A tiny file declaring huge tensors (h5 fill-value or gzip dataset, compressed zip
    entries in pytorch_model.bin), a tree with two leaves of one name or nested a thousand
    deep (flax msgpack), and sparse/meta tensors fail with the file named, before any
    large allocation."""
    h5py, msgpack, torch = (pytest.importorskip(m) for m in ("h5py", "msgpack", "torch"))
    from encdec.formats.flax_msgpack import read_flax_msgpack
    from encdec.formats.tf_h5 import read_tf_h5

    with h5py.File(tmp_path / "tf_model.h5", "w") as f:
        group = f.create_group("l")
        f.attrs["layer_names"] = [b"l"]
        group.attrs["weight_names"] = [b"w:0"]
        group.create_dataset("w:0", shape=(200_000, 100_000), dtype="f4", chunks=(1000, 1000), compression="gzip")
    with pytest.raises(CheckpointError, match=r"tf_model.h5: weight 'w:0' declares 80000000000 bytes .* stores"):
        read_tf_h5(tmp_path / "tf_model.h5")

    torch.save({"w": torch.zeros(4)}, tmp_path / "plain.bin")
    with zipfile.ZipFile(tmp_path / "plain.bin") as src, zipfile.ZipFile(tmp_path / "pytorch_model.bin", "w", zipfile.ZIP_DEFLATED) as dst:
        for entry in src.infolist():
            dst.writestr(entry.filename, src.read(entry.filename))
    with pytest.raises(CheckpointError, match="pytorch_model.bin holds compressed entries"):
        ck.read_pt_bin(tmp_path / "pytorch_model.bin")
    torch.save({"w": torch.zeros(4, 4).to_sparse()}, tmp_path / "sparse.bin")
    with pytest.raises(CheckpointError, match=r"sparse.bin: entry 'w' is a torch.sparse_coo tensor"):
        ck.read_pt_bin(tmp_path / "sparse.bin")

    leaf = msgpack.ExtType(1, msgpack.packb(([2], "float32", bytes(8))))
    (tmp_path / "dup.msgpack").write_bytes(msgpack.packb({"a.b": leaf, "a": {"b": leaf}}))
    with pytest.raises(CheckpointError, match="dup.msgpack: two leaves of the parameter tree are both named 'a.b'"):
        read_flax_msgpack(tmp_path / "dup.msgpack")
    (tmp_path / "deep.msgpack").write_bytes(b"\x81\xa1a" * 1000 + msgpack.packb({"x": leaf}))
    with pytest.raises(CheckpointError, match="deep.msgpack: the parameter tree is nested too deeply"):
        read_flax_msgpack(tmp_path / "deep.msgpack")
