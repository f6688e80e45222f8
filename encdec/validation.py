"""Input validation shared by every backend: one host-side check of shapes and values.

Each backend calls :func:`validate_inputs` (forward) or :func:`validate_generate_inputs`
(``generate``) at its entry point, before it traces or runs anything, so that a bad
argument fails with a message naming it, its shape or offending value and the limit it
broke, instead of an error from deep inside a framework -- or, worse, a silent result
(XLA clamps out-of-range gathers; JAX wraps 64-bit ids to 32 bits).

Shapes and dtypes are read from any array-like (numpy, torch, TensorFlow, JAX, lists).
Values are read through ``host``, a backend's function that returns a numpy array, or
``None`` when the values are not known here (traced under ``jax.jit`` / ``tf.function``);
then only shapes and dtypes are checked.  The value checks are a min/max over the id
arrays: negligible next to a forward.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from encdec.labels import IGNORE_INDEX
from encdec.specs import max_sequence_length

#: part keywords the validator checks (ids into the token-type and position tables).
PART_ID_KWARGS = ("token_type_ids", "position_ids", "decoder_token_type_ids", "decoder_position_ids")

Host = Callable[[Any], Optional[np.ndarray]]


class InputValidationError(ValueError):
    """A model input has the wrong dtype, rank, batch size, length or values."""

    # TensorFlow's autograph re-raises an error from traced code as its own type only when it
    # can rebuild it from the message; this marks the plain message constructor it checks for.
    __init__ = Exception.__init__


def numpy_host(x: Any) -> Optional[np.ndarray]:
    """Values of numpy arrays, scalars and lists (the default ``host``)."""
    return np.asarray(x)


def _shape(name: str, x: Any) -> tuple:
    shape = getattr(x, "shape", None)
    if shape is None:
        try:
            shape = np.asarray(x).shape
        except ValueError:  # ragged nested lists
            raise InputValidationError(f"{name} must be a rectangular array; got ragged nested lists") from None
    try:
        return tuple(None if d is None else int(d) for d in shape)
    except TypeError:  # unknown rank (TensorShape(None))
        return ()


def _kind(x: Any) -> str:
    """'int', 'bool', 'float' or 'other' from the dtype's name (numpy, torch, tf and jax spell them alike)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    name = str(getattr(dtype, "name", dtype)).lower()
    if "bool" in name:
        return "bool"
    if "int" in name:
        return "int"
    if "float" in name:
        return "float"
    return "other"


def _dtype_name(x: Any) -> str:
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    return str(getattr(dtype, "name", dtype))


class _Checker:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.batch_ref: Optional[tuple[str, int]] = None
        self.read: dict[int, Optional[np.ndarray]] = {}

    def shape(self, name: str, x: Any, rank: int) -> tuple:
        shape = _shape(name, x)
        if len(shape) != rank:
            dims = {2: "[batch, length]", 3: "[batch, length, hidden]"}[rank]
            raise InputValidationError(f"{name} must be {dims} (rank {rank}); got shape {shape}")
        for i, d in enumerate(shape[:2]):
            if d == 0:
                what = "batch" if i == 0 else "sequence"
                raise InputValidationError(f"{name} has an empty {what} (shape {shape}); pass at least one token per row")
        self.batch(name, shape[0])
        return shape

    def batch(self, name: str, size: Optional[int]) -> None:
        if size is None:
            return
        if self.batch_ref is None:
            self.batch_ref = (name, size)
        elif size != self.batch_ref[1]:
            raise InputValidationError(
                f"{name} has batch size {size} but {self.batch_ref[0]} has batch size {self.batch_ref[1]}")

    def values(self, name: str, x: Any) -> Optional[np.ndarray]:
        """``x`` on the host (read once per check); bfloat16 (ml_dtypes) widened to float32."""
        if x is None:
            return None
        if id(x) not in self.read:
            values = self.host(x)
            if values is not None and values.dtype.kind not in "biuf":
                values = values.astype(np.float32)
            self.read[id(x)] = values
        return self.read[id(x)]

    def ids(self, name: str, x: Any, limit: Optional[int], limit_name: str, allow_ignore: bool = False) -> Optional[tuple]:
        """Integer [batch, length] ids in ``[0, limit)`` (``-100`` too when ``allow_ignore``)."""
        if x is None:
            return None
        shape = self.shape(name, x, 2)
        if _kind(x) != "int":
            raise InputValidationError(f"{name} must hold integer token ids; got dtype {_dtype_name(x)}")
        values = self.values(name, x)
        if values is not None and values.size and (values.min() < 0 or (limit is not None and values.max() >= limit)):
            bad = values < 0
            if allow_ignore:
                bad &= values != IGNORE_INDEX
            if limit is not None:
                bad |= values >= limit
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                value = values[where].item()
                allowed = f"[0, {limit})" if limit is not None else "non-negative"
                extra = f" or {IGNORE_INDEX} (ignored by the loss)" if allow_ignore else ""
                raise InputValidationError(
                    f"{name} holds {value} at {where}; ids must be in {allowed}{extra} ({limit_name})")
        return shape

    def mask(self, name: str, x: Any, expected: Optional[tuple], expected_name: str) -> None:
        if x is None:
            return
        shape = self.shape(name, x, 2)
        if _kind(x) not in ("int", "bool", "float"):
            raise InputValidationError(f"{name} must be an integer, boolean or float 0/1 mask; got dtype {_dtype_name(x)}")
        if expected is not None and None not in shape and None not in expected[:2] and shape != tuple(expected[:2]):
            raise InputValidationError(f"{name} has shape {shape} but {expected_name} has shape {tuple(expected[:2])}")
        values = self.values(name, x)
        if values is not None and values.size and (values.min() < 0 or values.max() > 1 or values.dtype.kind == "f"):
            bad = (values != 0) & (values != 1)
            if not bad.any():
                return
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputValidationError(f"{name} holds {values[where].item()} at {where}; a mask holds only 0 and 1")

    def embeds(self, name: str, x: Any, width: Optional[int]) -> Optional[tuple]:
        if x is None:
            return None
        shape = self.shape(name, x, 3)
        if _kind(x) != "float":
            raise InputValidationError(f"{name} must be floating point; got dtype {_dtype_name(x)}")
        if width is not None and shape[2] is not None and shape[2] != width:
            raise InputValidationError(f"{name} has width {shape[2]} but the part's word embeddings have width {width}")
        self.finite(name, x)
        return shape

    def finite(self, name: str, x: Any) -> None:
        """NaN or infinity in an input would make every output non-finite, silently."""
        values = self.values(name, x)
        if values is None or not values.size or values.dtype.kind != "f":
            return
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(values.sum(dtype=np.float64)):
                return
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise InputValidationError(f"{name} holds {values[where].item()} at {where}; it must be finite")


def _embedding_width(config: Any) -> Optional[int]:
    """Width of a part's word embeddings, which ``inputs_embeds`` replace: RemBERT's
    ``input_embedding_size`` and ELECTRA's ``embedding_size`` are mapped to the hidden size after."""
    for name in ("input_embedding_size", "embedding_size", "hidden_size"):
        if getattr(config, name, None) is not None:
            return getattr(config, name)
    return None


def _length_limit(name: str, length: Optional[int], past: int, config: Any, role: str) -> None:
    limit = max_sequence_length(config)
    if limit is None or length is None:
        return
    if past + length > limit:
        at = f" after {past} cached positions" if past else ""
        raise InputValidationError(
            f"{name} has {length} positions{at}, but the {role} ({config.model_type}) embeds at most {limit} "
            f"(its max_position_embeddings table)")


def _part_ids(check: _Checker, config: Any, role: str, prefix: str, kwargs: dict) -> None:
    """``token_type_ids`` / ``position_ids`` given to a part (``prefix`` ``decoder_`` for the decoder)."""
    tt = kwargs.get(f"{prefix}token_type_ids")
    check.ids(f"{prefix}token_type_ids", tt, getattr(config, "type_vocab_size", None), f"config.{role}.type_vocab_size")
    pos = kwargs.get(f"{prefix}position_ids")
    if pos is not None and len(_shape(f"{prefix}position_ids", pos)) == 1:  # one row for the whole batch
        pos = np.asarray(check.host(pos))[None] if check.host(pos) is not None else None
    check.ids(f"{prefix}position_ids", pos, getattr(config, "max_position_embeddings", None),
              f"config.{role}.max_position_embeddings")


def validate_inputs(
    config: Any,
    *,
    input_ids: Any = None,
    attention_mask: Any = None,
    decoder_input_ids: Any = None,
    decoder_attention_mask: Any = None,
    labels: Any = None,
    inputs_embeds: Any = None,
    decoder_inputs_embeds: Any = None,
    encoder_hidden_states: Any = None,
    past_length: Optional[int] = 0,
    host: Host = numpy_host,
    require_decoder: bool = True,
    loss_mean: bool = True,
    **part_kwargs: Any,
) -> None:
    """Check a composite forward's inputs against ``config`` (an ``EncoderDecoderConfig``).

    ``encoder_hidden_states``: the encoder output when the caller passed ``encoder_outputs``.
    ``past_length``: cached decoder positions (``None``: unknown, so the decoder's position
    limit and its mask length are not checked).  ``loss_mean``: the loss is a mean over the
    labels that are not -100 (labels all -100 would make it NaN; PyTorch's ``num_items_in_batch``
    sums instead).  ``part_kwargs``: ``token_type_ids``,
    ``position_ids`` and their ``decoder_`` forms.  Raises :class:`InputValidationError`.
    """
    enc, dec = config.encoder, config.decoder
    check = _Checker(host)
    if input_ids is not None and inputs_embeds is not None:
        raise InputValidationError("pass either input_ids or inputs_embeds, not both")
    if decoder_input_ids is not None and decoder_inputs_embeds is not None:
        raise InputValidationError("pass either decoder_input_ids or decoder_inputs_embeds, not both")
    if input_ids is None and inputs_embeds is None and encoder_hidden_states is None:
        raise InputValidationError("pass input_ids (or inputs_embeds, or encoder_outputs)")

    src = check.ids("input_ids", input_ids, enc.vocab_size, "config.encoder.vocab_size")
    src_name = "input_ids"
    if src is None and inputs_embeds is not None:
        src, src_name = check.embeds("inputs_embeds", inputs_embeds, _embedding_width(enc)), "inputs_embeds"
    if src is not None and part_kwargs.get("position_ids") is None:
        _length_limit(src_name, src[1], 0, enc, "encoder")
    if encoder_hidden_states is not None:
        states = check.shape("encoder_outputs[0]", encoder_hidden_states, 3)
        if src is None:
            src, src_name = states, "encoder_outputs[0]"
    check.mask("attention_mask", attention_mask, src, src_name)
    _part_ids(check, enc, "encoder", "", part_kwargs)

    tgt = check.ids("decoder_input_ids", decoder_input_ids, dec.vocab_size, "config.decoder.vocab_size")
    tgt_name = "decoder_input_ids"
    if tgt is None and decoder_inputs_embeds is not None:
        tgt, tgt_name = check.embeds("decoder_inputs_embeds", decoder_inputs_embeds, _embedding_width(dec)), "decoder_inputs_embeds"
    lab = check.ids("labels", labels, dec.vocab_size, "config.decoder.vocab_size", allow_ignore=True)
    if lab is not None:
        _labels_usable(config, check.values("labels", labels), loss_mean,
                       shifted=decoder_input_ids is None and decoder_inputs_embeds is None)
        if tgt is None:
            tgt, tgt_name = lab, "labels"
        elif None not in lab and None not in tgt[:2] and lab != tuple(tgt[:2]):
            raise InputValidationError(f"labels has shape {lab} but {tgt_name} has shape {tuple(tgt[:2])}")
    if tgt is None and require_decoder:
        raise InputValidationError("pass decoder_input_ids (or decoder_inputs_embeds, or labels to build them from)")
    if tgt is not None and past_length is not None and part_kwargs.get("decoder_position_ids") is None:
        _length_limit(tgt_name, tgt[1], past_length, dec, "decoder")
    if past_length == 0:
        check.mask("decoder_attention_mask", decoder_attention_mask, tgt, tgt_name)
    elif decoder_attention_mask is not None:  # covers cached positions too: the batch must agree
        check.mask("decoder_attention_mask", decoder_attention_mask, None, "")
    _part_ids(check, dec, "decoder", "decoder_", part_kwargs)


def _labels_usable(config: Any, values: Optional[np.ndarray], loss_mean: bool, shifted: bool) -> None:
    """Labels that give a defined loss: not all -100 when the loss is their mean; and, when
    the decoder inputs are built from them, start and pad ids inside the decoder vocabulary."""
    if loss_mean and values is not None and values.size and bool((values == IGNORE_INDEX).all()):
        raise InputValidationError(f"labels are all {IGNORE_INDEX} (ignored): the mean loss over no tokens is "
                                   "undefined (NaN); leave such a batch out or pass labels with at least one token")
    if not shifted:
        return
    vocab = config.decoder.vocab_size
    for name in ("decoder_start_token_id", "pad_token_id"):
        value = getattr(config, name, None)
        if value is None:
            continue  # the shift names what is missing
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= int(value) < vocab:
            raise InputValidationError(
                f"config.{name}={value!r} must be a token id in [0, {vocab}) (config.decoder.vocab_size): "
                "decoder_input_ids are built from labels with it")


def validate_generation_ids(config: Any, plan: Any) -> None:
    """Every token id a :class:`~encdec.generation.DecodePlan` writes and feeds back must be
    in the decoder's vocabulary, and ``max_length`` within its position table.  (Stop ids
    ``eos_token_id`` outside the vocabulary are allowed, as in transformers: they never occur.)"""
    dec = config.decoder
    vocab = dec.vocab_size
    named = [("decoder_start_token_id", plan.decoder_start_token_id), ("pad_token_id", plan.pad_token_id),
             ("forced_bos_token_id", plan.forced_bos_token_id)]
    named += [("forced_eos_token_id", i) for i in plan.forced_eos_token_ids]
    for name, value in named:
        if value is None:
            continue
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise InputValidationError(f"generate: {name} must be an int, got {value!r}")
        if not 0 <= int(value) < vocab:
            raise InputValidationError(
                f"generate: {name}={value} is outside the decoder vocabulary [0, {vocab}) (config.decoder.vocab_size)")
    limit = max_sequence_length(dec)
    if limit is not None and plan.max_length > limit:
        raise InputValidationError(
            f"generate: max_length={plan.max_length} (start token included) exceeds the {limit} positions the decoder "
            f"({dec.model_type}) can embed; lower max_length / max_new_tokens")


def validate_generate_inputs(config: Any, plan: Any, input_ids: Any = None, attention_mask: Any = None,
                          host: Host = numpy_host, inputs_embeds: Any = None, **part_kwargs: Any) -> None:
    """``generate``'s checks: the encoder inputs (as in a forward) and :func:`validate_generation_ids`."""
    validate_inputs(config, input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                       host=host, require_decoder=False, **{k: v for k, v in part_kwargs.items() if k in PART_ID_KWARGS})
    validate_generation_ids(config, plan)
