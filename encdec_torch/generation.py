"""Decode loops for :class:`~encdec_torch.EncoderDecoderModel`: greedy, sampling and beam search.

Every loop starts from the core's :class:`~encdec.generation.DecodePlan` and asks the core
(:mod:`encdec.generation_logits`) what to do with each step's logits.  The encoder runs
once; with ``use_cache`` (the default) the decoder runs the prompt once and then one token
per step on its KV cache (cross-attention keys/values computed on the first step and kept);
``use_cache=False`` runs the decoder over the whole prefix each step, as transformers does.
Token choices follow transformers 4.57's ``generate`` for encoder-decoder models step for step.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from encdec.generation import (DecodePlan, GenerationConfig, beam_fill_token_id, check_model_inputs, decoder_prompt,
                               default_attention_mask, resolve_generation)
from encdec.generation_logits import ArrayOps, is_eos, process, warp
from encdec.outputs import BaseModelOutput, GenerateOutput
from encdec.validation import validate_generate_inputs
from encdec_torch.models.common import StaticKV, host_values

#: encoder inputs ``generate`` passes on besides ``input_ids`` / ``attention_mask``.
ENCODER_INPUTS = ("inputs_embeds", "token_type_ids", "position_ids")

#: score given to continuations a beam must not take (transformers' constant).
_BLOCKED = -1.0e9


class TorchOps(ArrayOps):
    """The core's array operations in torch spelling, on ``device``."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(torch)
        self.device = device

    def arange(self, n: int) -> torch.Tensor:
        return torch.arange(n, device=self.device)

    def constant(self, values: Any, dtype: str = "int32") -> torch.Tensor:
        array = np.asarray(values, dtype=dtype)
        return torch.from_numpy(array.astype(np.int64) if array.dtype.kind == "i" else array).to(self.device)

    def to_int(self, x: torch.Tensor) -> torch.Tensor:
        return x.long()

    def clip(self, x: Any, low: int, high: int) -> Any:
        return min(max(int(x), low), high) if isinstance(x, int) else torch.clamp(x, low, high)

    def take(self, x: torch.Tensor, index: torch.Tensor, axis: int) -> torch.Tensor:
        return x[(slice(None),) * axis + (index,)]

    def take_along_last(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.take_along_dim(x, index, dim=-1)

    def repeat(self, x: torch.Tensor, times: int) -> torch.Tensor:
        return x.repeat_interleave(times, dim=0)

    def max(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=-1, keepdim=True)

    def sort(self, x: torch.Tensor):
        return torch.sort(x, dim=-1, stable=True)

    def top_k(self, x: torch.Tensor, k: int):
        return exact_top_k(x, k)

    def softmax(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=-1)

    def log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(x, dim=-1)

    def presence(self, ids: torch.Tensor, valid: torch.Tensor, vocab: int) -> torch.Tensor:
        inside = (ids >= 0) & (ids < vocab)  # encoder ids may lie outside the decoder's vocabulary
        counts = torch.zeros(ids.shape[0], vocab, device=ids.device)
        return counts.scatter_add_(1, torch.where(inside, ids, 0).long(), (valid & inside).float()) > 0


def _order_keys(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered by float32 ``values`` and, among equal values, by lower ``index``
    (< 2**32): the float's bits mapped to an order-preserving integer (-0.0 counted as 0.0) in
    the high 32 bits, the reversed index in the low 32."""
    bits = (values.float() + 0.0).view(torch.int32).long()
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    return ordered * (1 << 32) + ((1 << 32) - 1 - index)


def exact_top_k(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest of ``x`` along the last axis, ties to the lower index (the core's rule),
    without sorting every score: ``torch.topk`` finds the right values but takes any of the
    elements tied with the k-th one; those are replaced by the lowest-index tied elements (a
    second selection), and the ``k`` winners are ordered among themselves."""
    values, index = torch.topk(x, k, dim=-1)
    kth = values[..., -1:]
    above = values > kth  # certainly chosen; the rest of the k are elements equal to kth
    n = x.shape[-1]
    # n .. 1: higher for a lower index (float32 holds these exactly below 2**24, and selects faster)
    rank = torch.arange(n, 0, -1, device=x.device, dtype=torch.float32 if n < (1 << 24) else torch.int64)
    tied = torch.topk(torch.where(x == kth, rank, 0), k, dim=-1).values.long()
    slots = torch.arange(k, device=x.device) < k - above.sum(dim=-1, keepdim=True)
    candidates = torch.cat([index, (n - tied).clamp(max=n - 1)], dim=-1)
    chosen = torch.cat([above, (tied > 0) & slots], dim=-1)  # exactly k per row
    keys = _order_keys(torch.take_along_dim(x, candidates, dim=-1), candidates)
    keys = torch.where(chosen, keys, torch.iinfo(torch.int64).min)
    index = torch.take_along_dim(candidates, torch.topk(keys, k, dim=-1).indices, dim=-1)
    return torch.take_along_dim(x, index, dim=-1), index


# --- model plumbing ----------------------------------------------------------------------
#: positions a decoding cache starts with; it doubles when full, up to ``max_length``.
_FIRST_CAPACITY = 64


class _Decoder:
    """The decoder, one step at a time.

    With the cache, self-attention keys/values live in preallocated buffers (up to
    ``max_length`` positions, doubling from 64 as needed) for ``batch * expand`` rows (beams / returned sequences,
    consecutive per input), written in place each step (:class:`StaticKV`); the
    cross-attention keys/values of the ``batch`` encoder rows are computed once and shared by
    each input's rows (see :func:`~encdec_torch.models.common.attend`), never copied or
    reordered.  Without the cache, each step runs the decoder over all tokens so far.
    """

    def __init__(self, model, encoder_states: torch.Tensor, encoder_mask: Optional[torch.Tensor], expand: int,
                 plan: DecodePlan, compile_step: Optional[str] = None) -> None:
        if encoder_mask is not None and bool(encoder_mask.all()):
            encoder_mask = None  # nothing masked: checked once here, not at every step
        self.model, self.enc, self.mask, self.plan = model, encoder_states, encoder_mask, plan
        self.rows = encoder_states.shape[0] * expand
        self.cache = None
        self.fed = 0  # tokens already in the cache
        if plan.use_cache:
            # the compiled step gets its whole buffer at once (a grown one would be a new program)
            start = plan.max_length if compile_step else min(plan.max_length, _FIRST_CAPACITY)
            self.cache = tuple((StaticKV.empty(k, self.rows, start, plan.max_length),
                                StaticKV.empty(v, self.rows, start, plan.max_length), k, v)
                               for k, v in model.decoder.cross_kv(encoder_states))
        else:  # the uncached forward takes per-row encoder states
            self.enc = encoder_states.repeat_interleave(expand, dim=0)
            self.mask = None if encoder_mask is None else encoder_mask.repeat_interleave(expand, dim=0)
        self.last = None
        self.compiled = _compiled_step(compile_step) if compile_step else None

    def step(self, seqs: torch.Tensor) -> torch.Tensor:
        """float32 logits [rows, vocab] for the token after ``seqs`` [rows, cur_len]."""
        plan = self.plan
        tokens = seqs[:, self.fed:] if plan.use_cache else seqs
        if self.compiled is not None and tokens.shape[1] == 1 and self.fed >= 2:
            # from the third step on (filled lengths 0 and 1 would each get a specialised program)
            self.fed = seqs.shape[1]
            return self.compiled(self.model.decoder, tokens.contiguous(), self.cache, self.enc, self.mask)
        out = self.model.decoder(
            input_ids=tokens, encoder_hidden_states=self.enc, encoder_attention_mask=self.mask,
            past_key_values=self.cache, use_cache=plan.use_cache,
            output_attentions=plan.output_attentions, output_hidden_states=plan.output_hidden_states, return_dict=True,
        )
        if plan.use_cache:  # the buffers now hold the new entries; the returned views are not kept
            self.fed = seqs.shape[1]
        self.last = out
        return out.logits[:, -1, :].float()

    def reorder(self, index: torch.Tensor) -> None:
        """Follow beams: self-attention entries move (in place); shared cross entries stay."""
        if self.cache is not None:
            for k, v, _, _ in self.cache:
                k.reorder(index)
                v.reorder(index)


def _decoder_step(decoder, tokens: torch.Tensor, cache, enc: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """One token per row on the static cache: float32 logits [rows, vocab] (what the opt-in
    compiled step compiles)."""
    out = decoder(input_ids=tokens, encoder_hidden_states=enc, encoder_attention_mask=mask, past_key_values=cache,
                  use_cache=True, return_dict=True)
    return out.logits[:, -1, :].float()


_COMPILED: dict = {}


def _compiled_step(backend: str):
    """``torch.compile`` of :func:`_decoder_step` with dynamic shapes (the filled cache length
    grows by one per step).  One compiled function per torch.compile ``backend`` for the
    process: torch keeps its programs per code object, guarded on the decoder module, so later
    calls with the same model reuse them."""
    if backend not in _COMPILED:
        _COMPILED[backend] = torch.compile(_decoder_step, dynamic=True, backend=backend)
    return _COMPILED[backend]


class _Recorder:
    """What ``return_dict_in_generate`` asks to keep, step by step (transformers' fields)."""

    def __init__(self, plan: DecodePlan) -> None:
        self.plan = plan
        self.scores: list = []
        self.logits: list = []
        self.decoder_attentions: list = []
        self.cross_attentions: list = []
        self.decoder_hidden_states: list = []

    def add(self, decoder: _Decoder, logits: torch.Tensor, scores: torch.Tensor) -> None:
        plan = self.plan
        if not plan.return_dict_in_generate:
            return
        if plan.output_scores:
            self.scores.append(scores.clone())
        if plan.output_logits:
            self.logits.append(logits.clone())
        out = decoder.last
        if plan.output_attentions:
            self.decoder_attentions.append(out.attentions)
            self.cross_attentions.append(out.cross_attentions)
        if plan.output_hidden_states:
            self.decoder_hidden_states.append(out.hidden_states)

    def fields(self) -> dict:
        plan = self.plan
        out = {}
        if plan.output_scores:
            out["scores"] = tuple(self.scores)
        if plan.output_logits:
            out["logits"] = tuple(self.logits)
        if plan.output_attentions:
            out["decoder_attentions"] = tuple(self.decoder_attentions)
            out["cross_attentions"] = tuple(self.cross_attentions)
        if plan.output_hidden_states:
            out["decoder_hidden_states"] = tuple(self.decoder_hidden_states)
        return out


class _Steps:
    """One step's logits -> scores: the core's processors, the user's, the warpers."""

    def __init__(self, plan: DecodePlan, ops: TorchOps, encoder_ids, expand: int, user_processors) -> None:
        self.plan, self.ops, self.encoder_ids, self.expand = plan, ops, encoder_ids, expand
        self.user = list(user_processors or ())

    def __call__(self, seqs: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        plan, ops = self.plan, self.ops
        scores = process(plan, ops, scores, seqs, seqs.shape[1], self.encoder_ids, self.expand)
        for fn in self.user:
            new = fn(seqs, scores)
            if not isinstance(new, torch.Tensor) or new.shape != scores.shape or not new.is_floating_point():
                raise ValueError(f"logits processor {fn!r} must return a float tensor of shape {tuple(scores.shape)}, "
                                 f"got {getattr(new, 'dtype', type(new))} {tuple(getattr(new, 'shape', ()))}")
            scores = new
        return warp(plan, ops, scores)


class _Stop:
    """max_length, max_time and the user's stopping criteria (transformers' protocol:
    ``criterion(input_ids, scores) -> bool or [rows] bool``)."""

    def __init__(self, plan: DecodePlan, criteria) -> None:
        self.plan, self.criteria, self.start = plan, list(criteria or ()), time.time()

    def __call__(self, seqs: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        rows = seqs.shape[0]
        done = torch.full((rows,), seqs.shape[1] >= self.plan.max_length, dtype=torch.bool, device=seqs.device)
        if self.plan.max_time is not None and time.time() - self.start > self.plan.max_time:
            done[:] = True
        for fn in self.criteria:
            hit = fn(seqs, scores)
            hit = torch.as_tensor(hit, device=seqs.device)
            if hit.dtype != torch.bool or hit.numel() not in (1, rows):
                raise ValueError(f"stopping criterion {fn!r} must return a bool or a [{rows}] bool tensor, got {hit!r}")
            done = done | hit.reshape(-1).expand(rows)
        return done


def generate(model, input_ids: Optional[torch.Tensor], attention_mask: Optional[torch.Tensor],
             generation_config: Optional[GenerationConfig], **kwargs: Any):
    """Generate ``[batch * num_return_sequences, length]`` ids starting with the decoder start
    token (or the ``decoder_input_ids`` prompt).

    Besides generation settings: ``generator`` (a ``torch.Generator``) seeds sampling;
    ``logits_processor`` / ``stopping_criteria``: lists of callables ``(input_ids, scores)``
    as in transformers; ``streamer``: an object with ``put(ids)`` / ``end()``;
    ``encoder_outputs``: the encoder's output, instead of running it; ``decoder_input_ids``:
    a decoder prompt; ``compile_step=True`` (or a ``torch.compile`` backend name): run the
    single-token decoder step through ``torch.compile`` (static cache, dynamic length;
    compiled on the first call, reused after; ids unchanged, see docs/performance.md).  Other keywords that are not generation settings go to the encoder.
    Like transformers, this does not switch the model to eval mode.
    """
    generator = kwargs.pop("generator", None)
    compile_step = kwargs.pop("compile_step", False)
    if compile_step is True:
        compile_step = "inductor"
    if compile_step is not False and compile_step is not None and not isinstance(compile_step, str):
        raise TypeError(f"compile_step must be True, False or a torch.compile backend name, got {compile_step!r}")
    user_processors = kwargs.pop("logits_processor", None)
    criteria = kwargs.pop("stopping_criteria", None)
    streamer = kwargs.pop("streamer", None)
    encoder_outputs = kwargs.pop("encoder_outputs", None)
    prompt = kwargs.pop("decoder_input_ids", None)
    plan, rest = resolve_generation(model.config, generation_config, kwargs)
    if prompt is not None:
        prompt_np = decoder_prompt(np.asarray(prompt.detach().cpu()), plan.decoder_start_token_id)
        plan, rest = resolve_generation(model.config, generation_config, kwargs, start_length=prompt_np.shape[1])
    decoder_kwargs = sorted(k for k in rest if k.startswith("decoder_"))
    if decoder_kwargs:
        raise TypeError(f"generate does not take these decoder inputs: {', '.join(decoder_kwargs)}")
    check_model_inputs(rest, ENCODER_INPUTS)
    if input_ids is None and encoder_outputs is None and "inputs_embeds" not in rest:
        raise ValueError("generate needs `input_ids` (or `inputs_embeds` or `encoder_outputs`)")
    if compile_step and (not plan.use_cache or plan.output_attentions or plan.output_hidden_states):
        raise ValueError("compile_step=True needs use_cache=True and no output_attentions / output_hidden_states "
                         "(the compiled step returns logits only)")
    if streamer is not None and plan.mode == "beam":
        raise ValueError("`streamer` cannot be used with beam search (num_beams > 1), as in transformers")
    if encoder_outputs is None:
        validate_generate_inputs(model.config, plan, input_ids, attention_mask, host=host_values, **rest)
    if attention_mask is None and input_ids is not None:
        attention_mask = default_attention_mask(input_ids, plan, xp=torch)
    with torch.no_grad():
        if encoder_outputs is None:
            encoder_outputs = model.encode(input_ids, attention_mask, output_attentions=plan.output_attentions,
                                           output_hidden_states=plan.output_hidden_states, **rest)
        elif isinstance(encoder_outputs, (tuple, list)):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        enc = model.project(encoder_outputs[0])
        batch = enc.shape[0]
        expand = plan.num_beams if plan.mode == "beam" else plan.num_return_sequences
        decoder = _Decoder(model, enc, attention_mask, expand, plan, compile_step=compile_step)
        ops = TorchOps(enc.device)
        steps = _Steps(plan, ops, input_ids, expand, user_processors)
        stop = _Stop(plan, criteria)
        record = _Recorder(plan)
        if prompt is None:
            start = torch.full((batch * expand, 1), plan.decoder_start_token_id, dtype=torch.long, device=enc.device)
        else:
            start = torch.as_tensor(prompt_np, dtype=torch.long, device=enc.device)
            if start.shape[0] != batch:
                raise ValueError(f"decoder_input_ids has {start.shape[0]} rows for a batch of {batch}")
            start = start.repeat_interleave(expand, dim=0)
        if streamer is not None:
            streamer.put(start.cpu())
        if plan.mode == "beam":
            fields = _beam_search(plan, decoder, batch, start, steps, stop, record, ops)
        else:
            fields = _sample(plan, decoder, start, steps, stop, record, ops, generator, streamer)
        if streamer is not None:
            streamer.end()
        if not plan.return_dict_in_generate:
            return fields["sequences"]
        fields.update(record.fields())
        if plan.output_attentions:
            fields["encoder_attentions"] = encoder_outputs.attentions
        if plan.output_hidden_states:
            fields["encoder_hidden_states"] = encoder_outputs.hidden_states
        return GenerateOutput(**fields)


def _sample(plan: DecodePlan, decoder: _Decoder, seqs: torch.Tensor, steps: _Steps, stop: _Stop, record: _Recorder,
            ops: TorchOps, generator: Optional[torch.Generator], streamer) -> dict:
    """Greedy (argmax) or sampled decoding; finished rows continue with the pad id."""
    unfinished = torch.ones(seqs.shape[0], dtype=torch.bool, device=seqs.device)
    while True:
        logits = decoder.step(seqs)
        scores = steps(seqs, logits)
        record.add(decoder, logits, scores)
        if plan.do_sample:
            probs = F.softmax(scores, dim=-1)
            next_tokens = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        else:
            next_tokens = torch.argmax(scores, dim=-1)
        if plan.eos_token_ids:
            next_tokens = torch.where(unfinished, next_tokens, plan.pad_token_id)
        seqs = torch.cat([seqs, next_tokens[:, None]], dim=-1)
        if streamer is not None:
            streamer.put(next_tokens.cpu())
        unfinished = unfinished & ~is_eos(plan, ops, next_tokens) & ~stop(seqs, scores)
        if not bool(unfinished.any()):
            return {"sequences": seqs}


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select beams ``index`` [batch, n] along dim 1 of ``t`` [batch, beams, ...]."""
    while index.dim() < t.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(t, index, dim=1)


def _beam_search(plan: DecodePlan, decoder: _Decoder, batch: int, start: torch.Tensor, steps: _Steps, stop: _Stop,
                 record: _Recorder, ops: TorchOps) -> dict:
    """Beam search with transformers 4.57's bookkeeping: 2*K candidates per step, finished
    hypotheses scored ``sum log p / generated_len ** length_penalty``, its early-stop heuristic.
    Exact ties go to the lower index: among candidates, lower (beam, token); among finished
    hypotheses, the one kept earlier (see docs/generation.md)."""
    K, max_len, lp, early = plan.num_beams, plan.max_length, plan.length_penalty, plan.early_stopping
    device = start.device
    prompt = cur = start.shape[1]
    n_eos = len(plan.eos_token_ids)
    keep = max(2, 1 + n_eos) * K
    first_k = torch.arange(keep, device=device) < K
    fill = beam_fill_token_id(plan)

    running = torch.full((batch, K, max_len), fill, dtype=torch.long, device=device)
    running[:, :, :prompt] = start.view(batch, K, prompt)
    finished_seqs = running.clone()
    running_scores = torch.zeros(batch, K, device=device)
    running_scores[:, 1:] = _BLOCKED
    finished_scores = torch.full((batch, K), _BLOCKED, device=device)
    is_finished = torch.zeros(batch, K, dtype=torch.bool, device=device)
    can_improve = torch.ones(batch, 1, dtype=torch.bool, device=device)
    running_origin = torch.full((batch, K, max_len - prompt), -1, dtype=torch.long, device=device)
    finished_origin = running_origin.clone()
    batch_offset = torch.arange(batch, device=device)[:, None] * K

    while True:
        flat = running[:, :, :cur].reshape(batch * K, cur)
        logits = decoder.step(flat)
        log_probs = steps(flat, F.log_softmax(logits, dim=-1))
        record.add(decoder, logits, log_probs)
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.view(batch, K, vocab) + running_scores[:, :, None]).view(batch, K * vocab)

        # the best `keep` continuations over all beams
        top_scores, top_index = ops.top_k(log_probs, keep)
        source_beam = top_index // vocab
        cand = _gather(running, source_beam)
        cand[:, :, cur] = top_index % vocab
        cand_origin = _gather(running_origin, source_beam)
        cand_origin[:, :, cur - prompt] = source_beam + batch_offset
        stopped = stop(cand[:, :, : cur + 1].reshape(batch * keep, cur + 1), log_probs).view(batch, keep)
        done = stopped | is_eos(plan, ops, cand[:, :, cur])

        # running beams: the best K candidates that did not stop
        alive_scores = top_scores + done.float() * _BLOCKED
        best = ops.top_k(alive_scores, K)[1]
        running, running_scores, running_origin = _gather(cand, best), _gather(alive_scores, best), _gather(cand_origin, best)

        # finished hypotheses: merge those that just stopped (among the top K) with the kept ones
        just_done = done & first_k[None, :]
        normed = top_scores / float((cur + 1 - prompt) ** lp)
        full = is_finished.all(dim=-1, keepdim=True) & (early is True)
        normed = normed + full.float() * _BLOCKED + (~can_improve).float() * _BLOCKED + (~just_done).float() * _BLOCKED
        # kept hypotheses first: an exact tie goes to the one kept earlier (placeholder rows included)
        merged_scores = torch.cat([finished_scores, normed], dim=1)
        pick = ops.top_k(merged_scores, K)[1]
        finished_seqs = _gather(torch.cat([finished_seqs, cand], dim=1), pick)
        finished_scores = _gather(merged_scores, pick)
        finished_origin = _gather(torch.cat([finished_origin, cand_origin], dim=1), pick)
        is_finished = _gather(torch.cat([is_finished, just_done], dim=1), pick)

        decoder.reorder(running_origin[:, :, cur - prompt].reshape(-1))
        cur += 1

        # can a running beam still beat the worst finished one?
        best_len = (max_len - prompt) if (early == "never" and lp > 0.0) else (cur - prompt)
        best_possible = running_scores[:, :1] / float(best_len ** lp)
        worst = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], _BLOCKED)
        can_improve = can_improve & (best_possible > worst).any(dim=-1, keepdim=True)
        go_on = can_improve.any() & ~done.all()
        if early is True:
            go_on = go_on & ~is_finished.all()
        if not bool(go_on):  # the step's one host sync
            break

    n = plan.num_return_sequences
    sequences = finished_seqs[:, :n].reshape(batch * n, max_len)
    scores = finished_scores[:, :n].reshape(batch * n)
    origin = finished_origin[:, :n].reshape(batch * n, -1)
    generated = int((origin >= 0).sum(dim=1).max())
    # transformers 4.57: beam_indices always, sequences_scores only with output_scores
    out = {"sequences": sequences[:, : prompt + generated], "beam_indices": origin[:, :generated]}
    if plan.output_scores:
        out["sequences_scores"] = scores
    return out
