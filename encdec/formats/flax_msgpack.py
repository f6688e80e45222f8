"""``flax_model.msgpack`` in Hugging Face Flax naming, with the ``msgpack`` package alone.

HF's Flax parameter tree is the canonical name split on ``.``; ``kernel`` leaves are the
transposed PyTorch weights (linear ``[in, out]``; GPT-2 conv1d ``[out, in]``), norms use
``scale``/``bias``, embeddings ``embedding``, and tie targets are absent.

Encoding (flax.serialization): nested maps; an array is msgpack ext type 1 whose data is
the msgpack of ``(shape, dtype name, C-order bytes)`` (ext type 3: numpy scalar); arrays
over 2**30 bytes are written as ``{"__msgpack_chunked_array__": True, "shape": {"0": ..},
"chunks": {"0": flat part, ..}}``.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from encdec.checkpoint import CheckpointError, _bf16_to_float32, write_bytes
from encdec.layout import Layout
from encdec.specs import BIAS, CONV1D, EMBEDDING, LINEAR, NORM_BIAS, NORM_SCALE, ModelSpec

#: HF Flax leaf names and transposes per parameter kind.
HF_FLAX_LAYOUT = Layout(
    leaf={LINEAR: "kernel", CONV1D: "kernel", EMBEDDING: "embedding", NORM_SCALE: "scale", NORM_BIAS: "bias", BIAS: "bias"},
    transpose=frozenset({LINEAR, CONV1D}),
)
_TO_TORCH_LEAF = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}

_EXT_NDARRAY, _EXT_SCALAR = 1, 3
_MAX_CHUNK_BYTES = 2**30
_CHUNKED = "__msgpack_chunked_array__"


def _import_msgpack(path: str):
    try:
        import msgpack
    except ImportError:
        raise ImportError(f"reading or writing {path} needs the msgpack package (pip install msgpack)") from None
    return msgpack


def _decode_array(msgpack, data: bytes) -> np.ndarray:
    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    if not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"array shape {shape!r} is not a list of non-negative integers")
    name = dtype_name.decode()
    if name == "bfloat16":
        return _bf16_to_float32(np.frombuffer(buffer, dtype="<u2")).reshape(shape)
    return np.frombuffer(buffer, dtype=np.dtype(name)).reshape(shape).copy()


def _unchunk(tree: Any) -> Any:
    if not isinstance(tree, dict):
        return tree
    if tree.get(_CHUNKED):
        shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
        chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
        return np.concatenate(chunks).reshape(shape)
    return {k: _unchunk(v) for k, v in tree.items()}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        for flat, leaf in (_flatten(value, name + ".") if isinstance(value, dict) else {name: value}).items():
            if flat in out:  # {"a.b": x, "a": {"b": y}}: two leaves, one name
                raise CheckpointError(f"two leaves of the parameter tree are both named {flat!r}")
            out[flat] = leaf
    return out


def read_flax_msgpack(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Canonical-named weights (kernels transposed back) of an HF ``flax_model.msgpack``."""
    path = os.fspath(path)
    msgpack = _import_msgpack(path)

    def ext_hook(code: int, data: bytes) -> Any:
        if code == _EXT_NDARRAY:
            return _decode_array(msgpack, data)
        if code == _EXT_SCALAR:
            return _decode_array(msgpack, data)[()]
        raise CheckpointError(f"{path}: unsupported msgpack extension type {code}")

    with open(path, "rb") as f:
        raw = f.read()
    try:
        tree = msgpack.unpackb(raw, ext_hook=ext_hook, raw=False, strict_map_key=False)
    except CheckpointError:
        raise
    except Exception as err:  # msgpack raises several unrelated types for bad bytes
        raise CheckpointError(f"{path} is not a valid flax msgpack file (truncated or corrupt): "
                              f"{type(err).__name__}: {err}") from None
    if not isinstance(tree, dict):
        raise CheckpointError(f"{path} does not hold a parameter tree (got {type(tree).__name__})")
    try:
        tree = _unchunk(tree)
        flat = _flatten(tree["params"] if set(tree) == {"params"} else tree)
    except RecursionError:
        raise CheckpointError(f"{path}: the parameter tree is nested too deeply to be a model's") from None
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: malformed chunked array in the parameter tree ({type(err).__name__}: {err})") from None
    out = {}
    for name, value in flat.items():
        if not isinstance(value, np.ndarray):
            raise CheckpointError(f"{path}: leaf {name!r} is a {type(value).__name__}, not an array")
        module, _, leaf = name.rpartition(".")
        if leaf == "kernel" and value.ndim == 2:
            value = value.T
        torch_leaf = _TO_TORCH_LEAF.get(leaf, leaf)
        out[f"{module}.{torch_leaf}" if module else torch_leaf] = np.ascontiguousarray(value)
    return out


def _encode_array(msgpack, arr: np.ndarray) -> Any:
    if arr.nbytes > _MAX_CHUNK_BYTES:
        per = max(1, _MAX_CHUNK_BYTES // arr.dtype.itemsize)
        flat = arr.reshape(-1)
        chunks = [flat[i:i + per] for i in range(0, flat.size, per)]
        return {
            _CHUNKED: True,
            "shape": {str(i): int(s) for i, s in enumerate(arr.shape)},
            "chunks": {str(i): msgpack.ExtType(_EXT_NDARRAY, _pack_array(msgpack, c)) for i, c in enumerate(chunks)},
        }
    return msgpack.ExtType(_EXT_NDARRAY, _pack_array(msgpack, arr))


def _pack_array(msgpack, arr: np.ndarray) -> bytes:
    return msgpack.packb((list(arr.shape), arr.dtype.name, np.ascontiguousarray(arr).tobytes("C")), use_bin_type=True)


def write_flax_msgpack(path: str | os.PathLike, weights: Mapping[str, np.ndarray], spec: ModelSpec) -> None:
    """Write canonical ``weights`` (already without tie duplicates) as an HF
    ``flax_model.msgpack``; ``spec`` gives each name's kind."""
    path = os.fspath(path)
    msgpack = _import_msgpack(path)
    tree: dict[str, Any] = {}
    for name, arr in weights.items():
        kind = spec[name].kind
        arr = np.asarray(arr)
        if kind in HF_FLAX_LAYOUT.transpose and arr.ndim == 2:
            arr = arr.T
        node = tree
        *modules, leaf = HF_FLAX_LAYOUT.backend_name(name, kind).split(".")
        for m in modules:
            node = node.setdefault(m, {})
        node[leaf] = _encode_array(msgpack, arr)
    write_bytes(path, [msgpack.packb(tree, use_bin_type=True)])
