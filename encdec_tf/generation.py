"""Decode loops for ``TFEncoderDecoderModel.generate``: greedy, beam search and sampling.

Each loop is a ``tf.while_loop`` over a static-shape KV cache ([batch, heads, max_len,
head_dim] per layer, written at the current index) with the cross-attention keys and
values computed once, so that the whole of ``generate`` — encoder, cross-attention cache, loop
— compiles as one XLA program.  Compiled programs are cached per model and per
:class:`~encdec.generation.DecodePlan`.  Semantics follow transformers 4.57 (its
``_sample`` and vectorised ``_beam_search``), token for token for greedy and beam.

The decoder prompt (the start token, or ``decoder_input_ids``) runs through the decoder once
before the loop; each iteration then picks a token from the pending logits and runs the
decoder on it.  With ``use_cache=False`` every decoder call runs over the whole (static,
pad-filled) sequence buffer and reads the logits at the current position — causal attention
makes that what transformers computes on the prefix, positions included.  What
``return_dict_in_generate`` asks for is written into preallocated per-step buffers inside
the loop and cut to transformers' shapes on the host (:func:`encdec.generation.unstack_step_outputs`).
"""
from __future__ import annotations

import inspect
import time
import weakref
from typing import Any

import numpy as np
import tensorflow as tf

from encdec.compile_cache import ProgramCache, bucket_length, pad_source
from encdec.generation import (DecodePlan, GenerationConfig, UnsupportedGenerationSetting, beam_fill_token_id,
                               check_model_inputs, decoder_prompt, default_attention_mask, resolve_generation,
                               unstack_step_outputs)
from encdec.generation_logits import ArrayOps, process, warp
from encdec.generation_logits import is_eos as core_is_eos
from encdec.outputs import BaseModelOutput, GenerateOutput
from encdec.specs import max_sequence_length
from encdec.validation import validate_generate_inputs
from encdec_tf.models.common import as_int, host_values

NEG_INF = float("-inf")
#: settings this backend refuses (see docs/generation.md); ``max_time`` is honoured only
#: when the loop runs eagerly (``jit_compile=False``): a compiled loop cannot read the clock.
UNSUPPORTED: tuple[str, ...] = ()
#: transformers' "impossible" beam score.
BEAM_NEG = -1.0e9

#: model -> its compiled programs, one per (plan, batch, source bucket), LRU-bounded (encdec.compile_cache).
_COMPILED: "weakref.WeakKeyDictionary[Any, ProgramCache]" = weakref.WeakKeyDictionary()


def generate(model: Any, input_ids: Any, attention_mask: Any = None, generation_config: GenerationConfig | None = None,
             **kwargs: Any) -> Any:
    """Generated ids [batch * num_return_sequences, length] (int32), starting with the
    decoder start token (or the ``decoder_input_ids`` prompt); with
    ``return_dict_in_generate`` a :class:`~encdec.outputs.GenerateOutput` with transformers'
    fields.  Extra keywords: generation settings, ``seed`` (sampling), ``jit_compile``
    (default True; False runs the same loop eagerly), ``length_buckets`` (default True:
    compiled calls pad the source to a length bucket, see :mod:`encdec.compile_cache`),
    ``encoder_outputs`` (the encoder's output instead of running it), ``decoder_input_ids``
    (a decoder prompt), ``logits_processor`` / ``stopping_criteria`` (lists of traceable
    callables, see docs/generation.md).

    Called eagerly, the result is cut to the generated length as in transformers; traced
    inside a ``tf.function`` (e.g. ``tf.function(model.generate, jit_compile=True)``) it
    keeps the static ``max_length`` columns, finished rows padded with the pad id (and
    per-step fields hold every possible step, uncropped).
    """
    seed = kwargs.pop("seed", None)
    jit_compile = kwargs.pop("jit_compile", True)
    length_buckets = bool(kwargs.pop("length_buckets", True))
    encoder_outputs = kwargs.pop("encoder_outputs", None)
    prompt = kwargs.pop("decoder_input_ids", None)
    hooks = Hooks(kwargs.pop("logits_processor", None), kwargs.pop("stopping_criteria", None))
    plan, rest = resolve_generation(model.config, generation_config or model.generation_config, kwargs)
    if prompt is not None:
        values = host_values(prompt)
        if values is None:
            raise ValueError("decoder_input_ids must be concrete ids (an array or an eager tensor): "
                             "generate reads them on the host to place the decoder start token")
        prompt = decoder_prompt(values, plan.decoder_start_token_id)
        plan, rest = resolve_generation(model.config, generation_config or model.generation_config, kwargs,
                                        start_length=prompt.shape[1])
    decoder_kwargs = sorted(k for k in rest if k.startswith("decoder_"))
    if decoder_kwargs:
        raise TypeError(f"generate does not take these decoder inputs: {', '.join(decoder_kwargs)}")
    check_model_inputs(rest, ())
    eager = tf.executing_eagerly()
    if model.config.decoder.model_type == "prophetnet":
        # its cross-attention queries hold 1 + ngram streams per token, and its logits depend on
        # the decoded length (transformers' uncached steps run on the prefix, not a static buffer)
        for name, on in (("output_attentions", plan.return_dict_in_generate and plan.output_attentions),
                         ("use_cache", not plan.use_cache)):
            if on:
                raise UnsupportedGenerationSetting(
                    f"generation setting `{name}`={getattr(plan, name)!r} with a ProphetNet decoder is not implemented "
                    "by the TensorFlow backend (see docs/generation.md)")
    if plan.max_time is not None and (jit_compile or not eager):
        raise ValueError(f"max_time={plan.max_time} needs the loop to run eagerly (generate(..., jit_compile=False), "
                         "outside tf.function): a compiled XLA loop cannot read the clock")
    if encoder_outputs is None:
        if input_ids is None:
            raise ValueError("generate needs `input_ids` (or `encoder_outputs`)")
        validate_generate_inputs(model.config, plan, input_ids, attention_mask, host=host_values)
        input_ids = as_int(input_ids)
        if attention_mask is None:
            attention_mask = default_attention_mask(input_ids, plan, xp=tf.experimental.numpy)
        encoder_states = None
    else:
        if isinstance(encoder_outputs, (tuple, list)):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        encoder_states = tf.convert_to_tensor(encoder_outputs[0] if isinstance(encoder_outputs, dict) else encoder_outputs)
        if encoder_states.shape.rank != 3:
            raise ValueError(f"encoder_outputs must hold the encoder's last hidden state [batch, length, hidden], "
                             f"got shape {encoder_states.shape}")
        if attention_mask is None:
            attention_mask = tf.ones(tf.shape(encoder_states)[:2], tf.int32)
        input_ids = None if input_ids is None else as_int(input_ids)
    attention_mask = as_int(attention_mask)
    source = encoder_states if encoder_states is not None else input_ids
    if prompt is None:  # the batch may be unknown while tracing (e.g. an exported signature)
        prompt = tf.fill(tf.stack([tf.shape(source)[0], 1]), plan.decoder_start_token_id)
    else:
        if source.shape[0] is not None and prompt.shape[0] != source.shape[0]:
            raise ValueError(f"decoder_input_ids has {prompt.shape[0]} rows for a batch of {source.shape[0]}")
        prompt = tf.constant(prompt, tf.int32)
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    seed = tf.constant([seed, 0], tf.int32)
    # the encoder-side processors read the source ids; without them the loop never sees ids
    if input_ids is None:
        input_ids = tf.zeros(tf.shape(attention_mask), tf.int32)
    if not jit_compile:
        result = decode(model, plan, input_ids, attention_mask, seed, prompt, encoder_states, hooks)
    else:
        exact_source = plan.output_attentions or plan.output_hidden_states or encoder_states is not None
        if length_buckets and eager and not exact_source:
            bucket = bucket_length(int(input_ids.shape[1]), max_sequence_length(model.config.encoder))
            input_ids, attention_mask = pad_source(input_ids, attention_mask, bucket, plan.pad_token_id, tf.experimental.numpy)
        fns = _COMPILED.get(model)
        if fns is None:
            fns = _COMPILED[model] = ProgramCache()
        # (what is traced, source shape): the prompt's shape follows from the plan and the batch
        what = plan if not (hooks.key() or encoder_states is not None) else (plan, hooks.key(), encoder_states is not None)
        # the vocabulary sizes too: a resized part holds new variables the old programs do not read
        vocabs = (model.config.encoder.vocab_size, model.config.decoder.vocab_size)
        fn = fns.get_or_build(((what, vocabs), tuple(input_ids.shape)), lambda: tf.function(
            lambda ids, mask, s, p, e: decode(model, plan, ids, mask, s, p, e, hooks), jit_compile=True, autograph=False))
        result = fn(input_ids, attention_mask, seed, prompt, encoder_states)
    return finish(plan, result, encoder_outputs, eager)


def finish(plan: DecodePlan, result: dict, encoder_outputs: Any, eager: bool) -> Any:
    """The ids (cut to the generated length when eager) or transformers' output fields."""
    sequences = result["sequences"]
    if eager:
        sequences = sequences[:, : int(result["length"])]
    if not plan.return_dict_in_generate:
        return sequences
    first = {name[len("first_"):]: value for name, value in result.items() if name.startswith("first_")}
    if eager:
        source_length = int(result["source_length"])
        fields = unstack_step_outputs(plan, result, int(result["steps"]), source_length, first or None)
    else:  # traced by the caller: every possible step, uncut (static shapes)
        fields = {name: tuple(result[name][t] for t in range(plan.max_length - plan.prompt_length))
                  for name in ("scores", "logits") if name in result}
        fields.update({name: (value,) + tuple(tuple(layer[t] for layer in result[name])
                                              for t in range(1, plan.max_length - plan.prompt_length))
                       for name, value in first.items()})
    fields["sequences"] = sequences
    if plan.mode == "beam":
        indices = result["beam_indices"]
        fields["beam_indices"] = indices[:, : int(result["length"]) - plan.prompt_length] if eager else indices
        if plan.output_scores:
            fields["sequences_scores"] = result["sequences_scores"]
    for name in ("encoder_attentions", "encoder_hidden_states"):
        wanted = plan.output_attentions if name == "encoder_attentions" else plan.output_hidden_states
        if not wanted:
            continue
        if encoder_outputs is not None:
            fields[name] = getattr(encoder_outputs, name[len("encoder_"):], None)
        else:
            fields[name] = result.get(name)
    return GenerateOutput(**fields)


def forget_compiled(model: Any) -> None:
    """Drop ``model``'s compiled decode programs (they trace its adapter state)."""
    _COMPILED.pop(model, None)


class Hooks:
    """The user's ``logits_processor`` and ``stopping_criteria``: traceable callables.

    A processor is called ``fn(input_ids, scores)`` — or ``fn(input_ids, scores, cur_len)``
    when it takes a third argument, as transformers' TF processors do — after the core's
    processors and before the warpers; a criterion ``fn(input_ids, scores)`` returns a bool
    scalar or one bool per row.  ``input_ids`` is the static [rows, max_length] buffer (the
    pad id after ``cur_len``), ``cur_len`` a scalar int32 tensor."""

    def __init__(self, processors: Any, criteria: Any) -> None:
        self.processors = self._list(processors, "logits_processor")
        self.criteria = self._list(criteria, "stopping_criteria")

    @staticmethod
    def _list(value: Any, name: str) -> tuple:
        if value is None:
            return ()
        items = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        for fn in items:
            if not callable(fn):
                raise TypeError(f"{name} must be a callable or a list of callables (input_ids, scores), got {fn!r}")
        return items

    def key(self) -> tuple:
        """Part of the compile-cache key: the callables themselves (a new one compiles a new program)."""
        return self.processors + self.criteria

    @staticmethod
    def _call(fn: Any, ids: tf.Tensor, scores: tf.Tensor, cur_len: tf.Tensor) -> Any:
        try:
            inspect.signature(fn).bind(ids, scores, cur_len)
        except (TypeError, ValueError):
            return fn(ids, scores)
        return fn(ids, scores, cur_len)

    def process(self, ids: tf.Tensor, scores: tf.Tensor, cur_len: tf.Tensor) -> tf.Tensor:
        for fn in self.processors:
            new = self._call(fn, ids, scores, cur_len)
            if not tf.is_tensor(new) or new.dtype != scores.dtype or new.shape != scores.shape:
                raise ValueError(f"logits processor {fn!r} must return a {scores.dtype.name} tensor of shape "
                                 f"{scores.shape}, got {getattr(new, 'dtype', type(new))} {getattr(new, 'shape', '')}")
            scores = new
        return scores

    def stop(self, ids: tf.Tensor, scores: tf.Tensor, cur_len: tf.Tensor) -> Any:
        """[rows] bool: rows the criteria stop (None without criteria)."""
        if not self.criteria:
            return None
        rows = ids.shape[0]
        done = tf.zeros(tf.shape(ids)[:1], tf.bool)
        for fn in self.criteria:
            hit = self._call(fn, ids, scores, cur_len)
            hit = tf.convert_to_tensor(hit) if not tf.is_tensor(hit) else hit
            if hit.dtype != tf.bool or hit.shape.rank not in (0, 1) or (hit.shape.rank == 1 and hit.shape[0] not in (1, rows)):
                raise ValueError(f"stopping criterion {fn!r} must return a bool or a [{rows}] bool tensor, "
                                 f"got {hit.dtype.name} {hit.shape}")
            done = tf.logical_or(done, hit)
        return done


def decode(model: Any, plan: DecodePlan, input_ids: tf.Tensor, attention_mask: tf.Tensor, seed: tf.Tensor,
           prompt: tf.Tensor, encoder_states: Any = None, hooks: Hooks | None = None) -> dict:
    """Run the encoder once (unless its states are given), the prompt through the decoder,
    then the loop of ``plan.mode``; returns a dict: the sequence buffer [rows, max_length],
    the ``length`` generated, the ``steps`` taken and the recorded fields."""
    hooks = hooks or Hooks(None, None)
    result: dict[str, Any] = {}
    if encoder_states is None:
        enc_out = model.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                output_attentions=plan.output_attentions, output_hidden_states=plan.output_hidden_states,
                                return_dict=True)
        enc = enc_out.last_hidden_state
        if plan.return_dict_in_generate and plan.output_attentions:
            result["encoder_attentions"] = tuple(enc_out.attentions)
        if plan.return_dict_in_generate and plan.output_hidden_states:
            result["encoder_hidden_states"] = tuple(enc_out.hidden_states)
    else:
        enc = encoder_states
    if model.enc_to_dec_proj is not None:
        enc = model.enc_to_dec_proj(enc)
    expand = plan.num_beams if plan.mode == "beam" else plan.num_return_sequences
    enc = tf.repeat(enc, expand, axis=0)
    mask = tf.repeat(attention_mask, expand, axis=0)
    rows = tf.shape(enc)[0]
    if plan.use_cache:
        _, heads, head_dim = model.decoder.cache_layout
        zeros = tf.zeros(tf.stack([rows, heads, plan.max_length, head_dim]), enc.dtype)
        cache = tuple((zeros, zeros) + kv for kv in model.decoder.cross_cache(enc))
    else:
        cache = ()
    record = plan.return_dict_in_generate
    flags = dict(output_attentions=record and plan.output_attentions,
                 output_hidden_states=record and plan.output_hidden_states)

    def forward(seqs: tf.Tensor, cur_len: Any, cache: Any, first: bool = False):
        """float32 logits [rows, vocab] for the token at ``cur_len`` (``seqs`` [rows, max_len]
        known before it), the recorded decoder outputs and the new cache."""
        if not plan.use_cache:  # slots after cur_len (beam fill ids may lie outside the vocabulary) -> pad
            seqs = tf.where(tf.range(plan.max_length)[None, :] < cur_len, seqs, plan.pad_token_id)
            out = model.decoder(input_ids=seqs, encoder_hidden_states=enc, encoder_attention_mask=mask, return_dict=True,
                                **flags)
            logits, new_cache = tf.gather(out.logits, cur_len - 1, axis=1), cache
        else:
            tokens = seqs[:, : plan.prompt_length] if first else seqs[:, cur_len - 1][:, None]
            out = model.decoder(input_ids=tokens, encoder_attention_mask=mask, past_key_values=cache,
                                cache_index=0 if first else cur_len - 1, use_cache=True, return_dict=True, **flags)
            logits, new_cache = out.logits[:, -1], same_shapes(out.past_key_values, cache)
        extras = {}
        if flags["output_attentions"]:
            extras["decoder_attentions"] = tuple(out.attentions)
            extras["cross_attentions"] = tuple(out.cross_attentions)
        if flags["output_hidden_states"]:
            extras["decoder_hidden_states"] = tuple(out.hidden_states)
        return tf.cast(logits, tf.float32), extras, new_cache

    recorder = Recorder(plan)
    start = tf.repeat(prompt, expand, axis=0)
    if plan.mode == "beam":
        out = beam_search(plan, forward, cache, tf.shape(prompt)[0], start, input_ids, recorder, hooks,
                          model.config.decoder.vocab_size)
    else:
        out = greedy_or_sample(plan, forward, cache, rows, seed, start, input_ids, recorder, hooks,
                               model.config.decoder.vocab_size)
    result.update(out)
    result["source_length"] = tf.shape(mask)[1]
    return result


class Recorder:
    """Preallocated per-step buffers for what ``return_dict_in_generate`` asks for: step ``i``'s
    scores/logits at index ``i``, the decoder call that produced step ``i``'s logits at
    index ``i`` (``i >= 1``; step 0's, the prompt's, is kept apart)."""

    def __init__(self, plan: DecodePlan) -> None:
        self.plan = plan
        self.steps = plan.max_length - plan.prompt_length
        self.scores = plan.return_dict_in_generate and plan.output_scores
        self.logits = plan.return_dict_in_generate and plan.output_logits
        #: the loop starts one position early with a pass that only runs the decoder (see greedy_or_sample)
        self.warmup = (plan.prompt_length == 1 or not plan.use_cache) and not (
            plan.return_dict_in_generate and (plan.output_attentions or plan.output_hidden_states))

    def init(self, logits: tf.Tensor, first: dict) -> dict:
        """Zero buffers shaped after the first step's logits and decoder outputs."""
        buffers: dict[str, Any] = {}
        zeros = tf.zeros(tf.concat([[self.steps], tf.shape(logits)], 0), tf.float32)
        if self.scores:
            buffers["scores"] = zeros
        if self.logits:
            buffers["logits"] = zeros
        for name, layers in first.items():
            # one slot more: the decoder call after the last step has nowhere else to go
            buffers[name] = tuple(tf.zeros(tf.concat([[self.steps + 1], self._step_shape(name, t)], 0), t.dtype)
                                  for t in layers)
        return buffers

    def _step_shape(self, name: str, t: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(t)
        if not self.plan.use_cache:  # the whole buffer every step, like the first call
            return shape
        # one token per step: the prompt call's queries over the prompt length (ProphetNet's
        # cross-attention queries hold its 1 + ngram streams per token)
        axis = 1 if name == "decoder_hidden_states" else 2
        return tf.tensor_scatter_nd_update(shape, [[axis]], [shape[axis] // self.plan.prompt_length])

    def put(self, buffers: dict, index: tf.Tensor, **values: Any) -> dict:
        """``buffers[name][index] = value`` for the given values (absent names are skipped)."""
        new = dict(buffers)
        for name, value in values.items():
            if name not in buffers:
                continue
            if isinstance(value, tuple):
                new[name] = tuple(put(b, index, v) for b, v in zip(buffers[name], value))
            else:
                new[name] = put(buffers[name], index, value)
        return new


def put(buffer: tf.Tensor, index: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """``buffer[index] = value`` along axis 0 (a dynamic-update-slice under XLA)."""
    return tf.tensor_scatter_nd_update(buffer, tf.reshape(index, [1, 1]), tf.cast(value, buffer.dtype)[None])


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
                   encoder_ids: Any = None, rows_per_input: int = 1, hooks: Hooks | None = None) -> tf.Tensor:
    """The core's processors, the user's, then the warpers for ``plan`` on ``scores``
    [rows, vocab] for the token at ``cur_len``, given ``seqs`` [rows, max_len]."""
    scores = process(plan, OPS, scores, seqs, cur_len, encoder_ids, rows_per_input)
    if hooks is not None:
        scores = hooks.process(seqs, scores, cur_len)
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


def out_of_time(plan: DecodePlan, started: float) -> bool:
    """``max_time`` (only ever set when the loop runs eagerly, where this is re-read each step)."""
    return plan.max_time is not None and time.time() - started > plan.max_time


def with_prompt(plan: DecodePlan, start: tf.Tensor, fill: int, lead: tf.Tensor) -> tf.Tensor:
    """The sequence buffer [*lead, max_length]: the prompt ``start`` [*lead, P], then ``fill``."""
    tail = tf.fill(tf.concat([lead, [plan.max_length - plan.prompt_length]], 0), fill)
    return tf.concat([tf.cast(start, tf.int32), tail], axis=-1)


# --- greedy and sampling ---------------------------------------------------------------
def greedy_or_sample(plan: DecodePlan, forward, cache, rows, seed, start, encoder_ids, recorder: Recorder, hooks: Hooks,
                     vocab: int):
    P = plan.prompt_length
    started = time.time()
    seqs = with_prompt(plan, start, plan.pad_token_id, tf.stack([rows]))
    # Where the prompt's decoder call is the loop's own (one start token with the cache, or no
    # cache) and no per-step decoder outputs are recorded, the loop starts one position early
    # with a pass that only runs the decoder: one decoder in the XLA program, not two.
    warmup = recorder.warmup
    if warmup:
        first = {}
        logits = tf.zeros(tf.stack([rows, vocab]), tf.float32)
    else:
        logits, first, cache = forward(seqs, tf.constant(P), cache, first=True)
    unfinished = tf.ones(tf.stack([rows]), tf.bool)
    state = dict(cur_len=tf.constant(P - 1 if warmup else P), seqs=seqs, unfinished=unfinished, cache=cache,
                 logits=logits, rec=recorder.init(logits, first))

    def cond(s):
        return tf.logical_and(s["cur_len"] < plan.max_length, tf.reduce_any(s["unfinished"]))

    def body(s):
        cur_len, seqs = s["cur_len"], s["seqs"]
        live = cur_len >= P  # False only in the warm-up pass
        scores = process_scores(plan, s["logits"], seqs, cur_len, encoder_ids, plan.num_return_sequences, hooks)
        # the warm-up pass writes index 0, which the first real step overwrites
        rec = recorder.put(s["rec"], tf.maximum(cur_len - P, 0), scores=scores, logits=s["logits"])
        if plan.do_sample:
            tokens = tf.random.stateless_categorical(scores, 1, seed=tf.stack([seed[0], cur_len]), dtype=tf.int32)[:, 0]
        else:
            tokens = tf.argmax(scores, axis=-1, output_type=tf.int32)
        tokens = tf.where(s["unfinished"], tokens, plan.pad_token_id)
        seqs = write(seqs, cur_len, tokens)
        unfinished = tf.logical_and(s["unfinished"], tf.logical_not(is_eos(plan, tokens)))
        stopped = hooks.stop(seqs, scores, cur_len + 1)
        if stopped is not None:
            unfinished = tf.logical_and(unfinished, tf.logical_not(stopped))
        if out_of_time(plan, started):
            unfinished = tf.zeros_like(unfinished)
        if warmup:
            seqs, unfinished = tf.where(live, seqs, s["seqs"]), tf.where(live, unfinished, s["unfinished"])
        logits, extras, cache = forward(seqs, cur_len + 1, s["cache"])
        rec = recorder.put(rec, cur_len + 1 - P, **extras)
        new = dict(cur_len=cur_len + 1, seqs=seqs, unfinished=unfinished, cache=cache, logits=logits, rec=rec)
        return [same_shapes(new, s)]

    (s,) = tf.while_loop(cond, body, [state], maximum_iterations=plan.max_length - P + int(warmup))
    out = dict(s["rec"], sequences=s["seqs"], length=s["cur_len"], steps=s["cur_len"] - P)
    out.update({"first_" + name: value for name, value in first.items()})
    return out


# --- beam search -------------------------------------------------------------------------
def beam_search(plan: DecodePlan, forward, cache, batch, start, encoder_ids, recorder: Recorder, hooks: Hooks,
                vocab: int):
    """transformers 4.57's vectorised beam search: keep the top ``2K`` (more with several
    eos ids) continuations, continue the best ``K`` that did not stop, and merge the ones
    that stopped into ``K`` finished hypotheses scored with the length penalty."""
    k, max_len, P = plan.num_beams, plan.max_length, plan.prompt_length
    started = time.time()
    keep = max(2, 1 + len(plan.eos_token_ids)) * k
    fill = beam_fill_token_id(plan)  # the core's rule (transformers'), placeholder rows included
    running = with_prompt(plan, tf.reshape(start, tf.stack([batch, k, P])), fill, tf.stack([batch, k]))
    warmup = recorder.warmup  # see greedy_or_sample
    if warmup:
        first = {}
        logits = tf.zeros(tf.stack([batch * k, vocab]), tf.float32)
    else:
        logits, first, cache = forward(tf.reshape(running, [-1, max_len]), tf.constant(P), cache, first=True)
    running_scores = tf.tile(tf.constant([[0.0] + [BEAM_NEG] * (k - 1)]), tf.stack([batch, 1]))
    # beam_indices: the flat beam each generated token came from (-1: none), as transformers
    origin = tf.fill(tf.stack([batch, k, max_len - P]), -1)
    state = dict(
        cur_len=tf.constant(P - 1 if warmup else P), running=running, running_scores=running_scores, running_origin=origin,
        seqs=running, scores=tf.fill(tf.stack([batch, k]), BEAM_NEG), origin=origin,
        lengths=tf.fill(tf.stack([batch, k]), P), finished=tf.zeros(tf.stack([batch, k]), tf.bool),
        unsatisfied=tf.ones(tf.stack([batch, 1]), tf.bool), go=tf.constant(True), cache=cache, logits=logits,
        rec=recorder.init(logits, first),
    )
    top_mask = tf.constant([True] * k + [False] * (keep - k))
    offsets = (tf.range(batch) * k)[:, None]

    def cond(s):
        return s["go"]

    def body(s):
        cur_len = s["cur_len"]
        live = cur_len >= P  # False only in the warm-up pass
        flat_running = tf.reshape(s["running"], [-1, max_len])
        logits = s["logits"]
        log_probs = process_scores(plan, tf.nn.log_softmax(logits, axis=-1), flat_running, cur_len, encoder_ids, k, hooks)
        rec = recorder.put(s["rec"], tf.maximum(cur_len - P, 0), scores=log_probs, logits=logits)
        total = tf.reshape(log_probs, tf.stack([batch, k, vocab])) + s["running_scores"][:, :, None]
        top_lp, top_idx = tf.math.top_k(tf.reshape(total, tf.stack([batch, k * vocab])), keep)
        parent, tokens = top_idx // vocab, top_idx % vocab
        cand = write(tf.gather(s["running"], parent, batch_dims=1), cur_len, tokens)
        cand_origin = write(tf.gather(s["running_origin"], parent, batch_dims=1), cur_len - P, parent + offsets)
        hits = tf.logical_or(is_eos(plan, tokens), cur_len + 1 >= max_len)
        stopped = hooks.stop(tf.reshape(cand, [-1, max_len]), log_probs, cur_len + 1)
        if stopped is not None:
            hits = tf.logical_or(hits, tf.reshape(tf.broadcast_to(stopped, [batch * keep]), [batch, keep]))
        if out_of_time(plan, started):
            hits = tf.ones_like(hits)

        # running beams for the next step: the best K that did not stop
        run_lp = top_lp + tf.cast(hits, tf.float32) * BEAM_NEG
        nxt = tf.math.top_k(run_lp, k).indices
        running, running_scores = tf.gather(cand, nxt, batch_dims=1), tf.gather(run_lp, nxt, batch_dims=1)
        running_origin = tf.gather(cand_origin, nxt, batch_dims=1)
        beam_idx = tf.reshape(tf.gather(parent, nxt, batch_dims=1) + offsets, [-1])

        # finished hypotheses: merge the ones that just stopped among the top K
        just = tf.logical_and(hits, top_mask[None, :])
        fin_lp = top_lp / length_norm(cur_len + 1 - P, plan.length_penalty)
        if plan.early_stopping is True:
            fin_lp += tf.cast(tf.reduce_all(s["finished"], axis=-1, keepdims=True), tf.float32) * BEAM_NEG
        fin_lp += tf.cast(tf.logical_not(s["unsatisfied"]), tf.float32) * BEAM_NEG
        fin_lp += tf.cast(tf.logical_not(just), tf.float32) * BEAM_NEG
        merged = tf.concat([s["scores"], fin_lp], axis=1)
        best = tf.math.top_k(merged, k).indices
        seqs = tf.gather(tf.concat([s["seqs"], cand], axis=1), best, batch_dims=1)
        origin = tf.gather(tf.concat([s["origin"], cand_origin], axis=1), best, batch_dims=1)
        lengths = tf.gather(tf.concat([s["lengths"], tf.fill(tf.shape(tokens), cur_len + 1)], axis=1), best, batch_dims=1)
        finished = tf.gather(tf.concat([s["finished"], just], axis=1), best, batch_dims=1)
        scores = tf.gather(merged, best, batch_dims=1)

        cur_len = cur_len + 1
        unsatisfied = early_stop_unsatisfied(plan, s["unsatisfied"], running_scores, scores, finished, cur_len)
        go = tf.reduce_any(unsatisfied)
        if plan.early_stopping is True:
            go = tf.logical_and(go, tf.logical_not(tf.reduce_all(finished)))
        go = tf.logical_and(go, tf.logical_not(tf.reduce_all(hits)))

        if warmup:  # the warm-up pass only runs the decoder on the prompt
            kept = dict(running=running, running_scores=running_scores, running_origin=running_origin, seqs=seqs,
                        scores=scores, origin=origin, lengths=lengths, finished=finished, unsatisfied=unsatisfied, go=go)
            kept = {name: tf.where(live, value, s[name]) for name, value in kept.items()}
            running, running_scores, running_origin, seqs, scores, origin, lengths, finished, unsatisfied, go = kept.values()
            beam_idx = tf.where(live, beam_idx, tf.range(batch * k))
        # the self-attention cache follows its beams; cross-attention entries are equal across a row's beams
        cache = tuple(tuple(tf.gather(t, beam_idx, axis=0) for t in layer[:2]) + tuple(layer[2:]) for layer in s["cache"])
        logits, extras, cache = forward(tf.reshape(running, [-1, max_len]), cur_len, cache)
        rec = recorder.put(rec, cur_len - P, **extras)
        new = dict(cur_len=cur_len, running=running, running_scores=running_scores, running_origin=running_origin,
                   seqs=seqs, scores=scores, origin=origin, lengths=lengths, finished=finished,
                   unsatisfied=unsatisfied, go=go, cache=cache, logits=logits, rec=rec)
        return [same_shapes(new, s)]

    (s,) = tf.while_loop(cond, body, [state], maximum_iterations=max_len - P + int(warmup))
    nrs = plan.num_return_sequences
    out = dict(s["rec"], sequences=tf.reshape(s["seqs"][:, :nrs], [-1, max_len]),
               length=tf.reduce_max(s["lengths"][:, :nrs]), steps=s["cur_len"] - P,
               sequences_scores=tf.reshape(s["scores"][:, :nrs], [-1]),
               beam_indices=tf.reshape(s["origin"][:, :nrs], [-1, max_len - P]))
    out.update({"first_" + name: value for name, value in first.items()})
    return out


def length_norm(length: Any, penalty: float) -> tf.Tensor:
    """``length ** penalty`` computed in float64 (as Python does for transformers), as float32."""
    return tf.cast(tf.cast(length, tf.float64) ** penalty, tf.float32)


def early_stop_unsatisfied(plan: DecodePlan, unsatisfied, running_scores, scores, finished, cur_len):
    """transformers' heuristic: can the best running beam still beat the worst finished one?"""
    if plan.early_stopping == "never" and plan.length_penalty > 0.0:
        length = plan.max_length - plan.prompt_length
    else:
        length = cur_len - plan.prompt_length
    best_running = running_scores[:, :1] / length_norm(length, plan.length_penalty)
    worst = tf.where(finished, tf.reduce_min(scores, axis=1, keepdims=True), BEAM_NEG)
    return tf.logical_and(unsatisfied, tf.reduce_any(best_running > worst, axis=-1, keepdims=True))
