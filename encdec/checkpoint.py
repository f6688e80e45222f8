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

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from encdec._io_utils import default_mode
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

#: Files a weight save of each format owns (stale ones of a previous save are removed).
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
def _safetensors_header(path: str) -> tuple[dict[str, Any], int]:
    """The JSON header and the offset where tensor data starts."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path} is truncated: no safetensors header")
            n = int.from_bytes(head, "little")
            size = os.fstat(f.fileno()).st_size
            if n > size - 8:
                raise CheckpointError(f"{path} is truncated or not a safetensors file (header of {n} bytes)")
            header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path} is not a safetensors file: bad header ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors file: header is not a JSON object")
    return header, 8 + n


def safetensors_dtypes(path: str | os.PathLike) -> dict[str, str]:
    """``{name: safetensors dtype string}`` (``"F32"``, ``"BF16"``, ...) from the header only."""
    header, _ = _safetensors_header(os.fspath(path))
    return {k: v["dtype"] for k, v in header.items() if k != "__metadata__"}


def _bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


#: safetensors dtype -> numpy dtype (little-endian, as the format stores them).
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
              "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of one ``.safetensors`` file, memory-mapped copy-on-write (no read of
    the data until it is used; bf16 is widened to float32, which copies)."""
    path = os.fspath(path)
    header, data_start = _safetensors_header(path)
    size = os.path.getsize(path)
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_ST_DTYPES[info["dtype"]])
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"cannot read safetensors file {path}: bad header entry for {name!r}: {info!r}") from None
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize or begin < 0:
            raise CheckpointError(f"cannot read safetensors file {path}: {name!r} spans {end - begin} bytes, "
                                  f"its shape {shape} and dtype {info['dtype']} need {count * dtype.itemsize}")
        if data_start + end > size:
            raise CheckpointError(f"{path} is truncated: {name!r} ends at byte {data_start + end}, the file has {size}")
        if count == 0:
            arr = np.zeros(shape, dtype)
        else:
            arr = np.memmap(path, dtype=dtype, mode="c", offset=data_start + begin, shape=shape).view(np.ndarray)
        out[name] = _bf16_to_float32(arr) if info["dtype"] == "BF16" else arr
    return out


def write_safetensors(path: str | os.PathLike, weights: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write ``weights`` with metadata ``{"format": "pt"}`` (what transformers expects)."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    save_file(arrays, os.fspath(path), metadata={"format": "pt", **(metadata or {})})


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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled objects other than tensors, and this "
            f"library only unpickles with weights_only=True ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read PyTorch checkpoint {path}: {err}") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(state).__name__})")
    out = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} is a {type(tensor).__name__}, not a tensor")
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        out[name] = tensor.detach().cpu().numpy()
    return out


def write_pt_bin(path: str | os.PathLike, weights: Mapping[str, np.ndarray]) -> None:
    """``torch.save`` of a ``{name: tensor}`` state dict."""
    path = os.fspath(path)
    torch = _import_torch(path)
    torch.save({k: torch.from_numpy(np.array(v, copy=True)) for k, v in weights.items()}, path)


# --- sharding ------------------------------------------------------------------------------
def _read_index(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        weight_map = index["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a valid shard index (needs a 'weight_map'): {err}") from None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{path}: 'weight_map' must map weight names to shard files")
    return weight_map


def shard_files(index_path: str | os.PathLike) -> list[str]:
    """Shard file names listed in an index, in first-use order."""
    return list(dict.fromkeys(_read_index(os.fspath(index_path)).values()))


def read_sharded(index_path: str | os.PathLike, resolve: Callable[[str], str] | None = None) -> dict[str, np.ndarray]:
    """All weights of a sharded checkpoint; ``resolve(shard name) -> local path``
    (default: next to the index).  A missing shard names the shard and the index."""
    index_path = os.fspath(index_path)
    weight_map = _read_index(index_path)
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
        part = reader(path)
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
        with open(os.path.join(folder, index_name), "w", encoding="utf-8") as f:
            f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
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
    return {p.name: weights[p.name] for p in spec}, report


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


def atomic_directory(save_directory: str | os.PathLike, fill: Callable[[str], Iterable[str]], replaces: Callable[[str], bool]) -> None:
    """Build a checkpoint folder atomically.

    ``fill(tmp)`` writes the new files into a temporary folder beside ``save_directory``
    and returns their names.  Existing entries of ``save_directory`` are carried over
    (hard links, else copies) unless written anew or ``replaces(name)`` says they belong
    to what is being saved (stale shards of a previous save).  Then the folders are
    swapped by renames: an interrupted save leaves the previous checkpoint in place.
    """
    target = os.path.abspath(os.fspath(save_directory))
    if os.path.exists(target) and not os.path.isdir(target):
        raise NotADirectoryError(f"save_directory {target} exists and is not a folder")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(target)}-", dir=parent)
    os.chmod(tmp, default_mode(directory=True))
    cwd = os.getcwd()
    backup = None
    try:
        written = set(fill(tmp))
        for name in written:  # some writers create private (0600) files
            os.chmod(os.path.join(tmp, name), default_mode())
        if os.path.isdir(target):
            for entry in os.listdir(target):
                if entry in written or replaces(entry):
                    continue
                src, dst = os.path.join(target, entry), os.path.join(tmp, entry)
                if os.path.isdir(src) and not os.path.islink(src):
                    shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
                else:
                    _link_or_copy(src, dst)
            backup = tempfile.mkdtemp(prefix=f".old-{os.path.basename(target)}-", dir=parent)
            os.rmdir(backup)
            os.rename(target, backup)
        os.rename(tmp, target)
    except BaseException:
        if backup and os.path.isdir(backup) and not os.path.exists(target):
            os.rename(backup, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if cwd == target or cwd.startswith(target + os.sep):
        os.chdir(cwd)  # the process stood in the old folder: move it to the new one
    if backup:
        shutil.rmtree(backup, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def format_files(fmt: str) -> Callable[[str], bool]:
    """Predicate: is this file name part of a ``fmt`` weight save (any sharding)?"""
    pattern = _FORMAT_PATTERNS[fmt]
    return lambda name: bool(pattern.fullmatch(name))
