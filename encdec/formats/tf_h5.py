"""``tf_model.h5`` in Hugging Face TF (tf-keras) naming, with h5py alone.

File layout (Keras 2 ``save_weights``): root attribute ``layer_names`` lists the top
layers (``encoder``, ``decoder``, ``enc_to_dec_proj``); each layer group's attribute
``weight_names`` lists full variable names such as
``tf_encoder_decoder_model/encoder/bert/encoder/layer_._0/attention/self/query/kernel:0``,
stored as datasets at ``<layer>/<weight name>``.  Long attribute lists are split into
``weight_names0``, ``weight_names1``, ... (HDF5 limits attribute size).

Naming relative to the canonical (PyTorch) name: the encoder's modules sit under its main
layer (``bert``/``roberta``/``electra``); list indices become ``layer_._0`` / ``h_._0``;
leaves follow the parameter kind (linear ``kernel`` transposed to [in, out], GPT-2 conv1d
``weight`` as is with its bias stored (1, n), norms ``gamma``/``beta``, embeddings
``embeddings``); tie targets are absent.  Per-architecture quirks are in
:data:`TF_NAMING`.
"""
from __future__ import annotations

import io
import os
import re
from typing import Any, Mapping

import numpy as np

from encdec.checkpoint import CheckpointError, write_bytes
from encdec.layout import Layout
from encdec.specs import BIAS, CONV1D, EMBEDDING, LINEAR, NORM_BIAS, NORM_SCALE, ModelSpec

#: TF leaf names and transposes per parameter kind.
HF_TF_LAYOUT = Layout(
    leaf={LINEAR: "kernel", CONV1D: "weight", EMBEDDING: "embeddings", NORM_SCALE: "gamma", NORM_BIAS: "beta", BIAS: "bias"},
    transpose=frozenset({LINEAR}),
)
_TO_TORCH_LEAF = {"kernel": "weight", "gamma": "weight", "beta": "bias", "embeddings": "weight", "weight": "weight", "bias": "bias"}

#: model_type -> TF naming facts: ``main_layer`` (scope of an encoder's modules),
#: ``modules`` (PyTorch module name -> TF scope), ``weight_embeddings`` (embedding
#: modules whose TF variable is named ``weight``), ``weight_linears`` (linear modules whose
#: TF variable is a ``weight`` kept [out, in], e.g. RemBERT's output embedding),
#: ``tied_output`` (the LM output weight, which HF's TF model always shares with the input
#: embedding).  A type missing here has no TF model in transformers (ProphetNet, BART's
#: causal LM).
TF_NAMING: dict[str, dict[str, Any]] = {
    "bert": {"main_layer": "bert", "modules": {"cls": "mlm___cls"}, "weight_embeddings": ("word_embeddings",),
             "tied_output": "cls.predictions.decoder.weight"},
    "roberta": {"main_layer": "roberta", "modules": {}, "weight_embeddings": ("word_embeddings",),
                "tied_output": "lm_head.decoder.weight"},
    "electra": {"main_layer": "electra", "modules": {}, "weight_embeddings": ("word_embeddings",)},
    "gpt2": {"modules": {}, "weight_embeddings": (), "tied_output": "lm_head.weight"},
    "rembert": {"main_layer": "rembert", "modules": {"cls": "mlm___cls"}, "weight_embeddings": ("word_embeddings",),
                "weight_linears": ("cls.predictions.decoder",)},
}
_MAIN_LAYERS = {v["main_layer"] for v in TF_NAMING.values() if "main_layer" in v}
_SCOPE = "tf_encoder_decoder_model"
_HDF5_ATTR_LIMIT = 64512


def _import_h5py(path: str):
    try:
        import h5py
    except ImportError:
        raise ImportError(f"reading or writing {path} needs h5py (pip install h5py)") from None
    return h5py


def _read_attr_list(group: Any, name: str) -> list[str]:
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values.extend(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _write_attr_list(group: Any, name: str, values: list[str]) -> None:
    data = np.asarray([v.encode("utf8") for v in values])
    chunks = 1
    parts = [data]
    while any(p.nbytes > _HDF5_ATTR_LIMIT for p in parts):
        chunks += 1
        parts = np.array_split(data, chunks)
    if chunks == 1:
        group.attrs[name] = data
    else:
        for i, part in enumerate(parts):
            group.attrs[f"{name}{i}"] = part


def _torch_name(tf_name: str) -> str:
    """``encoder/bert/encoder/layer_._0/attention/self/query/kernel`` ->
    ``encoder.encoder.layer.0.attention.self.query.weight`` (leaf renamed only)."""
    parts = []
    for comp in tf_name.split("/"):
        m = re.fullmatch(r"(.+)_\._(\d+)", comp)
        parts.extend([m.group(1), m.group(2)] if m else [comp])
    if len(parts) > 2 and parts[0] == "encoder" and parts[1] in _MAIN_LAYERS:
        del parts[1]
    renames = {tf: pt for v in TF_NAMING.values() for pt, tf in v["modules"].items()}
    parts = [renames.get(p, p) for p in parts]
    parts[-1] = _TO_TORCH_LEAF.get(parts[-1], parts[-1])
    return ".".join(parts)


def _check_local_dataset(h5py: Any, path: str, group: Any, name: str) -> None:
    """Weights must be datasets stored in this file: external links, external raw
    storage and virtual datasets would read other files."""
    link = group.get(name, getlink=True)
    if link is None:
        raise CheckpointError(f"{path}: weight {name!r} listed in 'weight_names' is missing")
    if not isinstance(link, h5py.HardLink):
        raise CheckpointError(f"{path}: weight {name!r} is a {type(link).__name__}, not a dataset stored in the file")
    node = group[name]
    if not isinstance(node, h5py.Dataset) or node.external or node.is_virtual:
        raise CheckpointError(f"{path}: weight {name!r} is not a dataset stored in the file (external or virtual data)")
    if node.dtype.kind != "O" and node.id.get_storage_size() < node.nbytes:
        # compressed or never written (fill value): a tiny file could declare terabytes
        raise CheckpointError(f"{path}: weight {name!r} declares {node.nbytes} bytes {node.shape} but stores "
                              f"{node.id.get_storage_size()}; compressed or unwritten datasets are refused")


def read_tf_h5(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Canonical-named weights of an HF ``tf_model.h5`` (a composite or a single part:
    part names keep their main layer, e.g. ``bert.embeddings...``)."""
    path = os.fspath(path)
    h5py = _import_h5py(path)
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            layers = _read_attr_list(f, "layer_names")
            if not layers:
                raise CheckpointError(f"{path} has no 'layer_names' attribute; not a Keras/HF weights file")
            for layer in layers:
                group = f[layer]
                for weight_name in _read_attr_list(group, "weight_names"):
                    _check_local_dataset(h5py, path, group, weight_name)
                    arr = np.asarray(group[weight_name])
                    rel = weight_name.split("/", 1)[1] if "/" in weight_name else weight_name
                    rel = rel[:-2] if rel.endswith(":0") else rel
                    leaf = rel.rpartition("/")[2]
                    if leaf == "kernel" and arr.ndim == 2:
                        arr = arr.T
                    elif leaf == "bias" and arr.ndim == 2 and arr.shape[0] == 1:
                        arr = arr[0]
                    name = _torch_name(rel)
                    # a tied weight is listed by two layers (an MLM head's embeddings): the same values
                    if name in out and not np.array_equal(out[name], arr):
                        raise CheckpointError(f"{path}: two datasets of different values hold weight {name!r} "
                                              f"(the second is {layer}/{weight_name})")
                    out[name] = np.ascontiguousarray(arr)
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise CheckpointError(f"cannot read TF weights file {path} (truncated or corrupt?): {err}") from None
    return out


def _weight_linear(name: str, kind: str, naming: dict[str, Any]) -> bool:
    """A linear weight HF's TF model stores as ``weight`` in PyTorch's [out, in] layout."""
    return kind == LINEAR and name.rpartition(".")[0] in naming.get("weight_linears", ())


def _tf_path(name: str, kind: str, naming: dict[str, Any], main_layer: str | None) -> str:
    module, _, _ = name.rpartition(".")
    parts = module.split(".") if module else []
    leaf = HF_TF_LAYOUT.leaf[kind]
    if (kind == EMBEDDING and parts and parts[-1] in naming["weight_embeddings"]) or _weight_linear(name, kind, naming):
        leaf = "weight"
    parts = [naming["modules"].get(p, p) for p in parts]
    comps: list[str] = []
    for p in parts:
        if p.isdigit() and comps:
            comps[-1] = f"{comps[-1]}_._{p}"
        else:
            comps.append(p)
    if main_layer:
        comps.insert(0, main_layer)
    return "/".join([*comps, leaf])


def write_tf_h5(path: str | os.PathLike, weights: Mapping[str, np.ndarray], spec: ModelSpec, config: Any) -> None:
    """Write untied canonical ``weights`` of a composite model as HF ``tf_model.h5``."""
    path = os.fspath(path)
    from encdec.registry import family

    roles = {"encoder": family(config.encoder.model_type), "decoder": family(config.decoder.model_type)}
    for role, model_type in roles.items():
        if model_type not in TF_NAMING or (role == "encoder" and "main_layer" not in TF_NAMING[model_type]):
            raise NotImplementedError(
                f"tf_model.h5 cannot be written for a {model_type} {role}: transformers has no TF "
                f"model for it; save as safetensors instead"
            )
    tied_output = TF_NAMING[roles["decoder"]].get("tied_output")
    if tied_output and f"decoder.{tied_output}" in weights:
        raise NotImplementedError(
            f"tf_model.h5 cannot hold an untied {tied_output} ({roles['decoder']} decoder with "
            "tie_word_embeddings=False): transformers' TF model always ties it; save as safetensors instead"
        )
    h5py = _import_h5py(path)
    conv1d_modules = {p.name.rpartition(".")[0] for p in spec if p.kind == CONV1D}
    layers: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, arr in weights.items():
        p = spec[name]
        role, _, rest = name.partition(".")
        arr = np.asarray(arr)
        naming = TF_NAMING[roles[role]] if role in roles else {"modules": {}, "weight_embeddings": ()}
        if role in roles:
            main = naming.get("main_layer") if role == "encoder" else None
            tf_name = f"{role}/" + _tf_path(rest, p.kind, naming, main)
        else:  # top-level modules of the composite (enc_to_dec_proj)
            role = name.split(".")[0]
            tf_name = _tf_path(name, p.kind, naming, None)
        if p.kind in HF_TF_LAYOUT.transpose and arr.ndim == 2 and not _weight_linear(rest, p.kind, naming):
            arr = arr.T
        if p.kind == BIAS and name.rpartition(".")[0] in conv1d_modules:
            arr = arr.reshape(1, -1)
        layers.setdefault(role, []).append((f"{_SCOPE}/{tf_name}:0", arr))
    # Built in memory and written with plain file I/O: HDF5 itself must never meet a
    # failing write (it crashes the process on some, e.g. a file-size limit).
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs["backend"] = "tensorflow".encode()
        f.attrs["keras_version"] = "2.15.0".encode()
        _write_attr_list(f, "layer_names", list(layers))
        for layer, items in layers.items():
            group = f.create_group(layer)
            _write_attr_list(group, "weight_names", [n for n, _ in items])
            for weight_name, arr in items:
                group.create_dataset(weight_name, data=np.ascontiguousarray(arr))
    write_bytes(path, [buffer.getbuffer()])
