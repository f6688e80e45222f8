"""Compiled generation for :class:`FlaxEncoderDecoderModel`: greedy, beam search and
sampling, each one ``jax.jit`` program (encoder once, ``lax.while_loop`` over a
static-shape cache, or over the whole static-length prefix with ``use_cache=False``).

Semantics follow transformers 4.57's PyTorch ``generate`` for encoder-decoder models:
the logits processors and warpers are the core's (:mod:`encdec.generation_logits`), traced
into the loop; finished rows padded; beam search with its
top-``2k`` candidates, length penalty over the generated length, early-stopping
heuristic and ``sequences_scores``.  What ``return_dict_in_generate`` asks for (scores,
raw logits, attentions, hidden states) is written into preallocated per-step buffers
inside the loop and cut to transformers' per-step shapes afterwards
(:func:`encdec.generation.unstack_step_outputs`).  Compiled programs are cached per
:class:`~encdec.generation.DecodePlan` (jit retraces only for new shapes).

``generate`` traces: called inside ``jax.jit`` / ``jax.pmap`` it inlines its program, as
long as the settings are static Python values (``max_time``, per-step outputs and
``pad_to_max_length=False`` need concrete values and are refused there, by name).
"""
from __future__ import annotations

import inspect
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from encdec.compile_cache import ProgramCache, bucket_length, pad_source
from encdec.generation import (DecodePlan, GenerationConfig, beam_fill_token_id, check_model_inputs, decoder_prompt,
                               UnsupportedGenerationSetting, cross_attention_query_streams, default_attention_mask,
                               refuse_in_backend, unstack_step_outputs)
from encdec.generation_logits import ArrayOps, is_eos, process, warp
from encdec.outputs import GenerateOutput, ModelOutput
from encdec.plan_cache import cached_resolve
from encdec.specs import max_sequence_length
from encdec.validation import validate_generate_inputs
from encdec_flax.models.layers import host_values

#: settings this backend refuses (see docs/generation.md): none.
UNSUPPORTED: tuple[str, ...] = ()
_NEG = -1.0e9  # transformers' "very large negative" for beam bookkeeping
_STEP_FIELDS = ("decoder_attentions", "cross_attentions", "decoder_hidden_states")


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


def process_scores(scores, sequences, cur_len, plan: DecodePlan, encoder_ids=None, rows_per_input: int = 1,
                   user_processors: tuple = ()):
    """The core's processors, the user's (traceable ``(input_ids, scores[, cur_len])``),
    then the warpers for ``plan`` on [rows, vocab] scores."""
    scores = process(plan, OPS, scores, sequences, cur_len, encoder_ids, rows_per_input)
    for fn in user_processors:
        new = _call_user(fn, sequences, scores, cur_len)
        if not hasattr(new, "shape") or tuple(new.shape) != tuple(scores.shape) or not jnp.issubdtype(new.dtype, jnp.floating):
            raise ValueError(f"logits processor {fn!r} must return float scores of shape {tuple(scores.shape)}, got "
                             f"{getattr(new, 'dtype', type(new).__name__)} {tuple(getattr(new, 'shape', ()))}")
        scores = new.astype(scores.dtype)
    return warp(plan, OPS, scores)


def _call_user(fn, input_ids, scores, cur_len):
    """transformers' signature ``fn(input_ids, scores)``, or its Flax one with ``cur_len``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_len = len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)
    return fn(input_ids, scores, cur_len) if takes_len else fn(input_ids, scores)


def _user_stop(criteria: tuple, sequences, scores, cur_len, rows: int):
    """[rows] bool: the user's stopping criteria (each a bool or one per row)."""
    done = jnp.zeros((rows,), bool)
    for fn in criteria:
        hit = jnp.asarray(_call_user(fn, sequences, scores, cur_len))
        if hit.dtype != jnp.bool_ or hit.size not in (1, rows):
            raise ValueError(f"stopping criterion {fn!r} must return a bool or a [{rows}] bool array, got "
                             f"{hit.dtype} {tuple(hit.shape)}")
        done = done | jnp.broadcast_to(hit.reshape(-1), (rows,))
    return done


def _timed_out(plan: DecodePlan, clock: dict):
    """``max_time`` (transformers' MaxTimeCriteria): a host callback reads the wall clock."""
    if plan.max_time is None:
        return jnp.bool_(False)
    return io_callback(lambda: np.bool_(time.time() - clock["start"] > plan.max_time),
                                        jax.ShapeDtypeStruct((), jnp.bool_))


# --- decode loops ---------------------------------------------------------------------------
def _repeat(tree: Any, times: int) -> Any:
    """Repeat every batched leaf ``times`` along axis 0 (each row ``times`` in a row)."""
    return jax.tree_util.tree_map(lambda x: jnp.repeat(x, times, axis=0) if x.ndim else x, tree)


class _Decoder:
    """One decode step: with the cache, the last token at the cache index; without it
    (``use_cache=False``), the whole static-length buffer (causal, so later pad columns do
    not change earlier positions, and positions are transformers' uncached ones)."""

    def __init__(self, module, params, plan: DecodePlan, states, mask) -> None:
        self.module, self.params, self.plan, self.states, self.mask = module, params, plan, states, mask
        self.flags = dict(output_attentions=plan.return_dict_in_generate and plan.output_attentions,
                          output_hidden_states=plan.return_dict_in_generate and plan.output_hidden_states)

    def run(self, tokens, cache):
        logits, hidden, attns, cross, cache = self.module.apply(
            {"params": self.params}, tokens, self.states, self.mask, None, None, cache, method="decode", **self.flags)
        extras = {}
        if self.flags["output_attentions"]:
            extras.update(decoder_attentions=tuple(attns), cross_attentions=tuple(cross))
        if self.flags["output_hidden_states"]:
            extras["decoder_hidden_states"] = tuple(hidden)
        return logits, extras, cache

    def step(self, sequences, cur_len, cache):
        """float32 logits [rows, vocab] for position ``cur_len``, step outputs, cache."""
        if self.plan.use_cache:
            tokens = jax.lax.dynamic_slice_in_dim(sequences, cur_len - 1, 1, axis=1)
            logits, extras, cache = self.run(tokens, cache)
            return logits[:, -1].astype(jnp.float32), extras, cache
        logits, extras, _ = self.run(sequences, None)
        return jax.lax.dynamic_index_in_dim(logits, cur_len - 1, axis=1, keepdims=False).astype(jnp.float32), extras, cache


class _Steps:
    """Logits at each step: a cached loop with a longer decoder prompt decodes the prompt at
    once before the loop (as transformers does; RoBERTa positions depend on it) and takes
    those logits on the first iteration.  Records what ``return_dict_in_generate`` asks for."""

    def __init__(self, decoder: _Decoder, plan: DecodePlan, start, cache) -> None:
        self.decoder, self.plan = decoder, plan
        self.prompt = plan.prompt_length
        self.first = None
        if plan.use_cache and self.prompt > 1:
            logits, extras, cache = decoder.run(start, cache)
            self.first = (logits[:, -1].astype(jnp.float32), extras, cache)
        self.cache = cache

    def __call__(self, sequences, cur_len, cache):
        if self.first is None:
            return self.decoder.step(sequences, cur_len, cache)
        shapes = jax.eval_shape(self.decoder.step, sequences, cur_len, cache)[1]
        logits, extras, cache0 = self.first
        prefilled = (logits, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), cache0)
        return jax.lax.cond(cur_len == self.prompt, lambda: prefilled, lambda: self.decoder.step(sequences, cur_len, cache))

    def buffers(self, sequences, cache) -> dict:
        """Zeroed [max_steps, ...] buffers for the recorded fields."""
        plan = self.plan
        if not plan.return_dict_in_generate:
            return {}
        logits, extras, _ = jax.eval_shape(self.decoder.step, sequences, jnp.int32(self.prompt), cache)
        steps = plan.max_length - self.prompt
        wanted = dict(extras)
        if plan.output_scores:
            wanted["scores"] = logits
        if plan.output_logits:
            wanted["logits"] = logits
        return jax.tree_util.tree_map(lambda s: jnp.zeros((steps,) + s.shape, s.dtype), wanted)

    def record(self, buffers: dict, cur_len, logits, scores, extras) -> dict:
        if not buffers:
            return buffers
        new = dict(extras)
        if "scores" in buffers:
            new["scores"] = scores
        if "logits" in buffers:
            new["logits"] = logits
        t = cur_len - self.prompt
        return jax.tree_util.tree_map(
            lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x.astype(buf.dtype), t, 0), buffers, new)

    def first_fields(self) -> dict | None:
        if self.first is None or not self.first[1]:
            return None
        return self.first[1]


def _sample_or_greedy(steps: _Steps, start, key, plan: DecodePlan, rows: int, encoder_ids, extra) -> dict:
    length, prompt = plan.max_length, plan.prompt_length
    sequences = jnp.full((rows, length), plan.pad_token_id, jnp.int32).at[:, :prompt].set(start)
    per_input = rows // encoder_ids.shape[0] if encoder_ids is not None else 1

    def cond(state):
        _, cur_len, unfinished, _, _, _ = state
        return (cur_len < length) & jnp.any(unfinished)

    def body(state):
        sequences, cur_len, unfinished, cache, key, rec = state
        logits, extras, cache = steps(sequences, cur_len, cache)
        scores = process_scores(logits, sequences, cur_len, plan, encoder_ids, per_input, extra["processors"])
        if plan.do_sample:
            key, sub = jax.random.split(key)
            next_tokens = jax.random.categorical(sub, scores, axis=-1).astype(jnp.int32)
        else:
            next_tokens = jnp.argmax(scores, axis=-1).astype(jnp.int32)
        if plan.eos_token_ids:
            next_tokens = jnp.where(unfinished, next_tokens, plan.pad_token_id)
        sequences = jax.lax.dynamic_update_slice(sequences, next_tokens[:, None], (0, cur_len))
        rec = steps.record(rec, cur_len, logits, scores, extras)
        unfinished = unfinished & ~is_eos(plan, OPS, next_tokens)
        if extra["criteria"]:
            unfinished = unfinished & ~_user_stop(extra["criteria"], sequences, scores, cur_len + 1, rows)
        if plan.max_time is not None:
            unfinished = unfinished & ~_timed_out(plan, extra["clock"])
        return sequences, cur_len + 1, unfinished, cache, key, rec

    state = (sequences, jnp.int32(prompt), jnp.ones((rows,), bool), steps.cache, key, steps.buffers(sequences, steps.cache))
    sequences, cur_len, _, _, _, rec = jax.lax.while_loop(cond, body, state)
    return dict(sequences=sequences, length=cur_len, steps=cur_len - prompt, recorded=rec)


def _gather(x: jnp.ndarray, index: jnp.ndarray) -> jnp.ndarray:
    """``x[b, index[b, j], ...]`` for [batch, beams, ...] arrays."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def _beam_search(steps: _Steps, start, plan: DecodePlan, batch: int, encoder_ids, extra) -> dict:
    beams, length, prompt = plan.num_beams, plan.max_length, plan.prompt_length
    keep = max(2, 1 + len(plan.eos_token_ids)) * beams
    top_beams = jnp.arange(keep) < beams
    lp, early = plan.length_penalty, plan.early_stopping
    fill = beam_fill_token_id(plan)  # the core's rule (transformers'), placeholder rows included
    track = plan.return_dict_in_generate  # beam_indices (transformers returns them for every beam search)
    max_steps = length - prompt

    running = jnp.full((batch, beams, length), fill, jnp.int32).at[:, :, :prompt].set(start.reshape(batch, beams, prompt))
    flat0 = running.reshape(batch * beams, length)
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
        cache=steps.cache,
        rec=steps.buffers(flat0, steps.cache),
    )
    if track:
        state["running_origin"] = state["finished_origin"] = jnp.full((batch, beams, max_steps), -1, jnp.int32)

    def cond(s):
        open_beam = ~(jnp.all(s["finished"]) & (early is True))
        return (s["cur_len"] < length) & jnp.any(s["improvable"]) & open_beam & ~jnp.all(s["stop"])

    def body(s):
        cur_len = s["cur_len"]
        flat = s["running"].reshape(batch * beams, length)
        logits, extras, cache = steps(flat, cur_len, s["cache"])
        log_probs = process_scores(jax.nn.log_softmax(logits, axis=-1), flat, cur_len, plan, encoder_ids, beams,
                                   extra["processors"])
        rec = steps.record(s["rec"], cur_len, logits, log_probs, extras)
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.reshape(batch, beams, vocab) + s["running_scores"][:, :, None]).reshape(batch, beams * vocab)

        # top-k continuations over all beams
        topk_scores, topk_index = jax.lax.top_k(log_probs, keep)
        topk_beam, topk_ids = topk_index // vocab, (topk_index % vocab).astype(jnp.int32)
        topk_seqs = _gather(s["running"], topk_beam)
        topk_seqs = jax.vmap(lambda x, t: jax.lax.dynamic_update_slice(x, t[:, None], (0, cur_len)))(topk_seqs, topk_ids)
        stop = is_eos(plan, OPS, topk_ids) | (cur_len + 1 >= length)
        if extra["criteria"]:
            stop = stop | _user_stop(extra["criteria"], topk_seqs.reshape(batch * keep, length), log_probs, cur_len + 1,
                                     batch * keep).reshape(batch, keep)
        if plan.max_time is not None:
            stop = stop | _timed_out(plan, extra["clock"])

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
        new = {}
        if track:  # which flat beam each token came from (transformers' beam_indices)
            origin = _gather(s["running_origin"], topk_beam)
            origin = jax.lax.dynamic_update_slice_in_dim(
                origin, (topk_beam + jnp.arange(batch)[:, None] * beams)[:, :, None].astype(jnp.int32), cur_len - prompt, axis=2)
            new["running_origin"] = _gather(origin, next_index)
            new["finished_origin"] = _gather(jnp.concatenate([s["finished_origin"], origin], axis=1), best)

        # reorder the self-attention cache to follow the surviving beams
        if cache is not None:
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
                    scores=scores, lengths=lengths, finished=finished, improvable=improvable, stop=stop, cache=cache,
                    rec=rec, **new)

    s = jax.lax.while_loop(cond, body, state)
    n = plan.num_return_sequences
    out = dict(sequences=s["sequences"][:, :n].reshape(batch * n, length), sequences_scores=s["scores"][:, :n].reshape(-1),
               length=jnp.max(s["lengths"][:, :n]), steps=s["cur_len"] - prompt, recorded=s["rec"])
    if track:
        out["beam_origin"] = s["finished_origin"][:, :n].reshape(batch * n, max_steps)
    return out


def _build_program(module, module_params, plan: DecodePlan, extra: dict):
    want_attn = plan.return_dict_in_generate and plan.output_attentions
    want_hidden = plan.return_dict_in_generate and plan.output_hidden_states

    def program(params, inputs):
        params = module_params(params)
        mask = inputs["attention_mask"]
        encoded = {}
        if "encoder_states" in inputs:
            states = inputs["encoder_states"]
        else:
            states, hidden, attns = module.apply({"params": params}, inputs["input_ids"], mask, method="encode",
                                                 output_attentions=want_attn, output_hidden_states=want_hidden)
            if want_attn:
                encoded["encoder_attentions"] = attns
            if want_hidden:
                encoded["encoder_hidden_states"] = hidden
        batch = states.shape[0]
        expand = plan.num_beams if plan.mode == "beam" else plan.num_return_sequences
        mask = jnp.repeat(mask, expand, axis=0)
        if plan.use_cache:
            cache = _repeat(module.apply({"params": params}, states, plan.max_length, method="init_cache"), expand)
            decoder = _Decoder(module, params, plan, None, mask)
        else:
            cache, decoder = None, _Decoder(module, params, plan, jnp.repeat(states, expand, axis=0), mask)
        if "prompt" in inputs:
            start = jnp.repeat(inputs["prompt"].astype(jnp.int32), expand, axis=0)
        else:
            start = jnp.full((batch * expand, 1), plan.decoder_start_token_id, jnp.int32)
        steps = _Steps(decoder, plan, start, cache)
        encoder_ids = inputs.get("encoder_ids")
        if plan.mode == "beam":
            out = _beam_search(steps, start, plan, batch, encoder_ids, extra)
        else:
            out = _sample_or_greedy(steps, start, inputs["key"], plan, batch * expand, encoder_ids, extra)
        first = steps.first_fields()
        if first is not None:
            out["first"] = first
        out.update(encoded)
        # transformers' Flax shape: max_length columns, the pad id after the longest row
        columns = jnp.arange(out["sequences"].shape[1])[None, :]
        out["sequences"] = jnp.where(columns < out["length"], out["sequences"], plan.pad_token_id)
        return out

    return jax.jit(program)


def _default_key() -> jax.Array:
    """``PRNGKey(0)``, made once (building a key costs more than a small decode call)."""
    global _DEFAULT_KEY
    if _DEFAULT_KEY is None:
        with jax.ensure_compile_time_eval():  # concrete even when first asked for under jax.jit
            _DEFAULT_KEY = jax.random.PRNGKey(0)
    return _DEFAULT_KEY


_DEFAULT_KEY = None


def _is_traced(tree: Any) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def generate(model: Any, input_ids: Any, attention_mask: Any = None, generation_config: GenerationConfig | None = None,
             params: Any = None, prng_key: Any = None, pad_to_max_length: bool = True, **kwargs: Any) -> GenerateOutput:
    """Generate decoder ids for ``input_ids`` [batch, source_len].

    Returns :class:`~encdec.outputs.GenerateOutput` with ``sequences`` [batch *
    num_return_sequences, length] (starting with the decoder start token or the
    ``decoder_input_ids`` prompt; length as transformers' Flax returns it: ``max_length``
    columns, padded with the pad id after the longest row; ``pad_to_max_length=False``
    trims to the longest row as transformers' PyTorch does) and, for beam search,
    ``sequences_scores``.  With ``return_dict_in_generate=True``, ``output_scores`` /
    ``output_logits`` / ``output_attentions`` / ``output_hidden_states`` add transformers'
    per-step fields (and ``beam_indices``, encoder attentions / hidden states).
    ``prng_key`` seeds sampling (default ``PRNGKey(0)``).  ``length_buckets`` (default True)
    pads the source to a length bucket so that few programs are compiled; programs are
    kept in an LRU per model (see :mod:`encdec.compile_cache`).  ``encoder_outputs``
    skips the encoder; ``logits_processor`` / ``stopping_criteria`` take traceable
    callables ``(input_ids, scores)`` or transformers' Flax ``(input_ids, scores, cur_len)``
    (``input_ids``: the [rows, max_length] buffer, pad-filled from ``cur_len`` on).
    """
    length_buckets = bool(kwargs.pop("length_buckets", True))
    processors = tuple(kwargs.pop("logits_processor", None) or ())
    criteria = tuple(kwargs.pop("stopping_criteria", None) or ())
    encoder_outputs = kwargs.pop("encoder_outputs", None)
    prompt = kwargs.pop("decoder_input_ids", None)
    if kwargs.pop("streamer", None) is not None:
        raise ValueError("`streamer` is not supported by the Flax backend: its decode loop is one compiled program "
                         "(use the PyTorch backend to stream)")
    base_config = generation_config or model.generation_config
    plan, rest = cached_resolve(model, base_config, kwargs)
    traced = _is_traced((input_ids, attention_mask, params, prng_key, encoder_outputs, prompt))
    if prompt is not None:
        if _is_traced(prompt):
            raise ValueError("decoder_input_ids must be concrete (not traced) ids: whether the start token is put in "
                             "front depends on their values")
        prompt = decoder_prompt(np.asarray(prompt), plan.decoder_start_token_id)
        plan, rest = cached_resolve(model, base_config, kwargs, start_length=prompt.shape[1])
    check_model_inputs(rest, ())
    refuse_in_backend(plan, "Flax", UNSUPPORTED)
    streams = cross_attention_query_streams(model.config)
    if streams > 1 and plan.return_dict_in_generate and plan.output_attentions and not plan.use_cache:
        # the uncached loop's static buffer interleaves no streams per step: nothing to cut
        raise UnsupportedGenerationSetting("output_attentions with use_cache=False and a ProphetNet decoder is not "
                                           "implemented by the Flax backend (its cross-attention queries hold "
                                           f"{streams} streams per token); decode with the cache")
    for name, ok in (("max_time", plan.max_time is None), ("pad_to_max_length=False", pad_to_max_length),
                     ("return_dict_in_generate with per-step outputs", not (plan.return_dict_in_generate and (
                         plan.output_scores or plan.output_logits or plan.output_attentions or plan.output_hidden_states)))):
        if traced and not ok:
            raise ValueError(f"generate: `{name}` needs concrete values and cannot run inside jax.jit/pmap tracing; "
                             "call generate outside the traced function (it is compiled already)")
    if input_ids is None and encoder_outputs is None:
        raise ValueError("generate needs `input_ids` (or `encoder_outputs`)")
    inputs: dict[str, Any] = {"key": _default_key() if prng_key is None else prng_key}
    needs_encoder_ids = plan.encoder_repetition_penalty != 1.0 or plan.encoder_no_repeat_ngram_size > 0
    if encoder_outputs is None:
        validate_generate_inputs(model.config, plan, input_ids, attention_mask, host=host_values)
        input_ids = jnp.asarray(input_ids, jnp.int32)
        attention_mask = (default_attention_mask(input_ids, plan, xp=jnp) if attention_mask is None
                          else jnp.asarray(attention_mask, jnp.int32))
        source_length = input_ids.shape[1]
        if needs_encoder_ids:  # the unpadded ids: bucket pads are not source tokens
            inputs["encoder_ids"] = input_ids
        if length_buckets:
            bucket = bucket_length(input_ids.shape[1], max_sequence_length(model.config.encoder))
            input_ids, attention_mask = pad_source(input_ids, attention_mask, bucket, plan.pad_token_id, jnp)
        inputs.update(input_ids=input_ids, attention_mask=attention_mask)
    else:
        states = encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list, ModelOutput)) else encoder_outputs
        states = jnp.asarray(states)
        if states.ndim != 3:
            raise ValueError(f"encoder_outputs must hold the encoder's last hidden state [batch, source_len, hidden], "
                             f"got shape {tuple(states.shape)}")
        source_length = states.shape[1]
        attention_mask = (jnp.ones(states.shape[:2], jnp.int32) if attention_mask is None
                          else jnp.asarray(attention_mask, jnp.int32))
        if attention_mask.shape != states.shape[:2]:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but encoder_outputs covers "
                             f"{tuple(states.shape[:2])} (batch, source_len)")
        if needs_encoder_ids:
            if input_ids is None:
                raise ValueError("encoder_repetition_penalty / encoder_no_repeat_ngram_size need `input_ids` "
                                 "alongside `encoder_outputs`")
            inputs["encoder_ids"] = jnp.asarray(input_ids, jnp.int32)
        inputs.update(encoder_states=states, attention_mask=attention_mask)
    batch = inputs["attention_mask"].shape[0]
    if prompt is not None:
        if prompt.shape[0] != batch:
            raise ValueError(f"decoder_input_ids has {prompt.shape[0]} rows for a batch of {batch}")
        inputs["prompt"] = jnp.asarray(prompt, jnp.int32)
    programs = model.__dict__.get("_generate_programs")
    if programs is None:
        programs = model.__dict__["_generate_programs"] = ProgramCache()
    shapes = tuple(sorted((k, tuple(v.shape)) for k, v in inputs.items()))
    clock: dict = {"start": 0.0}

    def build():
        return _build_program(model.module, model.module_params, plan, dict(processors=processors, criteria=criteria, clock=clock)), clock

    # callables by identity (any object works; the cached program keeps them alive, so an id is not reused)
    callables = tuple(id(fn) for fn in processors + criteria), len(processors)
    program, clock = programs.get_or_build((plan, shapes, callables), build)
    clock["start"] = time.time()
    out = program(model.params if params is None else params, inputs)
    sequences = out["sequences"]  # max_length columns (transformers' Flax shape)
    fields: dict[str, Any] = {"sequences_scores": out.get("sequences_scores")}
    # transformers' PyTorch shape: trimmed to the longest row (the one read back to the host)
    fields["sequences"] = sequences if pad_to_max_length else sequences[:, : int(out["length"])]
    if plan.return_dict_in_generate and not traced:
        fields.update(_step_fields(plan, out, source_length, encoder_outputs, streams))
    return GenerateOutput(**fields)


def _step_fields(plan: DecodePlan, out: dict, source_length: int, encoder_outputs: Any, streams: int) -> dict:
    """Per-step fields cut to transformers' shapes; encoder fields cut to the unbucketed source."""
    fields = unstack_step_outputs(plan, out["recorded"], int(out["steps"]), source_length, out.get("first"), streams)
    if "beam_origin" in out:
        fields["beam_indices"] = out["beam_origin"][:, : int(out["length"]) - plan.prompt_length]
    if encoder_outputs is not None:
        if plan.output_attentions:
            fields["encoder_attentions"] = getattr(encoder_outputs, "attentions", None)
        if plan.output_hidden_states:
            fields["encoder_hidden_states"] = getattr(encoder_outputs, "hidden_states", None)
    else:
        if "encoder_attentions" in out:
            fields["encoder_attentions"] = tuple(a[:, :, :source_length, :source_length] for a in out["encoder_attentions"])
        if "encoder_hidden_states" in out:
            fields["encoder_hidden_states"] = tuple(h[:, :source_length] for h in out["encoder_hidden_states"])
    return fields
