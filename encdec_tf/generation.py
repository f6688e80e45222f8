"""Decode loops for ``TFEncoderDecoderModel.generate``: greedy, beam search and sampling.

Each loop is a ``tf.while_loop`` over a static-shape KV cache ([batch, heads, max_len,
head_dim] per layer, written at the current index) with the cross-attention keys and
values computed once, so that the whole of ``generate`` — encoder, cross-attention cache, loop
— compiles as one XLA program.  Compiled programs are cached per model and per
:class:`~encdec.generation.DecodePlan`.  Semantics follow transformers 4.57 (its
``_sample`` and vectorised ``_beam_search``), token for token for greedy and beam.
"""
from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import tensorflow as tf

from encdec.compile_cache import ProgramCache, bucket_length, pad_source
from encdec.generation import (DecodePlan, GenerationConfig, beam_fill_token_id, check_model_inputs,
                               default_attention_mask, refuse_in_backend, resolve_generation)
from encdec.generation_logits import ArrayOps, process, warp
from encdec.generation_logits import is_eos as core_is_eos
from encdec.specs import max_sequence_length
from encdec.validation import validate_generate_inputs
from encdec_tf.models.common import as_int, host_values

NEG_INF = float("-inf")
#: settings this backend refuses (see docs/generation.md).
UNSUPPORTED = ("max_time", "output_scores", "output_logits", "output_attentions", "output_hidden_states")
#: transformers' "impossible" beam score.
BEAM_NEG = -1.0e9
#: Length of the decoder prompt (the start token).
PROMPT = 1

#: model -> its compiled programs, one per (plan, batch, source bucket), LRU-bounded (encdec.compile_cache).
_COMPILED: "weakref.WeakKeyDictionary[Any, ProgramCache]" = weakref.WeakKeyDictionary()


def generate(model: Any, input_ids: Any, attention_mask: Any = None, generation_config: GenerationConfig | None = None,
             **kwargs: Any) -> tf.Tensor:
    """Generated ids [batch * num_return_sequences, length] (int32), starting with the
    decoder start token.  Extra keywords: generation settings, ``seed`` (sampling),
    ``jit_compile`` (default True; False runs the same loop eagerly) and ``length_buckets``
    (default True: compiled calls pad the source to a length bucket, see
    :mod:`encdec.compile_cache`).

    Called eagerly, the result is cut to the generated length as in transformers; traced
    inside a ``tf.function`` (e.g. ``tf.function(model.generate, jit_compile=True)``) it
    keeps the static ``max_length`` columns, finished rows padded with the pad id.
    """
    seed = kwargs.pop("seed", None)
    jit_compile = kwargs.pop("jit_compile", True)
    length_buckets = bool(kwargs.pop("length_buckets", True))
    plan, rest = resolve_generation(model.config, generation_config or model.generation_config, kwargs)
    check_model_inputs(rest, ())
    validate_generate_inputs(model.config, plan, input_ids, attention_mask, host=host_values)
    refuse_in_backend(plan, "TensorFlow", UNSUPPORTED)
    input_ids = as_int(input_ids)
    if attention_mask is None:
        attention_mask = default_attention_mask(input_ids, plan, xp=tf.experimental.numpy)
    attention_mask = as_int(attention_mask)
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    seed = tf.constant([seed, 0], tf.int32)
    if not jit_compile:
        sequences, length = decode(model, plan, input_ids, attention_mask, seed)
    else:
        if length_buckets and tf.executing_eagerly():
            bucket = bucket_length(int(input_ids.shape[1]), max_sequence_length(model.config.encoder))
            input_ids, attention_mask = pad_source(input_ids, attention_mask, bucket, plan.pad_token_id, tf.experimental.numpy)
        fns = _COMPILED.get(model)
        if fns is None:
            fns = _COMPILED[model] = ProgramCache()
        fn = fns.get_or_build((plan, tuple(input_ids.shape)), lambda: tf.function(
            lambda ids, mask, s: decode(model, plan, ids, mask, s), jit_compile=True, autograph=False))
        sequences, length = fn(input_ids, attention_mask, seed)
    if not tf.executing_eagerly():
        return sequences
    return sequences[:, : int(length)]


def forget_compiled(model: Any) -> None:
    """Drop ``model``'s compiled decode programs (they trace its adapter state)."""
    _COMPILED.pop(model, None)


def decode(model: Any, plan: DecodePlan, input_ids: tf.Tensor, attention_mask: tf.Tensor, seed: tf.Tensor):
    """Run the encoder once, then the decode loop of ``plan.mode``; returns the sequence
    buffer [rows, max_length] and the length actually generated."""
    enc = model.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
    if model.enc_to_dec_proj is not None:
        enc = model.enc_to_dec_proj(enc)
    expand = plan.num_beams if plan.mode == "beam" else plan.num_return_sequences
    enc = tf.repeat(enc, expand, axis=0)
    mask = tf.repeat(attention_mask, expand, axis=0)
    rows = tf.shape(enc)[0]
    _, heads, head_dim = model.decoder.cache_layout
    zeros = tf.zeros(tf.stack([rows, heads, plan.max_length, head_dim]), enc.dtype)
    cache = tuple((zeros, zeros) + kv for kv in model.decoder.cross_cache(enc))

    def step(tokens: tf.Tensor, cache: Any, index: tf.Tensor):
        """Logits for the token after ``tokens`` [rows] (at position ``index``) and the new cache."""
        out = model.decoder(input_ids=tokens[:, None], encoder_attention_mask=mask, past_key_values=cache,
                            cache_index=index, use_cache=True, return_dict=True)
        return out.logits[:, -1], out.past_key_values

    if plan.mode == "beam":
        return beam_search(plan, step, cache, tf.shape(input_ids)[0], input_ids)
    return greedy_or_sample(plan, step, cache, rows, seed, input_ids)


# --- logits processing: the core's processors over TF arrays ------------------------------
class TFOps(ArrayOps):
    """The core's array operations (:mod:`encdec.generation_logits`) in TF spelling."""

    def __init__(self) -> None:
        super().__init__(tf.experimental.numpy)

    def arange(self, n: int) -> tf.Tensor:
        return tf.range(n)

    def constant(self, values: Any, dtype: str = "int32") -> tf.Tensor:
        return tf.constant(np.asarray(values, dtype=dtype))

    def to_int(self, x: tf.Tensor) -> tf.Tensor:
        return tf.cast(x, tf.int32)

    def clip(self, x: Any, low: int, high: int) -> Any:
        return min(max(int(x), low), high) if isinstance(x, int) else tf.clip_by_value(x, low, high)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        if isinstance(cond, (bool, np.bool_)):
            return a if cond else b
        dtype = next((t.dtype for t in (a, b) if isinstance(t, (tf.Tensor, tf.Variable))), None)
        a, b = (tf.convert_to_tensor(t, dtype) if not isinstance(t, tf.Tensor) else t for t in (a, b))
        return tf.where(cond, a, b)

    def take(self, x: tf.Tensor, index: tf.Tensor, axis: int) -> tf.Tensor:
        return tf.gather(x, index, axis=axis)

    def take_along_last(self, x: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        return tf.gather(x, index, batch_dims=len(x.shape) - 1)

    def repeat(self, x: tf.Tensor, times: int) -> tf.Tensor:
        return tf.repeat(x, times, axis=0)

    def max(self, x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_max(x, axis=-1, keepdims=True)

    def sort(self, x: tf.Tensor):
        order = tf.argsort(x, axis=-1, stable=True)
        return tf.gather(x, order, batch_dims=len(x.shape) - 1), order

    def top_k(self, x: tf.Tensor, k: int):
        result = tf.math.top_k(x, k)  # ties: lower index first
        return result.values, result.indices

    def softmax(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.softmax(x, axis=-1)

    def log_softmax(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.log_softmax(x, axis=-1)


OPS = TFOps()


def process_scores(plan: DecodePlan, scores: tf.Tensor, seqs: tf.Tensor, cur_len: tf.Tensor,
                   encoder_ids: Any = None, rows_per_input: int = 1) -> tf.Tensor:
    """The core's processors then warpers for ``plan`` on ``scores`` [rows, vocab] for the
    token at ``cur_len``, given ``seqs`` [rows, max_len]."""
    scores = process(plan, OPS, scores, seqs, cur_len, encoder_ids, rows_per_input)
    return warp(plan, OPS, scores)


def is_eos(plan: DecodePlan, tokens: tf.Tensor) -> tf.Tensor:
    return core_is_eos(plan, OPS, tokens)


def write(seqs: tf.Tensor, index: tf.Tensor, tokens: tf.Tensor) -> tf.Tensor:
    """``seqs[..., index] = tokens`` (shape-static)."""
    at = tf.one_hot(index, seqs.shape[-1], on_value=True, off_value=False)
    return tf.where(at, tokens[..., None], seqs)


def same_shapes(new: Any, old: Any) -> Any:
    """Give loop outputs the static shapes of the loop inputs (``tf.while_loop`` invariants)."""
    return tf.nest.map_structure(lambda n, o: tf.ensure_shape(n, o.shape), new, old)


# --- greedy and sampling ---------------------------------------------------------------
def greedy_or_sample(plan: DecodePlan, step, cache, rows, seed, encoder_ids):
    seqs = tf.fill(tf.stack([rows, plan.max_length]), plan.pad_token_id)
    seqs = write(seqs, tf.constant(0), tf.fill(tf.stack([rows]), plan.decoder_start_token_id))
    unfinished = tf.ones(tf.stack([rows]), tf.bool)

    def cond(cur_len, seqs, unfinished, cache):
        return tf.logical_and(cur_len < plan.max_length, tf.reduce_any(unfinished))

    def body(cur_len, seqs, unfinished, cache):
        logits, new_cache = step(seqs[:, cur_len - 1], cache, cur_len - 1)
        scores = process_scores(plan, logits, seqs, cur_len, encoder_ids, plan.num_return_sequences)
        if plan.do_sample:
            tokens = tf.random.stateless_categorical(scores, 1, seed=tf.stack([seed[0], cur_len]), dtype=tf.int32)[:, 0]
        else:
            tokens = tf.argmax(scores, axis=-1, output_type=tf.int32)
        tokens = tf.where(unfinished, tokens, plan.pad_token_id)
        seqs = write(seqs, cur_len, tokens)
        unfinished = tf.logical_and(unfinished, tf.logical_not(is_eos(plan, tokens)))
        return cur_len + 1, seqs, unfinished, same_shapes(new_cache, cache)

    cur_len, seqs, _, _ = tf.while_loop(cond, body, (tf.constant(1), seqs, unfinished, cache),
                                        maximum_iterations=plan.max_length - 1)
    return seqs, cur_len


# --- beam search -------------------------------------------------------------------------
def beam_search(plan: DecodePlan, step, cache, batch, encoder_ids):
    """transformers 4.57's vectorised beam search: keep the top ``2K`` (more with several
    eos ids) continuations, continue the best ``K`` that did not stop, and merge the ones
    that stopped into ``K`` finished hypotheses scored with the length penalty."""
    k, max_len = plan.num_beams, plan.max_length
    keep = max(2, 1 + len(plan.eos_token_ids)) * k
    fill = beam_fill_token_id(plan)  # the core's rule (transformers'), placeholder rows included
    running = tf.fill(tf.stack([batch, k, max_len]), fill)
    running = write(running, tf.constant(0), tf.fill(tf.stack([batch, k]), plan.decoder_start_token_id))
    running_scores = tf.tile(tf.constant([[0.0] + [BEAM_NEG] * (k - 1)]), tf.stack([batch, 1]))
    state = dict(
        cur_len=tf.constant(1), running=running, running_scores=running_scores,
        seqs=running, scores=tf.fill(tf.stack([batch, k]), BEAM_NEG), lengths=tf.ones(tf.stack([batch, k]), tf.int32),
        finished=tf.zeros(tf.stack([batch, k]), tf.bool), unsatisfied=tf.ones(tf.stack([batch, 1]), tf.bool),
        go=tf.constant(True), cache=cache,
    )
    top_mask = tf.constant([True] * k + [False] * (keep - k))
    offsets = (tf.range(batch) * k)[:, None]

    def cond(s):
        return s["go"]

    def body(s):
        cur_len = s["cur_len"]
        flat_running = tf.reshape(s["running"], [-1, max_len])
        logits, cache = step(flat_running[:, cur_len - 1], s["cache"], cur_len - 1)
        vocab = logits.shape[-1]
        log_probs = process_scores(plan, tf.nn.log_softmax(logits, axis=-1), flat_running, cur_len, encoder_ids, k)
        log_probs = tf.reshape(log_probs, tf.stack([batch, k, vocab])) + s["running_scores"][:, :, None]
        top_lp, top_idx = tf.math.top_k(tf.reshape(log_probs, tf.stack([batch, k * vocab])), keep)
        parent, tokens = top_idx // vocab, top_idx % vocab
        cand = write(tf.gather(s["running"], parent, batch_dims=1), cur_len, tokens)
        hits = tf.logical_or(is_eos(plan, tokens), cur_len + 1 >= max_len)

        # running beams for the next step: the best K that did not stop
        run_lp = top_lp + tf.cast(hits, tf.float32) * BEAM_NEG
        nxt = tf.math.top_k(run_lp, k).indices
        running, running_scores = tf.gather(cand, nxt, batch_dims=1), tf.gather(run_lp, nxt, batch_dims=1)
        beam_idx = tf.reshape(tf.gather(parent, nxt, batch_dims=1) + offsets, [-1])

        # finished hypotheses: merge the ones that just stopped among the top K
        just = tf.logical_and(hits, top_mask[None, :])
        fin_lp = top_lp / length_norm(cur_len + 1 - PROMPT, plan.length_penalty)
        if plan.early_stopping is True:
            fin_lp += tf.cast(tf.reduce_all(s["finished"], axis=-1, keepdims=True), tf.float32) * BEAM_NEG
        fin_lp += tf.cast(tf.logical_not(s["unsatisfied"]), tf.float32) * BEAM_NEG
        fin_lp += tf.cast(tf.logical_not(just), tf.float32) * BEAM_NEG
        merged = tf.concat([s["scores"], fin_lp], axis=1)
        best = tf.math.top_k(merged, k).indices
        seqs = tf.gather(tf.concat([s["seqs"], cand], axis=1), best, batch_dims=1)
        lengths = tf.gather(tf.concat([s["lengths"], tf.fill(tf.shape(tokens), cur_len + 1)], axis=1), best, batch_dims=1)
        finished = tf.gather(tf.concat([s["finished"], just], axis=1), best, batch_dims=1)
        scores = tf.gather(merged, best, batch_dims=1)

        cur_len = cur_len + 1
        unsatisfied = early_stop_unsatisfied(plan, s["unsatisfied"], running_scores, scores, finished, cur_len)
        go = tf.reduce_any(unsatisfied)
        if plan.early_stopping is True:
            go = tf.logical_and(go, tf.logical_not(tf.reduce_all(finished)))
        go = tf.logical_and(go, tf.logical_not(tf.reduce_all(hits)))

        # the self-attention cache follows its beams; cross-attention entries are equal across a row's beams
        cache = tuple(tuple(tf.gather(t, beam_idx, axis=0) for t in layer[:2]) + tuple(layer[2:]) for layer in cache)
        new = dict(cur_len=cur_len, running=running, running_scores=running_scores, seqs=seqs, scores=scores,
                   lengths=lengths, finished=finished, unsatisfied=unsatisfied, go=go, cache=cache)
        return [same_shapes(new, s)]

    (s,) = tf.while_loop(cond, body, [state], maximum_iterations=max_len - 1)
    nrs = plan.num_return_sequences
    sequences = tf.reshape(s["seqs"][:, :nrs], [-1, max_len])
    return sequences, tf.reduce_max(s["lengths"][:, :nrs])


def length_norm(length: Any, penalty: float) -> tf.Tensor:
    """``length ** penalty`` computed in float64 (as Python does for transformers), as float32."""
    return tf.cast(tf.cast(length, tf.float64) ** penalty, tf.float32)


def early_stop_unsatisfied(plan: DecodePlan, unsatisfied, running_scores, scores, finished, cur_len):
    """transformers' heuristic: can the best running beam still beat the worst finished one?"""
    if plan.early_stopping == "never" and plan.length_penalty > 0.0:
        length = plan.max_length - PROMPT
    else:
        length = cur_len - PROMPT
    best_running = running_scores[:, :1] / length_norm(length, plan.length_penalty)
    worst = tf.where(finished, tf.reduce_min(scores, axis=1, keepdims=True), BEAM_NEG)
    return tf.logical_and(unsatisfied, tf.reduce_any(best_running > worst, axis=-1, keepdims=True))
