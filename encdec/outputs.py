"""Output containers with attribute, key and index access (HF ``ModelOutput`` semantics).

``None`` fields are skipped by key/index access and ``to_tuple()``, as in transformers.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any


class ModelOutput(OrderedDict):
    """Base for dataclass outputs; subclasses are declared with ``@dataclass``."""

    def __post_init__(self) -> None:
        names = [f.name for f in fields(self)]  # type: ignore[arg-type]
        first = getattr(self, names[0])
        if isinstance(first, dict) and all(getattr(self, n) is None for n in names[1:]):
            first = iter(first.items())  # rebuilt from a dict, as accelerate does (fp32 outputs under autocast)
        if hasattr(first, "__next__") and all(getattr(self, n) is None for n in names[1:]):
            # rebuilt from (key, value) pairs, as tf.nest does for mappings (e.g. tf.function outputs)
            object.__setattr__(self, names[0], None)
            OrderedDict.pop(self, names[0], None)
            for key, value in first:
                if key not in names:
                    raise KeyError(f"{type(self).__name__} has no field {key!r}")
                object.__setattr__(self, key, value)
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is not None:
                super().__setitem__(f.name, value)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return dict(self.items())[key]
        return self.to_tuple()[key]

    def __setattr__(self, name: str, value: Any) -> None:
        if value is not None and name in {f.name for f in fields(self)}:  # type: ignore[arg-type]
            super().__setitem__(name, value)
        super().__setattr__(name, value)

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        super().__setattr__(key, value)

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self[k] for k in self.keys())

    def __reduce__(self):  # keep pickling/copy working for dataclass subclasses
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))  # type: ignore[arg-type]


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: Any = None
    attentions: Any = None


@dataclass
class BaseModelOutputWithPoolingAndCrossAttentions(ModelOutput):
    """What a part's base model returns (pooler output for encoders, cache and
    cross-attentions for decoders)."""

    last_hidden_state: Any = None
    pooler_output: Any = None
    past_key_values: Any = None
    hidden_states: Any = None
    attentions: Any = None
    cross_attentions: Any = None


@dataclass
class CausalLMOutputWithCrossAttentions(ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: Any = None
    attentions: Any = None
    cross_attentions: Any = None


@dataclass
class ProphetNetDecoderLMOutput(ModelOutput):
    """What ``ProphetNetForCausalLM`` returns: ``logits`` of the first predict stream (the
    next token), ``logits_ngram`` of the others; ``hidden_states`` / ``attentions`` are the
    main stream's, ``*_ngram`` the predict streams'."""

    loss: Any = None
    logits: Any = None
    logits_ngram: Any = None
    past_key_values: Any = None
    hidden_states: Any = None
    hidden_states_ngram: Any = None
    attentions: Any = None
    ngram_attentions: Any = None
    cross_attentions: Any = None


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    decoder_hidden_states: Any = None
    decoder_attentions: Any = None
    cross_attentions: Any = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: Any = None
    encoder_attentions: Any = None


@dataclass
class GenerateOutput(ModelOutput):
    """``generate`` result with transformers' field names: ``sequences`` [batch *
    num_return_sequences, length]; beam search also fills ``sequences_scores`` (and
    ``beam_indices`` with scores or logits); ``scores`` (processed) and ``logits`` (raw)
    hold one [rows, vocab] array per generated step when asked for."""

    sequences: Any = None
    sequences_scores: Any = None
    scores: Any = None
    logits: Any = None
    beam_indices: Any = None
    encoder_attentions: Any = None
    encoder_hidden_states: Any = None
    decoder_attentions: Any = None
    cross_attentions: Any = None
    decoder_hidden_states: Any = None
