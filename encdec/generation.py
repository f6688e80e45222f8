"""Generation settings (``generation_config.json``) and their validation.

Backends run the decode loops; what a setting means, its defaults, how it combines with
the model config and which combinations are contradictory is decided here, once.
"""
from __future__ import annotations

import copy
import difflib
import json
import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from encdec._io_utils import atomic_write_text

GENERATION_CONFIG_NAME = "generation_config.json"
logger = logging.getLogger(__name__)

#: transformers 4.57 generation settings encdec does not implement, with the value that
#: switches each off.  Any other value is refused by ``generate`` (and warned about on load);
#: ``None`` always means "off".
UNIMPLEMENTED_NEUTRAL: dict[str, Any] = {
    "stop_strings": None, "token_healing": False, "guidance_scale": None,
    "watermarking_config": None, "penalty_alpha": None, "dola_layers": None,
    "diversity_penalty": 0.0, "num_beam_groups": 1, "constraints": None, "force_words_ids": None,
    "forced_decoder_ids": None, "prompt_lookup_num_tokens": None, "assistant_early_exit": None,
    "assistant_model": None, "prefix_allowed_tokens_fn": None, "negative_prompt_ids": None,
    "negative_prompt_attention_mask": None,
}
#: transformers settings that change only speed, memory or what is returned (never the ids):
#: accepted and not acted on.
NO_EFFECT_SETTINGS = (
    "cache_implementation", "cache_config", "return_legacy_cache", "prefill_chunk_size", "low_memory",
    "disable_compile", "compile_config", "is_assistant", "num_assistant_tokens", "num_assistant_tokens_schedule",
    "assistant_confidence_threshold", "max_matching_ngram_size", "assistant_lookbehind", "target_lookbehind",
    "_from_model_config", "_original_object_hash", "_commit_hash",
)


def unimplemented_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The transformers generation settings in ``values`` that encdec does not implement and
    that are not at their "off" value."""
    return {k: v for k, v in values.items()
            if k in UNIMPLEMENTED_NEUTRAL and v is not None and v != UNIMPLEMENTED_NEUTRAL[k]}
#: generation ids a model config may carry (BART configs carry the forced ones).
_MODEL_IDS = ("eos_token_id", "pad_token_id", "decoder_start_token_id", "bos_token_id",
              "forced_bos_token_id", "forced_eos_token_id")


@dataclass
class GenerationConfig:
    max_length: int = 20
    max_new_tokens: int | None = None
    min_length: int = 0
    min_new_tokens: int | None = None
    do_sample: bool = False
    num_beams: int = 1
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    decoder_start_token_id: int | None = None
    bos_token_id: int | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | list[int] | None = None
    # --- further logits processors and warpers (transformers 4.57's meanings) ---------
    bad_words_ids: list[list[int]] | None = None
    suppress_tokens: list[int] | None = None
    begin_suppress_tokens: list[int] | None = None
    sequence_bias: Any = None
    renormalize_logits: bool = False
    remove_invalid_values: bool = False
    encoder_repetition_penalty: float = 1.0
    encoder_no_repeat_ngram_size: int = 0
    exponential_decay_length_penalty: Any = None
    typical_p: float = 1.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    min_p: float | None = None
    max_time: float | None = None
    use_cache: bool = True
    # --- outputs ----------------------------------------------------------------------
    return_dict_in_generate: bool = False
    output_scores: bool = False
    output_logits: bool = False
    output_attentions: bool = False
    output_hidden_states: bool = False
    #: keys we do not interpret, kept for the round trip.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    #: transformers' flag for settings made from the model config (its Seq2SeqTrainer reads
    #: and clears it); not a setting, never saved.
    _from_model_config = False

    _INT_FIELDS = ("max_length", "min_length", "num_beams", "top_k", "no_repeat_ngram_size", "num_return_sequences",
                   "encoder_no_repeat_ngram_size")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "extra"]

    # --- io -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        d.update(copy.deepcopy(self.extra))
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> "GenerationConfig":
        data = {**data, **overrides}
        known = set(cls.field_names())
        extra = {k: v for k, v in data.items() if k not in known}
        for key in ("transformers_version", "_from_model_config", "_original_object_hash", "_commit_hash"):
            extra.pop(key, None)
        cfg = cls(**{k: v for k, v in data.items() if k in known}, extra=extra)
        cfg.validate()
        unsupported = unimplemented_settings(extra)
        if unsupported:
            logger.warning("generation settings not implemented by encdec (generate refuses them until they are "
                           "switched off): %s", ", ".join(f"{k}={v!r}" for k, v in sorted(unsupported.items())))
        return cfg

    @classmethod
    def coerce(cls, value: Any, where: str = "generation_config") -> "GenerationConfig":
        """Ours as is; a transformers ``GenerationConfig`` (or a dict) through its ``to_dict()``
        (duck-typed: encdec never imports transformers)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value)
        if callable(getattr(value, "to_dict", None)) and not hasattr(value, "model_type"):
            return cls.from_dict(value.to_dict())
        raise TypeError(f"{where} must be a GenerationConfig (encdec's or transformers'), got {type(value).__name__}")

    @classmethod
    def from_model_config(cls, config: Any) -> "GenerationConfig":
        """transformers 4.57's rule: every generation setting the model config carries
        (``config.json``'s legacy keys such as ``num_beams``/``max_length``; ``None`` values
        skipped), then the decoder config's settings for those still at their default."""
        known = set(cls.field_names()) | set(UNIMPLEMENTED_NEUTRAL)

        def settings(cfg: Any) -> dict[str, Any]:
            data = cfg.to_dict() if callable(getattr(cfg, "to_dict", None)) else dict(vars(cfg))
            return {k: v for k, v in data.items() if k in known and v is not None}

        values = settings(config)
        decoder = getattr(config, "decoder", None)
        if decoder is not None:
            default = cls().to_dict()
            for key, value in settings(decoder).items():
                if key not in values or values[key] == default.get(key, UNIMPLEMENTED_NEUTRAL.get(key)):
                    values[key] = value
        values = {k: v for k, v in values.items() if k in cls.field_names() or v != UNIMPLEMENTED_NEUTRAL.get(k)}
        cfg = cls.from_dict(values)
        cfg._from_model_config = True
        return cfg

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenerationConfig) and self.to_dict() == other.to_dict()

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        os.makedirs(save_directory, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        atomic_write_text(os.path.join(save_directory, GENERATION_CONFIG_NAME), text)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> "GenerationConfig":
        from encdec.hub import HUB_KWARGS, resolve_file

        hub_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in HUB_KWARGS}
        path = resolve_file(name_or_path, GENERATION_CONFIG_NAME, **hub_kwargs)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not a generation_config.json (not UTF-8 text)") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object of generation settings, got {type(data).__name__}")
        return cls.from_dict(data, **kwargs)

    # --- semantics ----------------------------------------------------------------------
    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set known fields from ``kwargs`` (transformers settings we do not implement go to
        ``extra``, checked by ``generate``); return the keys that are not generation settings."""
        names = set(self.field_names())
        rest = {}
        for key, value in kwargs.items():
            if key in names:
                setattr(self, key, value)
            elif key in UNIMPLEMENTED_NEUTRAL:
                self.extra[key] = value
            elif key in NO_EFFECT_SETTINGS and not (value and (key.startswith("output_") or key == "return_dict_in_generate")):
                self.extra[key] = value
            else:
                rest[key] = value
        return rest

    @property
    def eos_token_ids(self) -> list[int]:
        return _id_list(self.eos_token_id)

    @property
    def forced_eos_token_ids(self) -> list[int]:
        return _id_list(self.forced_eos_token_id)

    def validate(self) -> None:
        """Reject values and combinations that cannot mean anything."""
        # transformers writes None for some switched-off settings (e.g. output_logits)
        for f in fields(self):
            if f.name in _NONE_MEANS_DEFAULT and getattr(self, f.name) is None:
                setattr(self, f.name, f.default)
        for name in self._INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"generation setting `{name}` must be an int, got {value!r}")
        for name in ("max_new_tokens", "min_new_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"generation setting `{name}` must be a non-negative int or None, got {value!r}")
        if self.max_length < 1:
            raise ValueError(f"`max_length` must be at least 1, got {self.max_length}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be at least 1, got {self.max_new_tokens}")
        if self.num_beams < 1:
            raise ValueError(f"`num_beams` must be at least 1, got {self.num_beams}")
        if self.num_return_sequences < 1:
            raise ValueError(f"`num_return_sequences` must be at least 1, got {self.num_return_sequences}")
        if not self.do_sample and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"`num_return_sequences` ({self.num_return_sequences}) must be <= `num_beams` "
                f"({self.num_beams}) without sampling"
            )
        if self.do_sample and self.num_beams > 1:
            raise ValueError("beam sampling (do_sample=True with num_beams > 1) is not supported")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise ValueError(f"`temperature` must be a positive number, got {self.temperature!r}")
        if self.top_k < 0:
            raise ValueError(f"`top_k` must be >= 0, got {self.top_k}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p!r}")
        if not (isinstance(self.repetition_penalty, (int, float)) and self.repetition_penalty > 0):
            raise ValueError(f"`repetition_penalty` must be a positive number, got {self.repetition_penalty!r}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"`no_repeat_ngram_size` must be >= 0, got {self.no_repeat_ngram_size}")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"`early_stopping` must be True, False or 'never', got {self.early_stopping!r}")
        for name in ("eos_token_id", "forced_eos_token_id"):
            for eos in _id_list(getattr(self, name)):
                if not isinstance(eos, int) or isinstance(eos, bool):
                    raise ValueError(f"`{name}` must be an int or a list of ints, got {getattr(self, name)!r}")
        bos = self.forced_bos_token_id
        if bos is not None and (not isinstance(bos, int) or isinstance(bos, bool)):
            raise ValueError(f"`forced_bos_token_id` must be an int or None, got {bos!r}")
        self._validate_processors()

    def _validate_processors(self) -> None:
        def number(name: str, ok: Any, expected: str, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok(value):
                raise ValueError(f"generation setting `{name}` must be {expected}, got {value!r}")

        number("length_penalty", math.isfinite, "a finite number")
        number("encoder_repetition_penalty", lambda v: v > 0, "a positive number")
        number("typical_p", lambda v: 0 < v <= 1, "in (0, 1]")
        number("epsilon_cutoff", lambda v: 0 <= v < 1, "in [0, 1)")
        number("eta_cutoff", lambda v: 0 <= v < 1, "in [0, 1)")
        number("min_p", lambda v: 0 <= v <= 1, "in [0, 1] or None", optional=True)
        number("max_time", lambda v: v > 0, "a positive number of seconds or None", optional=True)
        if self.encoder_no_repeat_ngram_size < 0:
            raise ValueError(f"`encoder_no_repeat_ngram_size` must be >= 0, got {self.encoder_no_repeat_ngram_size}")
        for name in ("renormalize_logits", "remove_invalid_values", "use_cache", "return_dict_in_generate",
                     "output_scores", "output_logits", "output_attentions", "output_hidden_states"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"generation setting `{name}` must be True or False, got {getattr(self, name)!r}")
        for name in ("suppress_tokens", "begin_suppress_tokens"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (list, tuple)) and all(_is_token(t) for t in value)):
                raise ValueError(f"`{name}` must be a list of non-negative token ids, got {value!r}")
        bad = self.bad_words_ids
        if bad is not None and not (isinstance(bad, (list, tuple)) and bad and all(
                isinstance(w, (list, tuple)) and w and all(_is_token(t) for t in w) for w in bad)):
            raise ValueError(f"`bad_words_ids` must be a non-empty list of non-empty lists of token ids, got {bad!r}")
        sequence_bias_items(self.sequence_bias)
        decay = self.exponential_decay_length_penalty
        if decay is not None and not (isinstance(decay, (list, tuple)) and len(decay) == 2 and _is_token(decay[0])
                                      and isinstance(decay[1], (int, float)) and not isinstance(decay[1], bool)
                                      and math.isfinite(decay[1])):
            raise ValueError("`exponential_decay_length_penalty` must be a (start_index, decay_factor) pair, "
                             f"got {decay!r}")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def sequence_bias_items(value: Any) -> tuple[tuple[tuple[int, ...], float], ...]:
    """``sequence_bias`` as ``((token ids, bias), ...)``: transformers' list form
    ``[[ids, bias], ...]`` or the dict form ``{tuple(ids): bias}``."""
    if value is None:
        return ()
    items = value.items() if isinstance(value, dict) else value
    out = []
    try:
        for ids, bias in items:
            ids = (ids,) if isinstance(ids, int) else tuple(ids)
            if not ids or not all(_is_token(t) for t in ids) or isinstance(bias, bool) or not isinstance(bias, (int, float)):
                raise TypeError
            out.append((ids, float(bias)))
    except (TypeError, ValueError):
        raise ValueError("`sequence_bias` must be a list of [token ids, bias] pairs (or a dict from token-id tuples "
                         f"to biases), got {value!r}") from None
    return tuple(out)


_NONE_MEANS_DEFAULT = ("renormalize_logits", "remove_invalid_values", "encoder_repetition_penalty",
                       "encoder_no_repeat_ngram_size", "typical_p", "epsilon_cutoff", "eta_cutoff", "use_cache",
                       "return_dict_in_generate", "output_scores", "output_logits", "output_attentions",
                       "output_hidden_states")


class UnsupportedGenerationSetting(NotImplementedError, ValueError):
    """A transformers generation setting this library does not implement was set."""


def _id_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else list(value)


@dataclass(frozen=True)
class DecodePlan:
    """Everything a backend's decode loop needs, resolved and checked.

    Lengths count decoder tokens including the start token, as in transformers'
    encoder-decoder generation: ``max_length`` is the total output length.
    """

    max_length: int
    min_length: int
    do_sample: bool
    num_beams: int
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    no_repeat_ngram_size: int
    length_penalty: float
    early_stopping: bool | str
    num_return_sequences: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    decoder_start_token_id: int
    #: False when the configs set neither a pad nor an eos id: ``pad_token_id`` is then a
    #: buffer filler and the default encoder mask is all ones (transformers' rule).
    mask_pads: bool = True
    #: forced as the first generated token (length 1 -> 2), when set.
    forced_bos_token_id: int | None = None
    #: forced as the last token (at length ``max_length - 1``), when non-empty.
    forced_eos_token_ids: tuple[int, ...] = ()
    #: decoder prompt length (1: the start token alone).
    prompt_length: int = 1
    sequence_bias: tuple[tuple[tuple[int, ...], float], ...] = ()
    #: ``bad_words_ids`` without single-token eos entries (transformers drops those).
    bad_words: tuple[tuple[int, ...], ...] = ()
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    #: length at which ``begin_suppress_tokens`` apply.
    begin_index: int = 1
    encoder_repetition_penalty: float = 1.0
    encoder_no_repeat_ngram_size: int = 0
    #: (absolute start length, factor) of the exponential decay length penalty.
    exponential_decay: tuple[int, float] | None = None
    remove_invalid_values: bool = False
    renormalize_logits: bool = False
    typical_p: float = 1.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    min_p: float | None = None
    max_time: float | None = None
    use_cache: bool = True
    return_dict_in_generate: bool = False
    output_scores: bool = False
    output_logits: bool = False
    output_attentions: bool = False
    output_hidden_states: bool = False

    @property
    def mode(self) -> str:
        if self.do_sample:
            return "sample"
        return "beam" if self.num_beams > 1 else "greedy"


#: settings whose None transformers reads as "off" (it leaves the processor or warper out): their neutral value
_OFF_WHEN_NONE = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
                  "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
                  "encoder_no_repeat_ngram_size": 0, "length_penalty": 1.0}


def resolve_generation(
    model_config: Any,
    generation_config: GenerationConfig | None,
    kwargs: dict[str, Any],
    start_length: int = 1,
) -> tuple[DecodePlan, dict[str, Any]]:
    """Merge the model's defaults, ``generation_config`` and call kwargs into a
    :class:`DecodePlan`; return it with the kwargs that are not generation settings
    (model inputs such as ``attention_mask``).

    ``start_length`` is the length of the decoder prompt (1: just the start token).
    """
    generation_config = GenerationConfig.coerce(generation_config)
    cfg = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig.from_model_config(model_config)
    base = GenerationConfig.from_model_config(model_config)
    for name in _MODEL_IDS:
        if getattr(cfg, name) is None:
            setattr(cfg, name, getattr(base, name))
    rest = cfg.update(**kwargs)
    for name, off in _OFF_WHEN_NONE.items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, off)
    cfg.validate()
    # what transformers' trainers pass along: labels (Seq2SeqTrainer's predict_with_generate
    # hands generate the whole batch) are not model inputs of generation; synced_gpus only
    # matters for sharded (ZeRO-3/FSDP) models, which a single process never has.
    rest.pop("labels", None)
    if rest.pop("synced_gpus", False):
        raise NotImplementedError("generate(..., synced_gpus=True) is not supported (no ZeRO-3/FSDP-sharded generation)")
    unsupported = unimplemented_settings(cfg.extra)
    if unsupported:
        raise UnsupportedGenerationSetting(
            "generation settings not implemented by encdec: "
            + ", ".join(f"{k}={v!r}" for k, v in sorted(unsupported.items()))
            + "; switch them off ("
            + ", ".join(f"{k}={UNIMPLEMENTED_NEUTRAL[k]!r}" for k in sorted(unsupported))
            + ") in the call or in model.generation_config"
        )

    start = cfg.decoder_start_token_id
    if start is None:
        start = cfg.bos_token_id
    if start is None:
        raise ValueError(
            "generate needs a decoder start token: set `decoder_start_token_id` on the model config "
            "or the generation config (e.g. tokenizer.cls_token_id)"
        )
    eos = tuple(cfg.eos_token_ids)
    pad = cfg.pad_token_id
    if pad is None:
        pad = eos[0] if eos else None
    # no pad and no eos id (transformers generates then too): every row runs to max_length,
    # so nothing is padded; 0 only fills buffers, and no input id is masked by default
    mask_pads = pad is not None
    max_length = start_length + cfg.max_new_tokens if cfg.max_new_tokens is not None else cfg.max_length
    min_length = start_length + cfg.min_new_tokens if cfg.min_new_tokens is not None else cfg.min_length
    _warn_as_transformers(cfg, kwargs, min_length, max_length)
    if max_length <= start_length:
        raise ValueError(
            f"max_length ({max_length}) leaves no room to generate after the {start_length}-token decoder "
            "prompt; raise `max_length` or set `max_new_tokens`"
        )
    vocab = getattr(getattr(model_config, "decoder", model_config), "vocab_size", None)
    bias = sequence_bias_items(cfg.sequence_bias)
    bad = tuple(tuple(w) for w in (cfg.bad_words_ids or ()) if not (len(w) == 1 and w[0] in eos))
    named = [("sequence_bias", t) for ids, _ in bias for t in ids] + [("bad_words_ids", t) for w in bad for t in w]
    named += [(n, t) for n in ("suppress_tokens", "begin_suppress_tokens") for t in (getattr(cfg, n) or ())]
    for name, token in named:
        if vocab is not None and token >= vocab:
            raise ValueError(f"`{name}` holds token id {token}, outside the decoder's vocabulary of {vocab}")
    begin_index = start_length if (start_length > 1 or cfg.forced_bos_token_id is None) else start_length + 1
    decay = cfg.exponential_decay_length_penalty
    if decay is not None and not eos:
        raise ValueError("`exponential_decay_length_penalty` needs `eos_token_id`")
    plan = DecodePlan(
        max_length=max_length,
        min_length=min_length,
        do_sample=bool(cfg.do_sample),
        num_beams=cfg.num_beams,
        temperature=float(cfg.temperature),
        top_k=cfg.top_k,
        top_p=float(cfg.top_p),
        repetition_penalty=float(cfg.repetition_penalty),
        no_repeat_ngram_size=cfg.no_repeat_ngram_size,
        length_penalty=float(cfg.length_penalty),
        early_stopping=cfg.early_stopping,
        num_return_sequences=cfg.num_return_sequences,
        eos_token_ids=eos,
        pad_token_id=int(pad) if mask_pads else 0,
        mask_pads=mask_pads,
        decoder_start_token_id=int(start),
        forced_bos_token_id=cfg.forced_bos_token_id,
        forced_eos_token_ids=tuple(cfg.forced_eos_token_ids),
        prompt_length=start_length,
        sequence_bias=bias,
        bad_words=bad,
        suppress_tokens=tuple(cfg.suppress_tokens or ()),
        begin_suppress_tokens=tuple(cfg.begin_suppress_tokens or ()),
        begin_index=begin_index,
        encoder_repetition_penalty=float(cfg.encoder_repetition_penalty),
        encoder_no_repeat_ngram_size=cfg.encoder_no_repeat_ngram_size,
        exponential_decay=None if decay is None else (int(decay[0]) + start_length, float(decay[1])),
        remove_invalid_values=cfg.remove_invalid_values,
        renormalize_logits=cfg.renormalize_logits,
        typical_p=float(cfg.typical_p),
        epsilon_cutoff=float(cfg.epsilon_cutoff),
        eta_cutoff=float(cfg.eta_cutoff),
        min_p=None if cfg.min_p is None else float(cfg.min_p),
        max_time=None if cfg.max_time is None else float(cfg.max_time),
        use_cache=cfg.use_cache,
        return_dict_in_generate=cfg.return_dict_in_generate,
        output_scores=cfg.output_scores,
        output_logits=cfg.output_logits,
        output_attentions=cfg.output_attentions,
        output_hidden_states=cfg.output_hidden_states,
    )
    return plan, rest


def _warn_as_transformers(cfg: GenerationConfig, kwargs: dict[str, Any], min_length: int, max_length: int) -> None:
    """transformers 4.57's warnings on settings that have no effect: sampling flags without
    sampling and beam flags without beams, ``max_length`` passed with ``max_new_tokens`` (its
    logger), and a minimum length beyond the maximum (a ``UserWarning``)."""
    unused = []
    if not cfg.do_sample:
        unused += [n for n, off in (("temperature", 1.0), ("top_p", 1.0), ("typical_p", 1.0), ("epsilon_cutoff", 0.0),
                                    ("eta_cutoff", 0.0)) if getattr(cfg, n) not in (None, off)]
        unused += [n for n, on in (("min_p", cfg.min_p is not None), ("top_k", cfg.top_k not in (None, 0, 50))) if on]
    if cfg.num_beams == 1:
        unused += [n for n, off in (("early_stopping", False), ("length_penalty", 1.0)) if getattr(cfg, n) not in (None, off)]
    if unused:
        logger.warning("The following generation flags are not valid and may be ignored: %s.", sorted(unused))
    if cfg.max_new_tokens is not None and kwargs.get("max_length") is not None:
        logger.warning("Both `max_new_tokens` (=%s) and `max_length` (=%s) are set; `max_new_tokens` takes precedence.",
                       cfg.max_new_tokens, kwargs["max_length"])
    if min_length > max_length:
        warnings.warn(f"Unfeasible length constraints: the minimum length ({min_length}) is larger than the maximum "
                      f"length ({max_length}); generation stops at the maximum length", UserWarning, stacklevel=3)


def beam_fill_token_id(plan: DecodePlan) -> int:
    """The id beam search writes where a hypothesis has no token: after a finished hypothesis
    ends, and in placeholder rows (fewer finished hypotheses than ``num_return_sequences``,
    which keep the start token or prompt followed by this id).  transformers 4.57's rule:
    the pad id, or the first eos id when the pad id is 0 (0 counts as unset there), or -1
    without eos ids.  Every backend's beam search uses it, and its tie rule: among exactly
    equal scores the lower index wins -- the lower ``(beam, token)`` among a step's
    candidates, the hypothesis kept earlier (placeholders included) among finished ones."""
    if not plan.eos_token_ids:
        return -1
    return plan.pad_token_id or plan.eos_token_ids[0]


def refuse_in_backend(plan: DecodePlan, backend: str, names: tuple[str, ...]) -> None:
    """Refuse the plan settings in ``names`` that ``backend`` does not implement, when set."""
    defaults = {f.name: f.default for f in fields(DecodePlan)}
    for name in names:
        if getattr(plan, name) != defaults[name]:
            raise UnsupportedGenerationSetting(
                f"generation setting `{name}`={getattr(plan, name)!r} is not implemented by the {backend} backend "
                "(see docs/generation.md, 'Backend differences')")


def decoder_prompt(ids: Any, decoder_start_token_id: int) -> np.ndarray:
    """A ``decoder_input_ids`` prompt as ``generate`` uses it: int64 [batch, length], with the
    start token put in front when no row starts with it (transformers' rule)."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[1] < 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"decoder_input_ids must be integer ids [batch, length >= 1], got {ids.dtype} {ids.shape}")
    ids = ids.astype(np.int64)
    if (ids[:, 0] != decoder_start_token_id).all():
        ids = np.concatenate([np.full((ids.shape[0], 1), decoder_start_token_id, np.int64), ids], axis=1)
    return ids


def default_attention_mask(input_ids: Any, plan: DecodePlan, xp: Any) -> Any:
    """The encoder mask ``generate`` uses when none is given, as transformers does: pad
    tokens are masked unless the pad id is also an eos id.  (Where no pad occurs this is
    all ones, so no data-dependent branch is needed and it traces under jit/XLA.)
    ``xp`` is a NumPy-like namespace; the mask has the ids' dtype."""
    ones = xp.ones_like(input_ids)
    if not plan.mask_pads or plan.pad_token_id in plan.eos_token_ids:
        return ones
    return xp.where(input_ids != plan.pad_token_id, ones, xp.zeros_like(input_ids))


class TextStreamer:
    """A minimal streamer with transformers' ``put`` / ``end`` protocol: prints (or hands to
    ``on_text``) the text of the first row as ``generate`` produces it.  ``decode`` is any
    callable from a list of ids to text (e.g. ``tokenizer.decode``); with ``skip_prompt``
    the decoder prompt (the start token) is not shown."""

    def __init__(self, decode: Any, skip_prompt: bool = False, on_text: Any = None) -> None:
        self.decode, self.skip_prompt = decode, skip_prompt
        self.on_text = on_text or (lambda text: print(text, end="", flush=True))
        self.ids: list[int] = []
        self.shown = 0
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        ids = np.asarray(value).reshape(np.asarray(value).shape[0], -1)[0].tolist() if np.ndim(value) else [int(value)]
        if not self.prompt_seen:
            self.prompt_seen = True
            if self.skip_prompt:
                return
        self.ids.extend(int(i) for i in ids)
        text = self.decode(self.ids)
        self.on_text(text[self.shown:])
        self.shown = len(text)

    def end(self) -> None:
        self.on_text("\n")
        self.ids, self.shown, self.prompt_seen = [], 0, False


def check_model_inputs(rest: dict[str, Any], accepted: "list[str] | tuple[str, ...]", where: str = "generate") -> None:
    """Refuse keywords left after the generation settings that are not model inputs either,
    with a suggestion (``max_lenght`` -> ``max_length``), before they reach a model."""
    unknown = sorted(k for k in rest if k not in accepted)
    if not unknown:
        return
    vocabulary = [*GenerationConfig.field_names(), *UNIMPLEMENTED_NEUTRAL, *NO_EFFECT_SETTINGS, *accepted]
    hints = []
    for key in unknown:
        if key in NO_EFFECT_SETTINGS:
            raise TypeError(f"{where}: `{key}={rest[key]!r}` is not supported by this backend's generate")
        close = difflib.get_close_matches(key, vocabulary, n=1)
        hints.append(f"`{key}`" + (f" (did you mean `{close[0]}`?)" if close else ""))
    raise TypeError(
        f"{where} got {', '.join(hints)}: not a generation setting nor an encoder input; "
        f"encoder inputs accepted here: {', '.join(accepted) or 'none'}"
    )


def cross_attention_query_streams(config: Any) -> int:
    """Cross-attention query rows per decoded token: 1, or a ProphetNet decoder's main stream
    plus its ``ngram`` predict streams (transformers returns all of them, stream-major)."""
    decoder = config.decoder
    return 1 + int(decoder.ngram) if decoder.model_type == "prophetnet" else 1


def unstack_step_outputs(plan: DecodePlan, recorded: dict[str, Any], steps: int, source_length: int,
                         first: dict[str, Any] | None = None, cross_query_streams: int = 1) -> dict[str, Any]:
    """transformers' per-step ``generate`` fields from a compiled loop's preallocated buffers.

    ``recorded`` holds ``scores`` / ``logits`` as [max_steps, rows, vocab] arrays and
    ``decoder_attentions`` / ``cross_attentions`` / ``decoder_hidden_states`` as tuples (one
    per layer; hidden states: embeddings first) of [max_steps, rows, ...] arrays whose query
    axis is 1 (cached loop) or the whole static length (uncached loop) and whose key axes are
    static too.  Step ``t`` (``steps`` of them ran) is cut to transformers' shapes: queries
    ``1`` with the cache (the whole prompt on the first step), ``prompt_length + t`` without;
    self-attention keys ``prompt_length + t``; cross-attention keys ``source_length``.
    ``first``: the first step's decoder fields when a cached loop ran a longer prompt apart.
    ``cross_query_streams`` (:func:`cross_attention_query_streams`): cross-attention queries
    hold that many rows per token, which a cut can keep only when each step's buffer holds
    exactly the step's tokens (the cached loop).  Slicing only: works on numpy, jax and
    TensorFlow arrays."""
    if cross_query_streams > 1 and not plan.use_cache and "cross_attentions" in recorded:
        raise UnsupportedGenerationSetting(
            f"cross_attentions with {cross_query_streams} query streams per token (ProphetNet) need use_cache=True")
    prompt = plan.prompt_length
    out: dict[str, Any] = {}
    for name in ("scores", "logits"):
        if name in recorded:
            out[name] = tuple(recorded[name][t] for t in range(steps))
    for name in ("decoder_attentions", "cross_attentions", "decoder_hidden_states"):
        if name not in recorded:
            continue
        per_step = []
        for t in range(steps):
            source = recorded[name] if first is None or t > 0 else first[name]
            queries = (prompt if t == 0 else 1) if plan.use_cache else prompt + t
            layers = []
            for layer in source:
                x = layer[t] if source is recorded[name] else layer
                if name == "decoder_hidden_states":
                    layers.append(x[:, :queries])
                else:
                    if name == "decoder_attentions":
                        layers.append(x[:, :, :queries, :prompt + t])
                    else:
                        layers.append(x[:, :, :queries * cross_query_streams, :source_length])
            per_step.append(tuple(layers))
        out[name] = tuple(per_step)
    return out

