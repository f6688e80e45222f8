"""Compiled generation for :class:`FlaxEncoderDecoderModel`: greedy, beam search and
sampling, each one ``jax.jit`` program (encoder once, ``lax.while_loop`` over a
static-shape cache).

Semantics follow transformers 4.57's PyTorch ``generate`` for encoder-decoder models:
the logits processors and warpers are the core's (:mod:`encdec.generation_logits`), traced
into the loop; finished rows padded; beam search with its
top-``2k`` candidates, length penalty over the generated length, early-stopping
heuristic and ``sequences_scores``.  Compiled programs are cached per
:class:`~encdec.generation.DecodePlan` (jit retraces only for new shapes).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from encdec.compile_cache import ProgramCache, bucket_length, pad_source
from encdec.generation import (DecodePlan, GenerationConfig, beam_fill_token_id, check_model_inputs,
                               default_attention_mask, refuse_in_backend, resolve_generation)
from encdec.generation_logits import ArrayOps, is_eos, process, warp
from encdec.outputs import GenerateOutput
from encdec.specs import max_sequence_length
from encdec.validation import validate_generate_inputs
from encdec_flax.models.layers import host_values

#: settings this backend refuses (see docs/generation.md).
UNSUPPORTED = ("max_time", "output_scores", "output_logits", "output_attentions", "output_hidden_states")
_NEG = -1.0e9  # transformers' "very large negative" for beam bookkeeping


class JaxOps(ArrayOps):
    """The core's array operations (:mod:`encdec.generation_logits`) in jax spelling."""

    def __init__(self) -> None:
        super().__init__(jnp)

    def top_k(self, x, k: int):
        return jax.lax.top_k(x, k)  # ties: lower index first

    def softmax(self, x):
        return jax.nn.softmax(x, axis=-1)

    def log_softmax(self, x):
        return jax.nn.log_softmax(x, axis=-1)

    def presence(self, ids, valid, vocab: int):
        rows = jnp.arange(ids.shape[0])[:, None]
        return jnp.zeros((ids.shape[0], vocab), bool).at[rows, ids].max(valid)


OPS = JaxOps()


def process_scores(scores, sequences, cur_len, plan: DecodePlan, encoder_ids=None, rows_per_input: int = 1):
    """The core's processors then warpers for ``plan`` on [rows, vocab] scores."""
    scores = process(plan, OPS, scores, sequences, cur_len, encoder_ids, rows_per_input)
    return warp(plan, OPS, scores)


# --- decode loops ---------------------------------------------------------------------------
def _repeat(tree: Any, times: int) -> Any:
    """Repeat every batched leaf ``times`` along axis 0 (each row ``times`` in a row)."""
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, times, axis=0) if x.ndim else x, tree)


def _step_logits(module, params, tokens, encoder_mask, cache):
    """Decode ``tokens`` [rows, 1] with the cache; return float32 logits [rows, vocab]."""
    logits, _, _, _, cache = module.apply(
        {"params": params}, tokens, None, encoder_mask, None, None, cache, method="decode"
    )
    return logits[:, -1].astype(jnp.float32), cache


def _sample_or_greedy(module, params, cache, encoder_mask, key, plan: DecodePlan, rows: int, encoder_ids):
    length = plan.max_length
    sequences = jnp.full((rows, length), plan.pad_token_id, jnp.int32).at[:, 0].set(plan.decoder_start_token_id)

    def cond(state):
        _, cur_len, unfinished, _, _ = state
        return (cur_len < length) & jnp.any(unfinished)

    def body(state):
        sequences, cur_len, unfinished, cache, key = state
        tokens = jax.lax.dynamic_slice(sequences, (0, cur_len - 1), (rows, 1))
        logits, cache = _step_logits(module, params, tokens, encoder_mask, cache)
        scores = process_scores(logits, sequences, cur_len, plan, encoder_ids, rows // encoder_ids.shape[0])
        if plan.do_sample:
            key, sub = jax.random.split(key)
            next_tokens = jax.random.categorical(sub, scores, axis=-1).astype(jnp.int32)
        else:
            next_tokens = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        if plan.eos_token_ids:
            next_tokens = jnp.where(unfinished, next_tokens, plan.pad_token_id)
        sequences = jax.lax.dynamic_update_slice(sequences, next_tokens[:, None], (0, cur_len))
        unfinished = unfinished & ~is_eos(plan, OPS, next_tokens)
        return sequences, cur_len + 1, unfinished, cache, key

    state = (sequences, jnp.int32(1), jnp.ones((rows,), bool), cache, key)
    sequences, cur_len, _, _, _ = jax.lax.while_loop(cond, body, state)
    return sequences, None, cur_len


def _gather(x: jnp.ndarray, index: jnp.ndarray) -> jnp.ndarray:
    """``x[b, index[b, j], ...]`` for [batch, beams, ...] arrays."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def _beam_search(module, params, cache, encoder_mask, plan: DecodePlan, batch: int, encoder_ids):
    beams, length, prompt = plan.num_beams, plan.max_length, 1
    keep = max(2, 1 + len(plan.eos_token_ids)) * beams
    top_beams = jnp.arange(keep) < beams
    lp, early = plan.length_penalty, plan.early_stopping
    fill = beam_fill_token_id(plan)  # the core's rule (transformers'), placeholder rows included

    running = jnp.full((batch, beams, length), fill, jnp.int32).at[:, :, 0].set(plan.decoder_start_token_id)
    state = dict(
        cur_len=jnp.int32(prompt),
        running=running,
        running_scores=jnp.zeros((batch, beams), jnp.float32).at[:, 1:].set(_NEG),
        sequences=running,
        scores=jnp.full((batch, beams), _NEG, jnp.float32),
        lengths=jnp.full((batch, beams), prompt, jnp.int32),
        finished=jnp.zeros((batch, beams), bool),
        improvable=jnp.ones((batch, 1), bool),
        stop=jnp.zeros((batch, keep), bool),
        cache=cache,
    )

    def cond(s):
        open_beam = ~(jnp.all(s["finished"]) & (early is True))
        return (s["cur_len"] < length) & jnp.any(s["improvable"]) & open_beam & ~jnp.all(s["stop"])

    def body(s):
        cur_len = s["cur_len"]
        flat = s["running"].reshape(batch * beams, length)
        tokens = jax.lax.dynamic_slice(flat, (0, cur_len - 1), (batch * beams, 1))
        logits, cache = _step_logits(module, params, tokens, encoder_mask, s["cache"])
        log_probs = process_scores(jax.nn.log_softmax(logits, axis=-1), flat, cur_len, plan, encoder_ids, beams)
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.reshape(batch, beams, vocab) + s["running_scores"][:, :, None]).reshape(batch, beams * vocab)

        # top-k continuations over all beams
        topk_scores, topk_index = jax.lax.top_k(log_probs, keep)
        topk_beam, topk_ids = topk_index // vocab, (topk_index % vocab).astype(jnp.int32)
        topk_seqs = _gather(s["running"], topk_beam)
        topk_seqs = jax.vmap(lambda x, t: jax.lax.dynamic_update_slice(x, t[:, None], (0, cur_len)))(topk_seqs, topk_ids)
        stop = is_eos(plan, OPS, topk_ids) | (cur_len + 1 >= length)

        # best `beams` unfinished continuations keep running
        running_scores = topk_scores + stop.astype(jnp.float32) * _NEG
        next_index = jax.lax.top_k(running_scores, beams)[1]
        running = _gather(topk_seqs, next_index)
        new_running_scores = _gather(running_scores, next_index)
        source = _gather(topk_beam, next_index) + jnp.arange(batch)[:, None] * beams

        # finished candidates among the top `beams` compete for the final slots
        just_finished = stop & top_beams[None, :]
        final_scores = topk_scores / (cur_len + 1 - prompt).astype(jnp.float32) ** lp
        if early is True:
            final_scores += jnp.all(s["finished"], axis=-1, keepdims=True).astype(jnp.float32) * _NEG
        final_scores += (~s["improvable"]).astype(jnp.float32) * _NEG
        final_scores += (~just_finished).astype(jnp.float32) * _NEG
        merged_scores = jnp.concatenate([s["scores"], final_scores], axis=1)
        best = jax.lax.top_k(merged_scores, beams)[1]
        sequences = _gather(jnp.concatenate([s["sequences"], topk_seqs], axis=1), best)
        lengths = _gather(jnp.concatenate([s["lengths"], jnp.full((batch, keep), cur_len + 1, jnp.int32)], axis=1), best)
        finished = _gather(jnp.concatenate([s["finished"], just_finished], axis=1), best)
        scores = _gather(merged_scores, best)

        # reorder the self-attention cache to follow the surviving beams
        source = source.reshape(-1)
        layers = [{"self": jax.tree_util.tree_map(lambda x: x[source], layer["self"]), "cross": layer["cross"]}
                  for layer in cache["layers"]]
        cache = {"index": cache["index"], "layers": layers}

        cur_len = cur_len + 1
        best_len = (length - prompt) if (early == "never" and lp > 0.0) else (cur_len - prompt)
        best_possible = new_running_scores[:, :1] / jnp.asarray(best_len, jnp.float32) ** lp
        worst_finished = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), _NEG)
        improvable = s["improvable"] & jnp.any(best_possible > worst_finished, axis=-1, keepdims=True)
        return dict(cur_len=cur_len, running=running, running_scores=new_running_scores, sequences=sequences,
                    scores=scores, lengths=lengths, finished=finished, improvable=improvable, stop=stop, cache=cache)

    s = jax.lax.while_loop(cond, body, state)
    n = plan.num_return_sequences
    sequences = s["sequences"][:, :n].reshape(batch * n, length)
    return sequences, s["scores"][:, :n].reshape(-1), jnp.max(s["lengths"][:, :n])


def _build_program(module, plan: DecodePlan):
    def program(params, input_ids, attention_mask, key):
        batch = input_ids.shape[0]
        encoder_states = module.apply({"params": params}, input_ids, attention_mask, method="encode")[0]
        cache = module.apply({"params": params}, encoder_states, plan.max_length, method="init_cache")
        expand = plan.num_beams if plan.mode == "beam" else plan.num_return_sequences
        cache, mask = _repeat(cache, expand), jnp.repeat(attention_mask, expand, axis=0)
        if plan.mode == "beam":
            return _beam_search(module, params, cache, mask, plan, batch, input_ids)
        return _sample_or_greedy(module, params, cache, mask, key, plan, batch * expand, input_ids)

    return jax.jit(program)


def generate(model: Any, input_ids: Any, attention_mask: Any = None, generation_config: GenerationConfig | None = None,
             params: Any = None, prng_key: Any = None, pad_to_max_length: bool = True, **kwargs: Any) -> GenerateOutput:
    """Generate decoder ids for ``input_ids`` [batch, source_len].

    Returns :class:`~encdec.outputs.GenerateOutput` with ``sequences`` [batch *
    num_return_sequences, length] (starting with the decoder start token; length as
    transformers' Flax returns it: ``max_length`` columns, padded with the pad id after the
    longest row; ``pad_to_max_length=False`` trims to the longest row as transformers'
    PyTorch does) and, for beam search, ``sequences_scores``.
    ``prng_key`` seeds sampling (default ``PRNGKey(0)``).  ``length_buckets`` (default True)
    pads the source to a length bucket so that few programs are compiled; programs are
    kept in an LRU per model (see :mod:`encdec.compile_cache`).
    """
    length_buckets = bool(kwargs.pop("length_buckets", True))
    plan, rest = resolve_generation(model.config, generation_config or model.generation_config, kwargs)
    check_model_inputs(rest, ())
    validate_generate_inputs(model.config, plan, input_ids, attention_mask, host=host_values)
    refuse_in_backend(plan, "Flax", UNSUPPORTED)
    input_ids = jnp.asarray(input_ids, jnp.int32)
    attention_mask = (default_attention_mask(input_ids, plan, xp=jnp) if attention_mask is None
                      else jnp.asarray(attention_mask, jnp.int32))
    key = jax.random.PRNGKey(0) if prng_key is None else prng_key
    if length_buckets:
        bucket = bucket_length(input_ids.shape[1], max_sequence_length(model.config.encoder))
        input_ids, attention_mask = pad_source(input_ids, attention_mask, bucket, plan.pad_token_id, jnp)
    programs = model.__dict__.get("_generate_programs")
    if programs is None:
        programs = model.__dict__["_generate_programs"] = ProgramCache()
    program = programs.get_or_build((plan, input_ids.shape), lambda: _build_program(model.module, plan))
    sequences, scores, out_length = program(model.module_params(params), input_ids, attention_mask, key)
    if not pad_to_max_length:  # transformers' PyTorch shape (trimmed to the longest row)
        return GenerateOutput(sequences=sequences[:, : int(out_length)], sequences_scores=scores)
    # transformers' Flax shape: always max_length, positions after the longest row hold the pad id
    sequences = jnp.where(jnp.arange(sequences.shape[1])[None, :] < out_length, sequences, plan.pad_token_id)
    return GenerateOutput(sequences=sequences, sequences_scores=scores)
