"""Reading and writing canonical weights ``{HF PyTorch state-dict name: np.ndarray}``.

Formats: ``model.safetensors`` (sharded above ``max_shard_size`` with
``model.safetensors.index.json``), ``pytorch_model.bin`` (torch, ``weights_only=True``
only), ``tf_model.h5`` (h5py, HF TF naming) and ``flax_model.msgpack`` (msgpack, HF Flax
naming).  Only numpy and safetensors are imported here; torch, h5py and msgpack are
imported inside the functions that need them.

dtypes: numpy has no bfloat16, so bf16 tensors are widened to float32 exactly
(the bf16 bits are the top 16 bits of the float32); :func:`safetensors_dtypes` tells the
original dtype of each tensor without reading the data.
"""
from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import re
import shutil
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from encdec._io_utils import default_mode, writing
from encdec.specs import ModelSpec

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
PT_WEIGHTS_NAME = "pytorch_model.bin"
PT_WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
TF_WEIGHTS_NAME = "tf_model.h5"
FLAX_WEIGHTS_NAME = "flax_model.msgpack"

#: format -> the files that hold it (single file, shard index), in loading priority order.
FORMAT_FILES = {
    "safetensors": (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME),
    "pt-bin": (PT_WEIGHTS_NAME, PT_WEIGHTS_INDEX_NAME),
    "tf-h5": (TF_WEIGHTS_NAME,),
    "flax-msgpack": (FLAX_WEIGHTS_NAME,),
}

#: Weight files in loading priority order (an index stands for its shards).
WEIGHT_FILES = tuple(f for files in FORMAT_FILES.values() for f in files)

#: ``format`` argument of :func:`write_weights` -> the file it writes when unsharded.
FORMATS = {fmt: files[0] for fmt, files in FORMAT_FILES.items()}

#: Files of a weight save of each format, in loading priority order (see :func:`format_files`).
_FORMAT_PATTERNS = {
    "safetensors": re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$"),
    "pt-bin": re.compile(r"pytorch_model(-\d{5}-of-\d{5})?\.bin(\.index\.json)?$"),
    "tf-h5": re.compile(r"tf_model(-\d{5}-of-\d{5})?\.h5(\.index\.json)?$"),
    "flax-msgpack": re.compile(r"flax_model(-\d{5}-of-\d{5})?\.msgpack(\.index\.json)?$"),
}


class CheckpointError(ValueError):
    """A weight file is unreadable (truncated, corrupt, wrong content)."""


@dataclass
class LoadReport:
    """What :func:`match_state` found: names missing from the checkpoint, names the spec
    does not know, ``(name, expected shape, checkpoint shape)`` mismatches, and tie
    targets filled from their source."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 20) -> str:
        lines = []
        for title, items in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", [f"{n}: expected {e}, checkpoint has {g}" for n, e, g in self.mismatched]),
        ):
            if items:
                shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
                lines.append(f"{len(items)} {title}: {shown}")
        return "\n".join(lines) if lines else "all weights matched"


class LoadError(ValueError):
    """Checkpoint weights do not match the model's spec; ``report`` has the details."""

    def __init__(self, message: str, report: LoadReport) -> None:
        super().__init__(message)
        self.report = report


# --- sizes -------------------------------------------------------------------------------
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like ``"5GB"``, ``"500MB"``, ``"10KiB"`` (HF units)."""
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise TypeError(f"max_shard_size must be an int (bytes) or a string like '5GB', got {size!r}")
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"max_shard_size must be positive, got {size}")
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)\s*", size.upper())
    if not m:
        raise ValueError(f"max_shard_size {size!r} is not a size like '5GB', '500MB' or '10KiB'")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


# --- safetensors ---------------------------------------------------------------------------
#: safetensors dtype -> numpy dtype (little-endian, as the format stores them).
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
#: The safetensors library refuses headers above this size (100 MB).
_MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class _TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CheckpointError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_safetensors_header(path: str, f: Any) -> tuple[dict[str, Any], list[_TensorEntry], int]:
    """Validate the header of an open safetensors file at least as strictly as the
    ``safetensors`` library: header size and JSON, known dtypes, integer shapes and
    offsets, byte spans equal to shape x dtype size, tensors covering the data area
    exactly (no overlap, no gap, no trailing bytes).  Returns ``(metadata, tensors sorted
    by offset, data start)``."""
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path} is not a valid safetensors file: {why}")

    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    if len(head) < 8:
        raise CheckpointError(f"{path} is truncated: no safetensors header")
    n = int.from_bytes(head, "little")
    if n > _MAX_HEADER_BYTES:
        raise bad(f"header of {n} bytes (the limit is {_MAX_HEADER_BYTES})")
    if n > size - 8:
        raise CheckpointError(f"{path} is truncated or not a safetensors file (header of {n} bytes, file of {size})")
    raw = f.read(n)
    try:
        text = raw.decode("utf-8")
        if not text.startswith("{"):
            raise bad("bad header (it does not start with '{')")
        header = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except CheckpointError as err:
        if str(err).startswith(path):
            raise
        raise bad(f"bad header ({err})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise bad(f"bad header ({err})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise bad("'__metadata__' must map strings to strings")
    entries = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            if not isinstance(info, dict) or info["dtype"] not in _ST_DTYPES:
                raise ValueError
            shape, offsets = info["shape"], info["data_offsets"]
            if not isinstance(shape, list) or not isinstance(offsets, list) or len(offsets) != 2:
                raise ValueError
            if not all(type(d) is int and d >= 0 for d in [*shape, *offsets]):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise bad(f"bad header entry for {name!r}: {info!r} (needs dtype among {', '.join(_ST_DTYPES)}, "
                      "a shape and two data_offsets, all non-negative integers)") from None
        entries.append(_TensorEntry(name, info["dtype"], tuple(shape), offsets[0], offsets[1]))
    entries.sort(key=lambda e: (e.begin, e.end))
    position = 0
    for e in entries:
        if e.begin != position or e.end < e.begin:
            what = "overlaps the previous tensor" if e.begin < position else "leaves a gap before it" if e.begin > position else "ends before it begins"
            raise bad(f"tensor {e.name!r} at bytes [{e.begin}, {e.end}) {what}; tensors must tile the data area")
        count = 1
        for d in e.shape:
            count *= d
        need = count * np.dtype(_ST_DTYPES[e.dtype]).itemsize
        if e.end - e.begin != need:
            raise bad(f"tensor {e.name!r} spans {e.end - e.begin} bytes, its shape {e.shape} and dtype {e.dtype} need {need}")
        position = e.end
    data_start = 8 + n
    if data_start + position > size:
        last = entries[-1].name if entries else "the data"
        raise CheckpointError(f"{path} is truncated: {last!r} ends at byte {data_start + position}, the file has {size}")
    if data_start + position < size:
        raise bad(f"{size - data_start - position} bytes of trailing data after the last tensor")
    return metadata, entries, data_start


def _safetensors_header(path: str) -> tuple[dict[str, Any], int]:
    """The JSON header (validated) and the offset where tensor data starts."""
    with open(path, "rb") as f:
        metadata, entries, data_start = _parse_safetensors_header(path, f)
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    for e in entries:
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [e.begin, e.end]}
    return header, data_start


def safetensors_dtypes(path: str | os.PathLike) -> dict[str, str]:
    """``{name: safetensors dtype string}`` (``"F32"``, ``"BF16"``, ...) from the header only."""
    header, _ = _safetensors_header(os.fspath(path))
    return {k: v["dtype"] for k, v in header.items() if k != "__metadata__"}


def _bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _owned_buffer(nbytes: int) -> np.ndarray:
    """``nbytes`` of writable anonymous memory for a file's data: private to the process, not
    backed by any file.  An anonymous mapping rather than ``np.empty``: numpy asks the kernel
    for transparent huge pages on large arrays, and faulting those in (page compaction) made
    a 1 GB read cost about 1.6x the CPU time of base pages where measured
    (docs/performance.md)."""
    return np.frombuffer(mmap.mmap(-1, nbytes), np.uint8) if nbytes else np.empty(0, np.uint8)


def aligned_empty(shape: tuple, dtype: Any, alignment: int = 64) -> np.ndarray:
    """An uninitialised array whose data starts on an ``alignment``-byte boundary: the
    alignment TF (Eigen) and XLA's CPU client need to take host memory as a tensor without
    copying it again (``np.empty`` guarantees only 16 bytes)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)


#: the least bytes worth a reader thread of their own (below, one sequential read is as fast)
READ_BYTES_PER_THREAD = 64 << 20


def _read_into(f: Any, view: memoryview, offset: int) -> int:
    """Fill ``view`` from byte ``offset`` of the open file ``f``; returns the bytes read
    (fewer only when the file is shorter).  Large reads are split between threads doing
    positional reads (the GIL is released): most of the time of a read from the page cache
    goes to faulting in the fresh buffer's pages, which the cores then share.  A 1 GB read
    on the 2-core benchmark machine: 0.49 s with two threads against 0.9 s with one."""
    total = len(view)

    def fill(lo: int, hi: int) -> int:
        got = lo
        while got < hi:  # a single call may return less (2 GiB cap per read on Linux)
            n = os.preadv(f.fileno(), [view[got:hi]], offset + got)
            if not n:
                break
            got += n
        return got - lo

    if not hasattr(os, "preadv"):  # no positional reads: one sequential read
        f.seek(offset)
        got = 0
        while got < total and (n := f.readinto(view[got:])):
            got += n
        return got
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(cpus, 8, total // READ_BYTES_PER_THREAD))
    if workers == 1:
        return fill(0, total)
    cuts = [total * i // workers for i in range(workers + 1)]
    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(fill, cuts[:-1], cuts[1:]))


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of one ``.safetensors`` file, validated (see
    :func:`_parse_safetensors_header`) and read into memory this process owns: the arrays
    never depend on the file afterwards (rewriting or truncating it changes nothing).
    bf16 is widened to float32 exactly."""
    path = os.fspath(path)
    with open(path, "rb", buffering=0) as f:
        _, entries, data_start = _parse_safetensors_header(path, f)
        total = entries[-1].end if entries else 0
        buffer = _owned_buffer(total)
        got = _read_into(f, memoryview(buffer), data_start)
        if got != total:
            raise CheckpointError(f"{path} is truncated: read {got} of {total} data bytes (file changed while reading?)")
    out: dict[str, np.ndarray] = {}
    for e in entries:
        arr = buffer[e.begin:e.end].view(_ST_DTYPES[e.dtype]).reshape(e.shape)
        if not arr.flags.aligned:  # a hand-made file may misalign a tensor: give it its own copy
            arr = arr.copy()
        out[e.name] = _bf16_to_float32(arr) if e.dtype == "BF16" else arr
    return out


def write_bytes(path: str, chunks: Iterable[Any]) -> None:
    """Write ``chunks`` (bytes-like) to ``path``; errors name the file."""
    with writing(path), open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def write_safetensors(path: str | os.PathLike, weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write ``weights`` with metadata ``{"format": "pt"}`` (what transformers expects),
    streamed tensor by tensor (no second copy in memory); a write error names the file.
    Layout as the safetensors library writes it: tensors by alignment then name, header
    padded with spaces to a multiple of 8 bytes."""
    path = os.fspath(path)
    codes = {np.dtype(v).str: k for k, v in _ST_DTYPES.items() if k != "BF16"}
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    arrays = {k: v.astype(v.dtype.newbyteorder("<")) if v.dtype.byteorder == ">" else v for k, v in arrays.items()}
    header: dict[str, Any] = {"__metadata__": {"format": "pt", **(metadata or {})}}
    order = sorted(arrays, key=lambda k: (-arrays[k].dtype.itemsize, k))
    offset = 0
    for name in order:
        arr = arrays[name]
        code = codes.get(arr.dtype.str)
        if code is None:
            raise TypeError(f"cannot write tensor {name!r} of dtype {arr.dtype} to safetensors")
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    write_bytes(path, [len(text).to_bytes(8, "little"), text,
                       *(memoryview(arrays[n]).cast("B") for n in order if arrays[n].nbytes)])


# --- pytorch_model.bin --------------------------------------------------------------------
def _import_torch(path: str):
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading or writing {path} needs PyTorch, which is not installed; "
            "install it (pip install torch==2.13.0) or use model.safetensors"
        ) from None
    return torch


def read_pt_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``pytorch_model.bin`` state dict, loaded with ``torch.load(weights_only=True)``.

    Files holding anything but tensors (arbitrary pickled objects) are refused: this
    never unpickles with ``weights_only=False``.
    """
    import pickle

    path = os.fspath(path)
    torch = _import_torch(path)
    _refuse_compressed_zip(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled objects other than tensors, and this "
            f"library only unpickles with weights_only=True ({str(err).splitlines()[0]})"
        ) from None
    except Exception as err:  # torch raises many unrelated types for corrupt archives
        raise CheckpointError(f"cannot read PyTorch checkpoint {path}: {err}") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(state).__name__})")
    out = {}
    storages: set[int] = set()
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor")
        if tensor.layout != torch.strided or tensor.is_meta:
            raise CheckpointError(f"{path}: entry {name!r} is a {tensor.layout} tensor on {tensor.device}; "
                                  "only dense tensors holding data are weights")
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        storage = tensor.untyped_storage().data_ptr()
        try:
            arr = tensor.detach().cpu().numpy()
        except TypeError as err:  # a dtype numpy lacks (float8, ...)
            raise CheckpointError(f"{path}: entry {name!r} has dtype {tensor.dtype}, which cannot be read ({err})") from None
        # entries sharing one storage (tied or hostile views) get their own memory: a model
        # sharing loaded arrays must not alias two parameters
        out[name] = arr.copy() if storage in storages and arr.size else arr
        storages.add(storage)
    return out


def _refuse_compressed_zip(path: str) -> None:
    """``torch.save`` stores zip entries uncompressed; a compressed one could inflate a tiny
    file into terabytes (a zip bomb), so it is refused before anything is read."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            packed = [i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip (legacy format) or corrupt: torch.load names the problem
    if packed:
        raise CheckpointError(f"{path} holds compressed entries ({', '.join(packed[:3])}); torch.save never "
                              "writes them, and refusing them keeps a small file from inflating without bound")


def write_pt_bin(path: str | os.PathLike, weights: Mapping[str, np.ndarray]) -> None:
    """``torch.save`` of a ``{name: tensor}`` state dict."""
    path = os.fspath(path)
    torch = _import_torch(path)
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in weights.items()}
    with writing(path), open(path, "wb") as f:
        torch.save(state, f)


# --- sharding ------------------------------------------------------------------------------
def _read_index(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        weight_map = index["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a valid shard index (needs a 'weight_map'): {err}") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{path}: 'weight_map' must map weight names to shard files")
    return weight_map


def shard_files(index_path: str | os.PathLike) -> list[str]:
    """Shard file names listed in an index, in first-use order."""
    return list(dict.fromkeys(_read_index(os.fspath(index_path)).values()))


def _check_shard_name(shard: Any, index_path: str) -> None:
    """A shard name is a relative path inside the checkpoint folder (or Hub repo)."""
    parts = shard.split("/") if isinstance(shard, str) else []
    if (not parts or shard.startswith("/") or os.path.isabs(shard) or "\\" in shard or "\x00" in shard
            or any(p in ("", ".", "..") for p in parts)):
        raise CheckpointError(
            f"{index_path} lists shard {shard!r}: shard names must be relative file names inside the "
            "checkpoint folder (no '..', no absolute path)"
        )


def _check_shard_inside(path: str, shard: str, index_path: str) -> None:
    """The shard file, symlinks followed, lies in the index's folder (or, for a Hub cache
    snapshot whose files link to blobs, beside the file the index links to)."""
    real = os.path.realpath(path)
    roots = {os.path.realpath(os.path.dirname(index_path)), os.path.dirname(os.path.realpath(index_path))}
    if not any(real.startswith(root.rstrip(os.sep) + os.sep) for root in roots):
        raise CheckpointError(
            f"{index_path} lists shard {shard!r}, which resolves to {real}, outside the checkpoint folder; refusing to read it"
        )


def read_sharded(index_path: str | os.PathLike, resolve: Callable[[str], str] | None = None) -> dict[str, np.ndarray]:
    """All weights of a sharded checkpoint; ``resolve(shard name) -> local path``
    (default: next to the index).  A missing shard names the shard and the index; a shard
    named or linked outside the checkpoint folder is refused."""
    index_path = os.fspath(index_path)
    weight_map = _read_index(index_path)
    for shard in set(weight_map.values()):
        _check_shard_name(shard, index_path)
    folder = os.path.dirname(index_path)
    reader = read_pt_bin if index_path.endswith(PT_WEIGHTS_INDEX_NAME) else read_safetensors
    out: dict[str, np.ndarray] = {}
    for shard in dict.fromkeys(weight_map.values()):
        try:
            path = resolve(shard) if resolve else os.path.join(folder, shard)
            if not os.path.isfile(path):
                raise FileNotFoundError(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"shard {shard!r} listed in {index_path} is missing") from None
        _check_shard_inside(path, shard, index_path)
        part = reader(path)
        elsewhere = sorted(k for k in part if weight_map.get(k, shard) != shard)
        if elsewhere:
            raise CheckpointError(f"shard {path} holds {len(elsewhere)} weights its index {index_path} assigns to "
                                  f"other shards: {elsewhere[:5]}; refusing an ambiguous checkpoint")
        expected = {k for k, v in weight_map.items() if v == shard}
        if not expected <= set(part):
            lost = sorted(expected - set(part))
            raise CheckpointError(f"shard {path} lacks {len(lost)} weights its index {index_path} lists: {lost[:5]}")
        out.update(part)
    return out


def plan_shards(weights: Mapping[str, np.ndarray], max_shard_size: int | str, stem: str = "model", ext: str = "safetensors") -> dict[str, list[str]]:
    """``{shard file: [names]}`` filling shards in order up to ``max_shard_size`` bytes
    (a tensor larger than the limit gets a shard of its own), named as HF does."""
    limit = parse_size(max_shard_size)
    groups: list[list[str]] = [[]]
    size = 0
    for name, arr in weights.items():
        nbytes = np.asarray(arr).nbytes
        if groups[-1] and size + nbytes > limit:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    if len(groups) == 1:
        return {f"{stem}.{ext}": groups[0]}
    n = len(groups)
    return {f"{stem}-{i + 1:05d}-of-{n:05d}.{ext}": g for i, g in enumerate(groups)}


def write_sharded(folder: str, weights: Mapping[str, np.ndarray], max_shard_size: int | str, fmt: str = "safetensors") -> list[str]:
    """Write ``weights`` (safetensors or pt-bin) into ``folder``, sharded with an index
    when above ``max_shard_size``; returns the file names written."""
    stem, ext = FORMATS[fmt].split(".")
    writer = write_safetensors if fmt == "safetensors" else write_pt_bin
    plan = plan_shards(weights, max_shard_size, stem, ext)
    for shard, names in plan.items():
        writer(os.path.join(folder, shard), {n: weights[n] for n in names})
    written = list(plan)
    if len(plan) > 1:
        index = {
            "metadata": {"total_size": int(sum(np.asarray(v).nbytes for v in weights.values()))},
            "weight_map": {n: shard for shard, names in plan.items() for n in sorted(names)},
        }
        index["weight_map"] = dict(sorted(index["weight_map"].items()))
        index_name = FORMATS[fmt] + ".index.json"
        write_bytes(os.path.join(folder, index_name), [(json.dumps(index, indent=2, sort_keys=True) + "\n").encode()])
        written.append(index_name)
    return written


# --- whole checkpoints ---------------------------------------------------------------------
def read_weight_file(path: str | os.PathLike, resolve: Callable[[str], str] | None = None) -> dict[str, np.ndarray]:
    """Weights of one file, dispatched on its name; ``resolve(shard name) -> path``
    locates the shards of an index (default: beside it)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file {path} does not exist")
    base = os.path.basename(path)
    if base.endswith(".index.json"):
        return read_sharded(path, resolve)
    if base.endswith(".safetensors"):
        return read_safetensors(path)
    if base.endswith(".bin"):
        return read_pt_bin(path)
    if base.endswith(".h5"):
        from encdec.formats.tf_h5 import read_tf_h5

        return read_tf_h5(path)
    if base.endswith(".msgpack"):
        from encdec.formats.flax_msgpack import read_flax_msgpack

        return read_flax_msgpack(path)
    raise ValueError(f"unknown weight file type {path}; expected one of {', '.join(WEIGHT_FILES)}")


def load_state(source: str | os.PathLike | Sequence[str | os.PathLike]) -> dict[str, np.ndarray]:
    """Canonical-named weights from a folder (first format present in
    :data:`WEIGHT_FILES` order), one weight file, or a list of files merged."""
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if os.path.isdir(source):
            for name in WEIGHT_FILES:
                if os.path.isfile(os.path.join(source, name)):
                    return read_weight_file(os.path.join(source, name))
            raise FileNotFoundError(f"folder {source} has no weight file ({', '.join(WEIGHT_FILES)})")
        return read_weight_file(source)
    state: dict[str, np.ndarray] = {}
    for path in source:
        state.update(read_weight_file(path))
    return state


def match_state(state: Mapping[str, np.ndarray], spec: ModelSpec, strict: bool = True) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Check ``state`` against ``spec``: returns ``(weights, report)`` where ``weights``
    holds every spec name (tie groups filled from whichever member is present).

    With ``strict`` any missing, unexpected or mismatched name raises :class:`LoadError`;
    otherwise only missing and mismatched ones do (unexpected ones are listed and
    dropped).  Nothing is ever re-initialised here.
    """
    report = LoadReport()
    weights: dict[str, np.ndarray] = {}
    groups: dict[str, list[str]] = {}
    for tied, source in spec.ties.items():
        groups.setdefault(source, [source]).append(tied)
    for name, arr in state.items():
        if name not in spec:
            report.unexpected.append(name)
            continue
        arr = np.asarray(arr)
        expected = spec[name].shape
        if tuple(arr.shape) != expected:
            report.mismatched.append((name, expected, tuple(arr.shape)))
            continue
        weights[name] = arr
    for source, members in groups.items():
        present = [m for m in members if m in weights]
        if present:
            for m in members:
                if m not in weights:
                    weights[m] = weights[present[0]]
                    report.tied.append(m)
    bad = {n for n, _, _ in report.mismatched}
    report.missing = [p.name for p in spec if p.name not in weights and p.name not in bad]
    if report.missing or report.mismatched or (strict and report.unexpected):
        raise LoadError(f"checkpoint does not match the model:\n{report.describe()}", report)
    check_dtypes(weights, spec)
    return {p.name: weights[p.name] for p in spec}, report


def check_dtypes(weights: Mapping[str, np.ndarray], spec: ModelSpec) -> None:
    """Every spec parameter kind is floating point: an integer or boolean tensor in its
    place is an error naming it (float16, bfloat16 and float64 are cast by the backends)."""
    wrong = [f"{n} ({np.asarray(a).dtype}, a {spec[n].kind} parameter)" for n, a in weights.items()
             if n in spec and np.asarray(a).dtype.kind != "f"]
    if wrong:
        more = f", ... ({len(wrong) - 10} more)" if len(wrong) > 10 else ""
        raise CheckpointError(f"{len(wrong)} checkpoint tensors are not floating point where the model needs "
                              f"float weights: {', '.join(wrong[:10])}{more}")


def check_finite(weights: Mapping[str, np.ndarray], where: str, allow: bool = False) -> None:
    """Refuse weights holding NaN or infinity, naming the tensors (``allow=True``:
    the caller's opt-out, ``allow_nonfinite_weights=True``)."""
    if allow:
        return
    bad = []
    seen: set[int] = set()
    for name, arr in weights.items():
        arr = np.asarray(arr)
        if arr.dtype.kind != "f" or id(arr) in seen:
            continue
        seen.add(id(arr))
        with np.errstate(over="ignore", invalid="ignore"):
            total = arr.sum()
        if np.isfinite(total):  # one pass, no temporary; NaN/inf always make the sum non-finite
            continue
        flat = arr.reshape(-1)  # the sum overflowed or a value is non-finite: check exactly
        step = 1 << 22  # chunks keep the temporary boolean array small
        if not all(np.isfinite(flat[i:i + step]).all() for i in range(0, flat.size, step)):
            bad.append(name)
    if bad:
        more = f", ... ({len(bad) - 10} more)" if len(bad) > 10 else ""
        raise CheckpointError(
            f"{where} holds NaN or infinite values in {len(bad)} tensors: {', '.join(bad[:10])}{more}; "
            "every output would be NaN. Pass allow_nonfinite_weights=True to load it anyway"
        )


def saved_names(spec: ModelSpec) -> list[str]:
    """Names a checkpoint stores, in spec order: one per tie group, as transformers does.

    The kept member is the tie source, except for ``tie_encoder_decoder`` groups
    (``encoder.X`` shared with ``decoder.<base>.X``), where transformers keeps the
    decoder copy and drops the encoder names.
    """
    groups: dict[str, list[str]] = {}
    for tied, source in spec.ties.items():
        groups.setdefault(source, [source]).append(tied)
    keep = {}
    for source, members in groups.items():
        chosen = source
        if source.startswith("encoder."):
            suffix = "." + source[len("encoder."):]
            copies = [m for m in members if m.startswith("decoder.") and m.endswith(suffix)]
            chosen = copies[0] if copies else source
        for m in members:
            keep[m] = m == chosen
    return [p.name for p in spec if keep.get(p.name, True)]


def untied_weights(weights: Mapping[str, np.ndarray], spec: ModelSpec) -> dict[str, np.ndarray]:
    """Spec-ordered weights without tie duplicates (what HF writes to a checkpoint)."""
    names = saved_names(spec)
    missing = [n for n in names if n not in weights]
    if missing:
        raise KeyError(f"weights to save lack {len(missing)} spec names: {missing[:10]}")
    return {n: np.asarray(weights[n]) for n in names}


def write_weights(folder: str, weights: Mapping[str, np.ndarray], spec: ModelSpec, fmt: str = "safetensors",
                  max_shard_size: int | str = "5GB", config: Any = None) -> list[str]:
    """Write the untied ``weights`` into ``folder`` in format ``fmt``; returns file names."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown weight format {fmt!r}; choose one of {', '.join(FORMATS)}")
    state = untied_weights(weights, spec)
    if fmt in ("safetensors", "pt-bin"):
        return write_sharded(folder, state, max_shard_size, fmt)
    path = os.path.join(folder, FORMATS[fmt])
    if fmt == "tf-h5":
        from encdec.formats.tf_h5 import write_tf_h5

        if config is None:
            raise ValueError("writing tf_model.h5 needs the model config (TF weight names depend on it)")
        write_tf_h5(path, state, spec, config)
    else:
        from encdec.formats.flax_msgpack import write_flax_msgpack

        write_flax_msgpack(path, state, spec)
    return [FORMATS[fmt]]


#: Seconds a save waits for another process's save of the same folder to finish.
SAVE_LOCK_TIMEOUT = 600.0


#: Temporary files of killed single-file writes (``atomic_write``): not carried over.
_STALE_TEMP_FILE = re.compile(r"\.tmp-[a-z0-9_]{8}-.+")


def _leftover_pattern(base: str) -> "re.Pattern[str]":
    """Temporary folders of saves of ``base`` (``mkdtemp`` adds 8 characters)."""
    return re.compile(rf"\.(tmp|old)-{re.escape(base)}-[a-z0-9_]{{8}}")


@contextlib.contextmanager
def save_lock(target: str) -> Iterator[None]:
    """Exclusive lock (``fcntl.flock`` on ``.<name>.lock`` beside ``target``) held while
    one process saves to ``target``: concurrent saves run one after the other (the last
    one wins).  The lock file is removed on release; a waiter that locked a removed file
    retries.  Without ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    import time

    parent, base = os.path.split(target)
    path = os.path.join(parent, f".{base}.lock")
    deadline = time.monotonic() + SAVE_LOCK_TIMEOUT
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), default_mode())
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"another process has been saving to {target} for over "
                                           f"{SAVE_LOCK_TIMEOUT:.0f} s (lock file {path}); try again later") from None
                    time.sleep(0.01)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_ino, current.st_dev) == (os.fstat(fd).st_ino, os.fstat(fd).st_dev):
                break  # we hold the live lock file
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the previous holder removed it: lock the new one
    try:
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two directory entries (Linux ``renameat2(RENAME_EXCHANGE)``);
    False where the system or file system cannot."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(err, f"could not swap {a} and {b}: {os.strerror(err)}")


def _recover_and_clean(target: str) -> None:
    """Under the save lock: if an interrupted save (two-rename fallback) left ``target``
    missing, put the previous checkpoint back; then delete temporary folders of earlier
    saves that were killed."""
    parent, base = os.path.split(target)
    pattern = _leftover_pattern(base)
    leftovers = [e for e in os.listdir(parent) if pattern.fullmatch(e) and os.path.isdir(os.path.join(parent, e))]
    olds = sorted((e for e in leftovers if e.startswith(".old-")), key=lambda e: os.stat(os.path.join(parent, e)).st_mtime)
    if olds and not os.path.lexists(target):
        os.rename(os.path.join(parent, olds[-1]), target)
        leftovers.remove(olds[-1])
    for entry in leftovers:
        shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def recover_interrupted_save(folder: str | os.PathLike) -> bool:
    """If ``folder`` is missing because a save was killed between its two renames (only
    where atomic exchange is unavailable), restore the previous checkpoint; True if done."""
    target = os.path.abspath(os.fspath(folder))
    parent, base = os.path.split(target)
    if os.path.lexists(target) or not os.path.isdir(parent):
        return False
    pattern = _leftover_pattern(base)
    if not any(e.startswith(".old-") and pattern.fullmatch(e) for e in os.listdir(parent)):
        return False
    with save_lock(target):
        _recover_and_clean(target)
    return os.path.isdir(target)


def atomic_directory(save_directory: str | os.PathLike, fill: Callable[[str], Iterable[str]], replaces: Callable[[str], bool]) -> None:
    """Build a checkpoint folder atomically.

    ``fill(tmp)`` writes the new files into a temporary folder beside ``save_directory``
    and returns their names.  Existing entries of ``save_directory`` are carried over
    (hard links, else copies) unless written anew or ``replaces(name)`` says they belong
    to what is being saved (stale shards of a previous save).  Then the new folder takes
    the old one's place in one atomic exchange (where the system has none: two renames,
    and a save or load after a crash between them puts the old folder back).  At every
    instant ``save_directory`` holds one complete checkpoint, old or new.

    A symlink ``save_directory`` is followed (its target is updated).  Saves of one folder
    by several processes take turns (:func:`save_lock`); temporary folders left by killed
    saves are deleted by the next save.  A write-protected folder raises
    ``PermissionError`` naming it.
    """
    target = os.path.realpath(os.path.abspath(os.fspath(save_directory)))
    if os.path.exists(target) and not os.path.isdir(target):
        raise NotADirectoryError(f"save_directory {target} exists and is not a folder")
    parent, base = os.path.split(target)
    if not base or os.path.ismount(target):  # "/" or a mounted volume: it cannot be swapped
        raise ValueError(f"save_directory {target} is a file-system root or mount point, which cannot be replaced "
                         "atomically (everything in it would be copied first); save into a folder inside it")
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as err:
        raise type(err)(err.errno, f"cannot create the folder {parent} to save {base} into: {err.strerror}") from None
    # write-protected: no write permission for us, or none for anyone (root passes access())
    if os.path.isdir(target) and (not os.access(target, os.W_OK) or not os.stat(target).st_mode & 0o222):
        raise PermissionError(errno.EACCES, f"save_directory {target} is write-protected; not replacing it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"cannot save to {target}: its parent folder {parent} is not writable "
                              "(the new checkpoint is built beside the old one, then swapped in)")
    cwd = os.getcwd()
    with save_lock(target):
        _recover_and_clean(target)
        tmp = tempfile.mkdtemp(prefix=f".tmp-{base}-", dir=parent)
        old = None
        try:
            os.chmod(tmp, default_mode(directory=True))
            written = set(fill(tmp))
            for name in written:  # some writers create private (0600) files
                os.chmod(os.path.join(tmp, name), default_mode())
            if os.path.isdir(target):
                for entry in os.listdir(target):
                    if entry in written or replaces(entry) or _STALE_TEMP_FILE.fullmatch(entry):
                        continue
                    src, dst = os.path.join(target, entry), os.path.join(tmp, entry)
                    if os.path.isdir(src) and not os.path.islink(src):
                        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
                    else:
                        _link_or_copy(src, dst)
                os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
                if _exchange(tmp, target):
                    old = tmp  # now holds the previous checkpoint
                else:
                    old = tempfile.mkdtemp(prefix=f".old-{base}-", dir=parent)
                    os.rmdir(old)
                    os.rename(target, old)
                    try:
                        os.rename(tmp, target)
                    except BaseException:
                        os.rename(old, target)
                        old = None
                        raise
            else:
                os.rename(tmp, target)
        except BaseException:
            if old is None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if cwd == target or cwd.startswith(target + os.sep):
            os.chdir(cwd)  # the process stood in the old folder: move it to the new one
        if old:
            shutil.rmtree(old, ignore_errors=True)


class PinnedFolder:
    """A local checkpoint folder opened once: :meth:`run` reads every file through that
    one directory (``/proc/self/fd``), so a save swapping the folder meanwhile cannot mix
    files of two checkpoints; if the pinned folder vanished mid-read, the current one is
    pinned and read again.  Where ``/proc`` is missing, a change of the folder's identity
    during the read triggers the retry.  Not a local folder (a Hub id): read as is."""

    retries = 8

    def __init__(self, name: str) -> None:
        self.name = name
        self.fd: int | None = None
        self.view: str | None = None
        self.stamp: tuple[int, int] | None = None
        self._pin()

    def _pin(self) -> None:
        self.close()
        if not os.path.isdir(self.name):
            recover_interrupted_save(self.name)  # waits for a save's lock if one is mid-swap
        if not os.path.isdir(self.name):
            return
        try:
            self.fd = os.open(self.name, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return
        st = os.fstat(self.fd)
        self.stamp = (st.st_ino, st.st_dev)
        view = f"/proc/self/fd/{self.fd}"
        self.view = view if os.path.isdir(view) else None

    def _moved(self) -> bool:
        if self.stamp is None:
            return False
        try:
            st = os.stat(self.name)
        except OSError:
            return True
        return (st.st_ino, st.st_dev) != self.stamp

    def run(self, load: Callable[[str], Any]) -> Any:
        """``load(folder path)``, read through the pinned folder, retried while a save
        replaces the folder underneath."""
        import time

        for attempt in range(self.retries):
            last = attempt + 1 == self.retries
            view = self.view
            try:
                result = load(view or self.name)
            except (OSError, ValueError) as err:  # CheckpointError and LoadError are ValueErrors
                if not last and self._moved():
                    time.sleep(0.002 * attempt)
                    self._pin()
                    continue
                raise self._renamed(err, view)
            if view is None and not last and self._moved():
                self._pin()
                continue
            return result
        raise AssertionError("unreachable")

    def _renamed(self, err: BaseException, view: str | None) -> BaseException:
        """The error with the ``/proc/self/fd`` view replaced by the folder's name."""
        if view:
            fix = lambda v: v.replace(view, self.name.rstrip(os.sep)) if isinstance(v, str) else v
            err.args = tuple(fix(a) for a in err.args)
            if isinstance(err, OSError) and err.errno is not None:
                err.filename, err.strerror = fix(err.filename), fix(err.strerror)
        return err

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd, self.view, self.stamp = None, None, None


@contextlib.contextmanager
def pinned_folder(name_or_path: str | os.PathLike) -> Iterator[PinnedFolder]:
    """Context manager giving a :class:`PinnedFolder` of ``name_or_path``."""
    pinned = PinnedFolder(os.fspath(name_or_path))
    try:
        yield pinned
    finally:
        pinned.close()


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def format_files(fmt: str) -> Callable[[str], bool]:
    """Predicate: does a ``fmt`` weight save replace this file?  Its own format's files (any
    sharding), and those of every format a load reads before it: left beside the new
    config, ``model.safetensors`` would be loaded instead of a new ``tf_model.h5`` (new
    config, old weights).  Formats read after it stay (a folder may hold several)."""
    order = list(_FORMAT_PATTERNS)
    patterns = [_FORMAT_PATTERNS[f] for f in order[:order.index(fmt) + 1]]
    return lambda name: any(pattern.fullmatch(name) for pattern in patterns)
