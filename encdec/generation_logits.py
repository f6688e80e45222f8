"""What ``generate`` does to a step's logits, written once for every backend.

The logits processors and warpers of transformers 4.57 (in its order), over an array
namespace: each backend hands in an :class:`ArrayOps` over its own arrays (``torch``,
``jax.numpy``, ``tf.experimental.numpy``) and its decode loop calls :func:`process`
and :func:`warp`.  Everything here is shape-static — the current length ``cur_len`` may
be a traced scalar and the token buffer ``seqs`` [rows, buffer_len] is only read below
``cur_len`` — so the same code runs eagerly in torch and inside ``jax.jit`` /
``lax.while_loop`` and XLA-compiled ``tf.function`` loops.

Which steps run is decided from the (static) :class:`~encdec.generation.DecodePlan`;
array values never choose a Python branch.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

NEG_INF = float("-inf")
_F32_MAX = float(np.finfo(np.float32).max)


class ArrayOps:
    """The array operations the processors use.

    Defaults use NumPy's names, as ``jax.numpy`` spells them; a backend subclass
    overrides only what its framework spells differently (one line each).  Ties in
    :meth:`sort` and :meth:`top_k` go to the lower index (the rule every backend's beam
    search follows too; see docs/generation.md).
    """

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    # --- constructors -------------------------------------------------------------------
    def arange(self, n: int) -> Any:
        return self.xp.arange(n, dtype=self.xp.int32)

    def constant(self, values: Any, dtype: str = "int32") -> Any:
        return self.xp.asarray(np.asarray(values, dtype=dtype))

    def clip(self, x: Any, low: int, high: int) -> Any:
        if isinstance(x, (int, np.integer)):
            return min(max(int(x), low), high)
        return self.xp.clip(x, low, high)

    def to_int(self, x: Any) -> Any:
        """``x`` (bool or integer) as the index dtype of :meth:`arange`."""
        return x.astype(self.xp.int32)

    # --- indexing ----------------------------------------------------------------------
    def take(self, x: Any, index: Any, axis: int) -> Any:
        return self.xp.take(x, index, axis=axis)

    def take_along_last(self, x: Any, index: Any) -> Any:
        return self.xp.take_along_axis(x, index, axis=-1)

    def repeat(self, x: Any, times: int) -> Any:
        """Each row ``times`` in a row (axis 0)."""
        return self.xp.repeat(x, times, axis=0)

    # --- reductions and sorting --------------------------------------------------------
    def max(self, x: Any) -> Any:
        """Maximum over the last axis, kept as a [.., 1] column."""
        return self.xp.max(x, axis=-1, keepdims=True)

    def sort(self, x: Any) -> tuple[Any, Any]:
        """Ascending along the last axis, stable: (values, indices)."""
        order = self.xp.argsort(x, axis=-1, stable=True)
        return self.take_along_last(x, order), order

    def top_k(self, x: Any, k: int) -> tuple[Any, Any]:
        """The ``k`` largest along the last axis, ties to the lower index."""
        order = self.xp.argsort(-x, axis=-1, stable=True)[..., :k]
        return self.take_along_last(x, order), order

    def softmax(self, x: Any) -> Any:
        raise NotImplementedError

    def log_softmax(self, x: Any) -> Any:
        raise NotImplementedError

    # --- helpers built on the above ------------------------------------------------------
    def where(self, cond: Any, a: Any, b: Any) -> Any:
        """``xp.where``, or a Python choice when ``cond`` is a plain bool (torch's eager loop)."""
        if isinstance(cond, (bool, np.bool_)):
            return a if cond else b
        return self.xp.where(cond, a, b)

    def presence(self, ids: Any, valid: Any, vocab: int) -> Any:
        """Boolean [rows, vocab]: the token occurs at a ``valid`` position of its row
        (``ids``, ``valid``: [rows, n]); ids outside ``[0, vocab)`` (an encoder token the
        decoder's vocabulary lacks) count nowhere."""
        hits = (ids[:, :, None] == self.arange(vocab)[None, None, :]) & valid[:, :, None]
        return self.xp.any(hits, axis=1)

    def in_set(self, vocab: int, ids: tuple[int, ...]) -> Any:
        """Boolean [1, vocab]: the token is one of ``ids``; ids outside ``[0, vocab)`` match
        nothing (stop ids outside the vocabulary never occur; a negative one must not
        index from the end)."""
        table = np.zeros((1, vocab), bool)
        table[0, [i for i in ids if 0 <= i < vocab]] = True
        return self.constant(table, "bool")


def _repetition(ops: ArrayOps, scores: Any, seen: Any, penalty: float) -> Any:
    penalized = ops.where(scores < 0, scores * penalty, scores / penalty)
    return ops.where(seen, penalized, scores)


def _last_tokens(ops: ArrayOps, seqs: Any, cur_len: Any, n: int) -> Any:
    """The ``n`` tokens before ``cur_len`` ([rows, n]; positions before 0 read position 0)."""
    index = ops.clip(ops.arange(n) + (cur_len - n), 0, seqs.shape[1] - 1)
    return ops.take(seqs, index, axis=1)


def _ngram_ban(ops: ArrayOps, windows: Any, valid: Any, prefix: Any, vocab: int) -> Any:
    """[rows, vocab]: tokens completing an n-gram of ``windows`` [rows, w, n] whose first n-1
    tokens equal ``prefix`` [rows, n-1] (``valid`` [rows or 1, w] marks real windows)."""
    n = windows.shape[-1]
    match = ops.xp.all(windows[:, :, : n - 1] == prefix[:, None, :], axis=-1) & valid
    return ops.presence(windows[:, :, n - 1], match, vocab)


def _windows(ops: ArrayOps, ids: Any, n: int) -> Any:
    starts = ops.arange(ids.shape[1] - n + 1)
    return ops.take(ids, starts[:, None] + ops.arange(n)[None, :], axis=1), starts


def _sequence_bias(ops: ArrayOps, scores: Any, seqs: Any, cur_len: Any,
                   items: tuple[tuple[tuple[int, ...], float], ...]) -> Any:
    """transformers' SequenceBiasLogitsProcessor: single tokens always, longer sequences
    when the row ends with all but their last token."""
    vocab = scores.shape[-1]
    single = np.zeros((1, vocab), np.float32)
    for ids, bias in items:
        if len(ids) == 1:
            single[0, ids[0]] += bias
    total = ops.constant(single, "float32")
    for ids, bias in items:
        if len(ids) == 1:
            continue
        prefix = _last_tokens(ops, seqs, cur_len, len(ids) - 1)
        match = ops.xp.all(prefix == ops.constant([ids[:-1]]), axis=-1)
        match = ops.where(cur_len >= len(ids), match, ops.xp.zeros_like(match))
        total = total + ops.where(match[:, None] & ops.in_set(vocab, (ids[-1],)), bias, 0.0)
    return scores + total


def process(plan: Any, ops: ArrayOps, scores: Any, seqs: Any, cur_len: Any,
            encoder_ids: Any = None, rows_per_input: int = 1) -> Any:
    """transformers' logits processors for ``plan`` (before any user processors and the
    warpers) on ``scores`` [rows, vocab] for the token at position ``cur_len``.

    ``seqs`` [rows, buffer_len] holds the decoder tokens so far (positions < ``cur_len``);
    ``encoder_ids`` [batch, source_len] the encoder's input ids, each input's
    ``rows_per_input`` rows consecutive (needed for the encoder_* settings).
    """
    xp, vocab = ops.xp, scores.shape[-1]
    if plan.sequence_bias:
        scores = _sequence_bias(ops, scores, seqs, cur_len, plan.sequence_bias)
    if plan.encoder_repetition_penalty != 1.0 and encoder_ids is not None:
        # transformers gathers with the encoder ids of each *input* against the first `batch`
        # rows of the [batch * rows_per_input] scores; later rows are left alone.
        seen = ops.presence(encoder_ids, encoder_ids == encoder_ids, vocab)
        if rows_per_input > 1:
            seen = xp.concatenate([seen, xp.zeros_like(ops.repeat(seen, rows_per_input - 1))], axis=0)
        scores = _repetition(ops, scores, seen, 1 / plan.encoder_repetition_penalty)
    if plan.repetition_penalty != 1.0:
        written = ops.arange(seqs.shape[1])[None, :] < cur_len
        seen = ops.presence(seqs, written & (seqs == seqs), vocab)
        scores = _repetition(ops, scores, seen, plan.repetition_penalty)
    n = plan.no_repeat_ngram_size
    if n > 0 and seqs.shape[1] >= n:
        windows, starts = _windows(ops, seqs, n)
        banned = _ngram_ban(ops, windows, (starts + n <= cur_len)[None, :], _last_tokens(ops, seqs, cur_len, n - 1), vocab)
        scores = ops.where(banned, NEG_INF, scores)
    n = plan.encoder_no_repeat_ngram_size
    if n > 0 and encoder_ids is not None and encoder_ids.shape[1] >= n:
        windows, _ = _windows(ops, encoder_ids, n)
        windows = ops.repeat(windows, rows_per_input)
        real = windows[:, :, 0] == windows[:, :, 0]
        valid = ops.where(cur_len >= n - 1, real, xp.zeros_like(real))
        banned = _ngram_ban(ops, windows, valid, _last_tokens(ops, seqs, cur_len, n - 1), vocab)
        scores = ops.where(banned, NEG_INF, scores)
    if plan.bad_words:
        scores = _sequence_bias(ops, scores, seqs, cur_len, tuple((w, NEG_INF) for w in plan.bad_words))
    if plan.min_length > 0 and plan.eos_token_ids:
        scores = ops.where(cur_len < plan.min_length, ops.where(ops.in_set(vocab, plan.eos_token_ids), NEG_INF, scores), scores)
    if plan.forced_bos_token_id is not None:
        scores = ops.where(cur_len == 1, _forced(ops, scores, (plan.forced_bos_token_id,)), scores)
    if plan.forced_eos_token_ids:
        scores = ops.where(cur_len == plan.max_length - 1, _forced(ops, scores, plan.forced_eos_token_ids), scores)
    if plan.remove_invalid_values:
        scores = ops.where(scores != scores, 0.0, scores)
        scores = ops.where(scores == float("inf"), _F32_MAX, ops.where(scores == NEG_INF, -_F32_MAX, scores))
    if plan.exponential_decay is not None and plan.eos_token_ids:
        start, factor = plan.exponential_decay
        # factor ** i - 1 in float64 then float32, as Python computes it for transformers
        table = ops.constant([factor ** i - 1 for i in range(plan.max_length + 1)], "float32")
        step = ops.clip(cur_len - start, 0, plan.max_length)
        boost = xp.abs(scores) * ops.take(table, step, axis=0)
        scores = ops.where(cur_len > start, scores + ops.where(ops.in_set(vocab, plan.eos_token_ids), boost, 0.0), scores)
    if plan.suppress_tokens:
        scores = ops.where(ops.in_set(vocab, plan.suppress_tokens), NEG_INF, scores)
    if plan.begin_suppress_tokens:
        scores = ops.where(cur_len == plan.begin_index,
                           ops.where(ops.in_set(vocab, plan.begin_suppress_tokens), NEG_INF, scores), scores)
    return scores


def _forced(ops: ArrayOps, scores: Any, ids: tuple[int, ...]) -> Any:
    """Only ``ids`` stay possible: score 0, the rest -inf (transformers' forced tokens)."""
    return ops.where(ops.in_set(scores.shape[-1], ids), ops.xp.zeros_like(scores), NEG_INF)


def warp(plan: Any, ops: ArrayOps, scores: Any) -> Any:
    """transformers' warpers (sampling only: temperature, top-k, top-p, min-p, typical,
    epsilon, eta) then ``renormalize_logits`` (every mode)."""
    xp, vocab = ops.xp, scores.shape[-1]
    if plan.do_sample:
        if plan.temperature != 1.0:
            scores = scores / plan.temperature
        if plan.top_k != 0:
            kth = ops.top_k(scores, min(max(plan.top_k, 1), vocab))[0][:, -1:]
            scores = ops.where(scores < kth, NEG_INF, scores)
        if plan.top_p < 1.0:
            ascending, order = ops.sort(scores)
            drop = xp.cumsum(ops.softmax(ascending), axis=-1) <= 1 - plan.top_p
            drop = drop & (ops.arange(vocab) < vocab - 1)[None, :]  # the most likely token stays
            inverse = ops.sort(order)[1]
            scores = ops.where(ops.take_along_last(drop, inverse), NEG_INF, scores)
        if plan.min_p is not None:
            probs = ops.softmax(scores)
            scores = ops.where(probs < plan.min_p * ops.max(probs), NEG_INF, scores)
        if plan.typical_p < 1.0:
            log_p = ops.log_softmax(scores)
            p = xp.exp(log_p)
            entropy = -xp.sum(ops.where(p > 0, log_p * p, 0.0), axis=-1, keepdims=True)
            shifted = xp.abs(-log_p - entropy)
            sorted_shifted, order = ops.sort(shifted)
            cumulative = xp.cumsum(ops.softmax(ops.take_along_last(scores, order)), axis=-1)
            last = ops.clip(xp.sum(ops.to_int(cumulative < plan.typical_p), axis=-1, keepdims=True), 0, vocab - 1)
            scores = ops.where(shifted > ops.take_along_last(sorted_shifted, last), NEG_INF, scores)
        if 0.0 < plan.epsilon_cutoff < 1.0:
            probs = ops.softmax(scores)
            scores = ops.where((probs < plan.epsilon_cutoff) & (scores < ops.max(scores)), NEG_INF, scores)
        if 0.0 < plan.eta_cutoff < 1.0:
            log_p = ops.log_softmax(scores)
            p = xp.exp(log_p)
            entropy = -xp.sum(ops.where(p > 0, log_p * p, 0.0), axis=-1, keepdims=True)
            eps = float(np.float32(plan.eta_cutoff))
            eta = float(np.float32(math.sqrt(eps))) * xp.exp(-entropy)
            eta = ops.where(eta < eps, eta, eps)
            scores = ops.where((p < eta) & (scores < ops.max(scores)), NEG_INF, scores)
    if plan.renormalize_logits:
        scores = ops.log_softmax(scores)
    return scores


def is_eos(plan: Any, ops: ArrayOps, tokens: Any) -> Any:
    """Boolean, ``tokens``' shape: the token is one of the plan's eos ids."""
    hit = tokens != tokens
    for eos in plan.eos_token_ids:
        hit = hit | (tokens == eos)
    return hit


def transition_scores(ops: ArrayOps, scores: list, sequences: Any, beam_indices: Any = None,
                      normalize_logits: bool = False) -> Any:
    """transformers' ``compute_transition_scores``: the score of each generated token,
    [rows, steps], from per-step ``scores`` [rows or beams, vocab] (a list, one per step).

    With ``beam_indices`` [rows, steps] (beam search) each step's score is read from the
    beam the hypothesis came from; positions with index -1 (after the hypothesis ended)
    score 0.  ``normalize_logits`` re-normalises each step's scores with log-softmax first.
    """
    xp = ops.xp
    stacked = xp.stack(list(scores), axis=0)  # [steps, rows, vocab]
    steps, rows, vocab = stacked.shape
    stacked = xp.reshape(stacked, (steps, -1, vocab))
    if normalize_logits:
        stacked = ops.log_softmax(stacked)
    stacked = xp.swapaxes(stacked, 0, 1)  # [beams, steps, vocab]
    if beam_indices is None:
        tokens = ops.to_int(sequences[:, sequences.shape[1] - steps:])
        return ops.take_along_last(stacked, tokens[:, :, None])[:, :, 0]
    width = beam_indices.shape[1]
    tokens = ops.to_int(sequences[:, sequences.shape[1] - width:])
    valid = beam_indices >= 0
    source = ops.where(valid, beam_indices, xp.zeros_like(beam_indices))
    flat = xp.reshape(stacked, (-1, vocab))  # row = beam * steps + step
    index = ops.to_int(source) * steps + ops.arange(width)[None, :]
    picked = ops.take_along_last(ops.take(flat, index, axis=0), ops.where(valid, tokens, xp.zeros_like(tokens))[:, :, None])
    return ops.where(valid, picked[:, :, 0], xp.zeros_like(picked[:, :, 0]))
