"""``from_pretrained`` / ``save_pretrained`` for every backend, on canonical weights.

Backends turn the results into their own variables with :mod:`encdec.layout`; all
file formats, hub resolution, tie handling and key reports live here and in
:mod:`encdec.checkpoint`.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from encdec.checkpoint import (
    FORMAT_FILES,
    FORMATS,
    WEIGHT_FILES,
    LoadError,
    LoadReport,
    atomic_directory,
    check_finite,
    format_files,
    match_state,
    pinned_folder,
    read_weight_file,
    write_weights,
)
from encdec.configuration import AutoConfig, EncoderDecoderConfig, PretrainedConfig, as_config
from encdec.generation import GENERATION_CONFIG_NAME, GenerationConfig
from encdec.hub import HUB_KWARGS, list_files, resolve_file, resolve_first, split_hub_kwargs
from encdec.init import init_weights
from encdec.specs import ModelSpec, base_prefix, decoder_spec, encoder_decoder_spec, encoder_spec

#: ``from_pt`` / ``from_tf`` / ``from_flax`` -> the formats that hint prefers.
_FORMAT_HINTS = {"from_pt": ("safetensors", "pt-bin"), "from_tf": ("tf-h5",), "from_flax": ("flax-msgpack",)}

#: Non-parameter buffers older transformers versions saved in state dicts; skipped on load
#: as transformers does (``_keys_to_ignore_on_load_unexpected``).
_IGNORED_BUFFERS = re.compile(r"(^|.*\.)(position_ids|(attn|crossattention)\.(bias|masked_bias))$")

#: Per-model_type names a part checkpoint may use for a decoder weight
#: (BART seq2seq checkpoints keep the decoder embedding as the shared one).
_PART_ALIASES: dict[str, dict[str, str]] = {
    "bart": {"model.shared.weight": "model.decoder.embed_tokens.weight", "shared.weight": "model.decoder.embed_tokens.weight"},
}


def _weight_order(hints: dict[str, Any]) -> tuple[str, ...]:
    preferred = [f for hint, fmts in _FORMAT_HINTS.items() if hints.get(hint) for fmt in fmts for f in FORMAT_FILES[fmt]]
    order = tuple(dict.fromkeys([*preferred, *WEIGHT_FILES]))
    use_safetensors = hints.get("use_safetensors")
    if use_safetensors is not None:  # True: safetensors only; False: never safetensors (transformers' meaning)
        safe = set(FORMAT_FILES["safetensors"])
        order = tuple(f for f in order if (f in safe) == bool(use_safetensors))
    return order


#: transformers ``from_pretrained`` keywords about how to load, and what encdec does with them.
LOADING_OPTIONS = ("low_cpu_mem_usage", "use_safetensors", "variant", "ignore_mismatched_sizes",
                   "output_loading_info", "trust_remote_code", "_fast_init")


def pop_loading_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove transformers' loading keywords from ``kwargs`` and check them: accepted
    (``low_cpu_mem_usage``: encdec reads weights once anyway; ``use_safetensors``: picks the
    format; ``output_loading_info``: the caller returns the key report) or refused with the
    reason (``variant``, ``ignore_mismatched_sizes=True``, ``trust_remote_code=True``)."""
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in LOADING_OPTIONS}
    if options.get("variant") is not None:
        raise NotImplementedError(f"variant={options['variant']!r}: weight-file variants (model.<variant>.safetensors) are "
                                  "not read by encdec; load the default weights and cast them (dtype=...)")
    if options.get("ignore_mismatched_sizes"):
        raise NotImplementedError("ignore_mismatched_sizes=True is not supported: encdec refuses checkpoints whose "
                                  "shapes differ from the config (the error lists them); fix the config instead")
    if options.get("trust_remote_code"):
        raise NotImplementedError("trust_remote_code=True: encdec runs no code from checkpoints")
    return options


def _load_weight_files(name_or_path: str | os.PathLike, order: tuple[str, ...], hub: dict[str, Any]) -> dict[str, np.ndarray]:
    _, path = resolve_first(name_or_path, order, **hub)
    state = read_weight_file(path, resolve=lambda shard: resolve_file(name_or_path, shard, **hub))
    return {k: v for k, v in state.items() if not _IGNORED_BUFFERS.match(k)}


def _pop_allow_nonfinite(kwargs: dict[str, Any]) -> bool:
    allow = kwargs.pop("allow_nonfinite_weights", False)
    if not isinstance(allow, bool):
        raise TypeError(f"allow_nonfinite_weights must be True or False, got {allow!r}")
    return allow


def checkpoint_formats(name_or_path: str | os.PathLike, **hub: Any) -> list[str]:
    """Weight formats (``format`` names of :func:`save_pretrained`) present in a folder or
    Hub repo, in loading priority order; nothing is downloaded."""
    present = set(list_files(name_or_path, WEIGHT_FILES, **hub))
    return [fmt for fmt, files in FORMAT_FILES.items() if present & set(files)]


def load_pretrained(name_or_path: str | os.PathLike, **kwargs: Any) -> tuple[EncoderDecoderConfig, dict[str, np.ndarray], GenerationConfig | None, dict[str, Any]]:
    """Load a composite encoder-decoder checkpoint from a folder or Hub repo id.

    Keywords: hub ones (``revision``, ``cache_dir``, ``local_files_only``, ``token``,
    ``force_download``, ``subfolder``); ``config`` (an :class:`EncoderDecoderConfig` to use
    instead of ``config.json``); ``from_pt`` / ``from_tf`` / ``from_flax`` (prefer that
    format); ``allow_nonfinite_weights`` (default False: weights holding NaN or inf raise
    :class:`~encdec.checkpoint.CheckpointError` naming them); any attribute of the config
    (e.g. ``decoder_start_token_id``) overrides it.  A local folder is read consistently
    while another process saves to it (see :class:`~encdec.checkpoint.PinnedFolder`).
    Returns ``(config, weights, generation_config or None, unused kwargs)``; weights hold
    every spec name, tie targets included.  Raises :class:`LoadError` when the checkpoint
    does not match the config's spec.
    """
    kwargs = dict(kwargs)
    allow_nonfinite = _pop_allow_nonfinite(kwargs)
    hub = split_hub_kwargs(kwargs)
    # A local folder is pinned (opened once) and every file read through that one folder,
    # so a save swapping the folder meanwhile cannot mix two checkpoints.
    with pinned_folder(name_or_path) as view:
        config, state, generation_config, unused = view.run(lambda path: _load_composite(path, kwargs, hub))
    spec = encoder_decoder_spec(config)
    weights, _ = match_state(state, spec)
    check_finite(weights, f"checkpoint {os.fspath(name_or_path)!r}", allow_nonfinite)
    return config, weights, generation_config, unused


def _load_composite(name_or_path: str, kwargs: dict[str, Any], hub: dict[str, Any]) -> tuple[Any, dict[str, np.ndarray], GenerationConfig | None, dict[str, Any]]:
    kwargs = dict(kwargs)
    hints = {k: kwargs.pop(k) for k in list(kwargs) if k in _FORMAT_HINTS}
    hints["use_safetensors"] = pop_loading_options(kwargs).get("use_safetensors")
    config = kwargs.pop("config", None)
    if config is None:
        config = EncoderDecoderConfig.from_pretrained(name_or_path, **hub)
    else:  # ours or transformers' (converted through its dict); overrides must not change the caller's object
        config = copy.deepcopy(as_config(config, "config", EncoderDecoderConfig))
    unused = {}
    for key, value in kwargs.items():
        if key in config.__dict__:
            config._check_type(key, value)
            setattr(config, key, value)
        else:
            unused[key] = value
    state = _load_weight_files(name_or_path, _weight_order(hints), hub)
    try:
        generation_config = GenerationConfig.from_pretrained(name_or_path, **hub)
    except FileNotFoundError:
        generation_config = None
    return config, state, generation_config, unused


def save_pretrained(
    save_directory: str | os.PathLike,
    config: EncoderDecoderConfig,
    weights: Mapping[str, np.ndarray],
    generation_config: GenerationConfig | None = None,
    format: str = "safetensors",
    max_shard_size: int | str = "5GB",
) -> list[str]:
    """Write ``config.json``, ``generation_config.json`` (if given) and the weights
    (tie targets left out, as transformers does) atomically; returns the file names.

    ``format``: ``"safetensors"`` (sharded above ``max_shard_size``), ``"pt-bin"``,
    ``"tf-h5"`` or ``"flax-msgpack"``.  Other files already in ``save_directory`` are kept,
    except weight files of this format and of formats a load reads first (they would be
    loaded with the new config in place of the new weights).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    spec = encoder_decoder_spec(config)
    generation_config = GenerationConfig.coerce(generation_config)
    written: list[str] = []

    def fill(tmp: str) -> list[str]:
        config.save_pretrained(tmp)
        written.append("config.json")
        if generation_config is not None:
            generation_config.save_pretrained(tmp)
            written.append(GENERATION_CONFIG_NAME)
        written.extend(write_weights(tmp, weights, spec, format, max_shard_size, config))
        return written

    atomic_directory(save_directory, fill, format_files(format))
    return written


@dataclass
class PartLoad:
    """A part checkpoint mapped onto the part's spec (names relative to the part).

    ``initialized``: spec names absent from the checkpoint, filled by the portable init
    (e.g. cross-attention of a decoder made from a plain LM); ``unexpected``: checkpoint
    names the part does not use (e.g. ``cls.*`` of a masked-LM loaded as encoder), dropped.
    """

    config: PretrainedConfig
    weights: dict[str, np.ndarray]
    initialized: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _prefix_candidates(config: PretrainedConfig, role: str) -> tuple[list[str], list[str]]:
    """(prefixes to add, prefixes to strip) when mapping a part checkpoint onto its spec:
    HF's ``base_model_prefix`` idea, e.g. ``bert.`` stripped for an encoder made from
    ``BertForMaskedLM``, ``transformer.`` added for a decoder made from ``GPT2Model``."""
    base = base_prefix(config.model_type) or ""
    if role == "encoder":  # a causal-LM / masked-LM checkpoint: strip its base model prefix
        return [], list(dict.fromkeys(p for p in (base, config.model_type) if p))
    parts = base.split(".") if base else []
    adds = [".".join(parts[: i + 1]) for i in reversed(range(len(parts)))]
    return adds, []


def map_part_state(state: Mapping[str, np.ndarray], spec: ModelSpec, config: PretrainedConfig, role: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Rename checkpoint keys onto ``spec`` (add / strip the base prefix, per-type
    aliases); returns ``(renamed state, unexpected names)``."""
    adds, strips = _prefix_candidates(config, role)
    aliases = _PART_ALIASES.get(config.model_type, {})
    out: dict[str, np.ndarray] = {}
    unexpected = []
    for key, arr in state.items():
        name = key
        if name not in spec:
            for p in strips:
                if name.startswith(p + ".") and name[len(p) + 1:] in spec:
                    name = name[len(p) + 1:]
                    break
            for p in adds:
                if f"{p}.{name}" in spec:
                    name = f"{p}.{name}"
                    break
        if name not in spec and key in aliases:
            name = aliases[key]
            if name in state or name in out:
                unexpected.append(key)
                continue
        if name in spec:
            out[name] = arr
        else:
            unexpected.append(key)
    return out, unexpected


def load_part(name_or_path: str | os.PathLike, role: str = "encoder", config_overrides: Mapping[str, Any] | None = None,
              seed: int = 0, config: Any = None, **hub: Any) -> PartLoad:
    """Load a plain HF checkpoint of one part (``BertModel``, ``BertForMaskedLM``,
    ``GPT2LMHeadModel``, ``GPT2Model``, ``RobertaForCausalLM``, ``BartForCausalLM``, ...).

    ``role="decoder"`` switches the config to ``is_decoder=True, add_cross_attention=True``.
    Names the part's spec needs but the checkpoint lacks are filled by
    :func:`encdec.init.init_weights` (``seed``, std = ``initializer_range``) and listed in
    ``initialized``; shape mismatches raise :class:`LoadError`.  NaN/inf weights raise
    :class:`CheckpointError` unless ``config_overrides`` has ``allow_nonfinite_weights=True``
    (from a backend: ``encoder_allow_nonfinite_weights=True``).
    """
    if role not in ("encoder", "decoder"):
        raise ValueError(f"role must be 'encoder' or 'decoder', got {role!r}")
    config_overrides = dict(config_overrides or {})
    hints = {k: src.pop(k) for src in (hub, config_overrides) for k in list(src) if k in _FORMAT_HINTS}
    hints["use_safetensors"] = pop_loading_options(config_overrides).get("use_safetensors")
    unknown = set(hub) - set(HUB_KWARGS)
    if unknown:
        raise TypeError(f"load_part got unknown keyword arguments {sorted(unknown)}; pass config changes in config_overrides")
    overrides = dict(config_overrides)
    allow_nonfinite = _pop_allow_nonfinite(overrides)
    given = config

    def read(path: str) -> tuple[PretrainedConfig, dict[str, np.ndarray]]:
        if given is None:
            cfg = AutoConfig.from_pretrained(path, **hub, **overrides)
        else:  # given (ours or transformers'): overrides still apply
            cfg = copy.deepcopy(as_config(given, "config"))
            for key, value in overrides.items():
                cfg._check_type(key, value)
                setattr(cfg, key, value)
        return cfg, _load_weight_files(path, _weight_order(hints), hub)

    with pinned_folder(name_or_path) as view:
        config, state = view.run(read)
    if isinstance(config, EncoderDecoderConfig):
        raise ValueError(
            f"{os.fspath(name_or_path)!r} is a composite encoder-decoder checkpoint; load it with "
            "from_pretrained, not as a single encoder or decoder"
        )
    # transformers' rule: a decoder is causal and cross-attends, an encoder (even one made
    # from a causal-LM checkpoint) is neither; the unused cross-attention weights are reported
    config.is_decoder = config.add_cross_attention = role == "decoder"
    spec = encoder_spec(config) if role == "encoder" else decoder_spec(config)
    check_finite(state, f"checkpoint {os.fspath(name_or_path)!r}", allow_nonfinite)
    state, unexpected = map_part_state(state, spec, config, role)
    try:
        weights, _ = match_state(state, spec)
        initialized: list[str] = []
    except LoadError as err:
        report: LoadReport = err.report
        if report.mismatched:
            raise LoadError(f"{os.fspath(name_or_path)!r} as {role}: {err}", report) from None
        fresh = init_weights(spec, seed=seed, std=float(config.initializer_range))
        initialized = list(report.missing)
        filled = {**{n: fresh[n] for n in initialized if n not in spec.ties}, **state}
        weights, _ = match_state(filled, spec)
    return PartLoad(config, weights, initialized, unexpected)


#: Part weight formats: the composite-only ``tf-h5`` naming needs the composite config.
PART_FORMATS = ("safetensors", "pt-bin", "flax-msgpack")


def hf_class_name(backend_class_name: str) -> str:
    """transformers' PyTorch class name for a part class (``TFBertModel`` -> ``BertModel``)."""
    for prefix in ("TF", "Flax"):
        if backend_class_name.startswith(prefix) and backend_class_name[len(prefix):][:1].isupper():
            return backend_class_name[len(prefix):]
    return backend_class_name


def save_part(save_directory: str | os.PathLike, config: PretrainedConfig, weights: Mapping[str, np.ndarray], spec: ModelSpec,
              architecture: str | None = None, format: str = "safetensors", max_shard_size: int | str = "5GB") -> list[str]:
    """Write one part as transformers writes that part class: ``config.json`` (with
    ``architectures``) and the weights under the part's own state-dict names (tie targets left
    out), which transformers' ``AutoModel`` / ``AutoModelForCausalLM`` and :func:`load_part` read."""
    if format not in PART_FORMATS:
        raise ValueError(f"a part model saves as {', '.join(PART_FORMATS)}; got format={format!r} "
                         "(tf_model.h5 is written for composite models only)")
    config = copy.deepcopy(config)
    if architecture:
        config.architectures = [hf_class_name(architecture)]
    weights, _ = match_state(weights, spec)

    written: list[str] = []

    def fill(tmp: str) -> list[str]:
        config.save_pretrained(tmp)
        written.extend(["config.json", *write_weights(tmp, weights, spec, format, max_shard_size, config)])
        return written

    atomic_directory(save_directory, fill, format_files(format))
    return written


def part_role(part_class: Any) -> str:
    """``"decoder"`` for a causal-LM part class (it can take encoder states), else ``"encoder"``."""
    role = getattr(part_class, "role", None)
    if role in ("encoder", "decoder"):
        return role
    return "decoder" if any(hasattr(part_class, m) for m in ("cross_kv", "cross_cache", "init_cache")) else "encoder"


def base_model_prefix(config: PretrainedConfig, role: str) -> str:
    """transformers' ``base_model_prefix`` of a part class (``bert``, ``transformer``, ``model``, ...)."""
    # the same in both roles for every supported type (aliases resolved: xlm-roberta -> roberta,
    # bert-generation -> bert); types without a decoder use their model_type (electra)
    base = base_prefix(config.model_type)
    return base.split(".")[0] if base else config.model_type


def newly_initialised_message(names: list[str]) -> str:
    """transformers' WARNING text for weights a checkpoint lacked (per-layer names collapsed)."""
    seen = dict.fromkeys(re.sub(r"\.\d+\.", ".*.", n) for n in names)
    return ("Some weights were not in the checkpoint and are newly initialized: " + ", ".join(seen)
            + ". You should probably TRAIN this model on a down-stream task to be able to use it for predictions "
            "and inference.")


_WORD_EMBEDDING_LEAVES = ("word_embeddings.weight", "wte.weight", "embed_tokens.weight")


def input_embedding_name(spec: ModelSpec) -> str:
    """The canonical name of a part's input word embedding (``get_input_embeddings``)."""
    for p in spec:
        if p.name.endswith(_WORD_EMBEDDING_LEAVES):
            return p.name
    raise ValueError("this model has no input word embedding")


def load_part_for_class(part_class: Any, name_or_path: str | os.PathLike, config: Any = None,
                        **kwargs: Any) -> tuple[PartLoad, dict[str, Any]]:
    """What every backend's ``PartClass.from_pretrained`` does before building the part:
    split hub / format / loading keywords from config overrides, load the checkpoint for the
    class's role (encoder parts get ``is_decoder=False``), record ``name_or_path``, and log
    transformers' WARNING naming weights the checkpoint lacked.  Returns the load and the
    loading options (``output_loading_info``, ...); :func:`loading_info` builds that dict."""
    import logging

    options = pop_loading_options(kwargs)
    hub = split_hub_kwargs(kwargs)
    hints = {k: kwargs.pop(k) for k in _FORMAT_HINTS if k in kwargs}
    if options.get("use_safetensors") is not None:
        hints["use_safetensors"] = options["use_safetensors"]
    role = part_role(part_class)
    part = load_part(name_or_path, role=role, config_overrides=kwargs, config=config, **hub, **hints)
    if role == "encoder":
        part.config.is_decoder = False
        part.config.add_cross_attention = False
    part.config.name_or_path = os.fspath(name_or_path)
    if part.initialized:
        logging.getLogger(part_class.__module__).warning(newly_initialised_message(part.initialized))
    return part, options


def loading_info(part: PartLoad) -> dict[str, list[str]]:
    """transformers' ``output_loading_info=True`` dict."""
    return {"missing_keys": list(part.initialized), "unexpected_keys": list(part.unexpected),
            "mismatched_keys": [], "error_msgs": []}


def split_save_kwargs(kwargs: dict[str, Any], where: str = "save_pretrained") -> tuple[bool, dict[str, Any]]:
    """transformers' ``save_pretrained`` keywords beyond the format ones, checked once for
    every backend: returns ``(is_main_process, push_to_hub keywords)``.  Refused with the
    reason: ``variant``, ``save_function``, ``saved_model=True``, ``signatures``; accepted
    without effect: ``save_peft_format`` (adapters are saved by ``save_adapter``), ``version``;
    anything else is a ``TypeError`` naming it."""
    from encdec.hub import PUSH_KWARGS

    kwargs = dict(kwargs)
    is_main = bool(kwargs.pop("is_main_process", True))
    if kwargs.pop("variant", None) is not None:
        raise NotImplementedError(f"{where}(variant=...): weight-file variants are not written by encdec")
    if kwargs.pop("save_function", None) is not None:
        raise NotImplementedError(f"{where}(save_function=...): encdec writes its files itself (atomically)")
    if kwargs.pop("saved_model", False):
        raise NotImplementedError(f"{where}(saved_model=True): use TFEncoderDecoderModel.export(path) for a SavedModel")
    if kwargs.pop("signatures", None) is not None:
        raise NotImplementedError(f"{where}(signatures=...): use TFEncoderDecoderModel.export(path) for serving signatures")
    kwargs.pop("save_peft_format", None)
    kwargs.pop("version", None)
    push = {k: kwargs.pop(k) for k in list(kwargs) if k in PUSH_KWARGS}
    if kwargs:
        raise TypeError(f"{where} got unexpected keyword argument(s): {', '.join(sorted(kwargs))}; "
                        f"push_to_hub keywords: {', '.join(PUSH_KWARGS)}")
    return is_main, push
