"""Decode loops for :class:`~encdec_torch.EncoderDecoderModel`: greedy, sampling and beam search.

Every loop starts from the core's :class:`~encdec.generation.DecodePlan`.  The encoder runs
once; the decoder runs one token per step on its KV cache (cross-attention keys/values are
computed on the first step and kept).  Token choices follow transformers 4.57's
``generate`` for encoder-decoder models step for step, so greedy and beam ids agree.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from encdec.generation import DecodePlan, GenerationConfig, check_model_inputs, default_attention_mask, resolve_generation

#: encoder inputs ``generate`` passes on besides ``input_ids`` / ``attention_mask``.
ENCODER_INPUTS = ("inputs_embeds", "token_type_ids", "position_ids")
from encdec.outputs import GenerateOutput
from encdec.validation import validate_generate_inputs
from encdec_torch.models.common import host_values

#: score given to continuations a beam must not take (transformers' constant).
_BLOCKED = -1.0e9


# --- logits processors (transformers' order: penalties, n-grams, min length, then warpers) --
def _repetition_penalty(seqs: torch.Tensor, scores: torch.Tensor, penalty: float) -> torch.Tensor:
    seen = torch.gather(scores, 1, seqs)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(1, seqs, seen)


def _no_repeat_ngram(seqs: torch.Tensor, scores: torch.Tensor, n: int) -> torch.Tensor:
    """Ban every token that would repeat an n-gram already in the row."""
    cur_len = seqs.shape[1]
    if cur_len + 1 < n:
        return scores
    scores = scores.clone()
    for row, tokens in enumerate(seqs.tolist()):
        prefix = tuple(tokens[cur_len + 1 - n:])
        banned = [tokens[i + n - 1] for i in range(cur_len - n + 1) if tuple(tokens[i:i + n - 1]) == prefix]
        if banned:
            scores[row, banned] = -float("inf")
    return scores


def _process(plan: DecodePlan, seqs: torch.Tensor, scores: torch.Tensor, eos: Optional[torch.Tensor]) -> torch.Tensor:
    if plan.repetition_penalty != 1.0:
        scores = _repetition_penalty(seqs, scores, plan.repetition_penalty)
    if plan.no_repeat_ngram_size > 0:
        scores = _no_repeat_ngram(seqs, scores, plan.no_repeat_ngram_size)
    if eos is not None and seqs.shape[1] < plan.min_length:
        scores = scores.index_fill(1, eos, -float("inf"))
    if plan.forced_bos_token_id is not None and seqs.shape[1] == 1:
        scores = _force(scores, (plan.forced_bos_token_id,))
    if plan.forced_eos_token_ids and seqs.shape[1] == plan.max_length - 1:
        scores = _force(scores, plan.forced_eos_token_ids)
    return scores


def _force(scores: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
    """Only ``ids`` stay possible (score 0, the rest -inf), as transformers' forced tokens."""
    forced = torch.full_like(scores, -float("inf"))
    forced[:, list(ids)] = 0.0
    return forced


def _warp(plan: DecodePlan, scores: torch.Tensor) -> torch.Tensor:
    """Temperature, top-k, top-p (sampling only)."""
    if plan.temperature != 1.0:
        scores = scores / plan.temperature
    if plan.top_k > 0:
        k = min(plan.top_k, scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if plan.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        drop = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= 1 - plan.top_p
        drop[..., -1:] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))
    return scores


# --- model plumbing ----------------------------------------------------------------------
class _Decoder:
    """One decoder step at a time on a growing cache.

    The cache starts with empty self-attention entries for ``batch * expand`` rows (beams /
    returned sequences, consecutive per input) and the cross-attention keys/values of the
    ``batch`` encoder rows, computed once and shared by each input's rows (see
    :func:`~encdec_torch.models.common.attend`), never copied or reordered.
    """

    def __init__(self, model, encoder_states: torch.Tensor, encoder_mask: Optional[torch.Tensor], expand: int) -> None:
        self.model, self.enc, self.mask = model, encoder_states, encoder_mask
        self.rows = encoder_states.shape[0] * expand
        cache = []
        for k, v in model.decoder.cross_kv(encoder_states):
            empty = k.new_empty(self.rows, k.shape[1], 0, k.shape[3])
            cache.append((empty, empty, k, v))
        self.cache = tuple(cache)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model.decoder(
            input_ids=tokens[:, None], encoder_hidden_states=self.enc, encoder_attention_mask=self.mask,
            past_key_values=self.cache, use_cache=True,
        )
        self.cache = out.past_key_values
        return out.logits[:, -1, :].float()

    def reorder(self, index: torch.Tensor) -> None:
        """Follow beams: self-attention entries move; shared cross entries stay."""
        self.cache = tuple((k.index_select(0, index), v.index_select(0, index), ck, cv) for k, v, ck, cv in self.cache)


def generate(model, input_ids: Optional[torch.Tensor], attention_mask: Optional[torch.Tensor],
             generation_config: Optional[GenerationConfig], **kwargs: Any):
    """Generate ``[batch * num_return_sequences, length]`` ids starting with the decoder start token.

    ``generator`` (a ``torch.Generator``) seeds sampling; ``return_dict_in_generate=True``
    returns a :class:`~encdec.outputs.GenerateOutput` (with ``sequences_scores`` for beam
    search).  Other keywords that are not generation settings go to the encoder.  Like
    transformers, this does not switch the model to eval mode.
    """
    generator = kwargs.pop("generator", None)
    return_dict = bool(kwargs.pop("return_dict_in_generate", False))
    for name in ("output_scores", "output_logits", "output_attentions", "output_hidden_states"):
        if kwargs.pop(name, False):
            raise NotImplementedError(f"generate(..., {name}=True) is not implemented")
    plan, rest = resolve_generation(model.config, generation_config, kwargs)
    decoder_kwargs = sorted(k for k in rest if k.startswith("decoder_"))
    if decoder_kwargs:
        raise TypeError(f"generate does not take decoder inputs ({', '.join(decoder_kwargs)}); it starts from the decoder start token")
    check_model_inputs(rest, ENCODER_INPUTS)
    if input_ids is None and "inputs_embeds" not in rest:
        raise ValueError("generate needs `input_ids` (or `inputs_embeds`)")
    validate_generate_inputs(model.config, plan, input_ids, attention_mask, host=host_values, **rest)
    if attention_mask is None and input_ids is not None:
        attention_mask = default_attention_mask(input_ids, plan, xp=torch)
    with torch.no_grad():
        enc = model.project(model.encode(input_ids, attention_mask, **rest).last_hidden_state)
        expand = plan.num_beams if plan.mode == "beam" else plan.num_return_sequences
        decoder = _Decoder(model, enc, attention_mask, expand)
        eos = torch.tensor(plan.eos_token_ids, device=enc.device) if plan.eos_token_ids else None
        if plan.mode == "beam":
            sequences, scores = _beam_search(plan, decoder, enc.shape[0], eos)
            return GenerateOutput(sequences=sequences, sequences_scores=scores) if return_dict else sequences
        sequences = _sample(plan, decoder, eos, generator)
        return GenerateOutput(sequences=sequences) if return_dict else sequences


def _sample(plan: DecodePlan, decoder: _Decoder, eos: Optional[torch.Tensor],
            generator: Optional[torch.Generator]) -> torch.Tensor:
    """Greedy (argmax) or sampled decoding; finished rows continue with the pad id."""
    device, batch = decoder.enc.device, decoder.rows
    seqs = torch.full((batch, 1), plan.decoder_start_token_id, dtype=torch.long, device=device)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    while True:
        scores = _process(plan, seqs, decoder.step(seqs[:, -1]), eos)
        if plan.do_sample:
            probs = F.softmax(_warp(plan, scores), dim=-1)
            next_tokens = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        else:
            next_tokens = torch.argmax(scores, dim=-1)
        if eos is not None:
            next_tokens = torch.where(unfinished, next_tokens, plan.pad_token_id)
            unfinished &= ~torch.isin(next_tokens, eos)
        seqs = torch.cat([seqs, next_tokens[:, None]], dim=-1)
        if seqs.shape[1] >= plan.max_length or not bool(unfinished.any()):
            return seqs


def _gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select beams ``index`` [batch, n] along dim 1 of ``t`` [batch, beams, ...]."""
    while index.dim() < t.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(t, index, dim=1)


def _beam_search(plan: DecodePlan, decoder: _Decoder, batch: int, eos: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search with transformers 4.57's bookkeeping: 2*K candidates per step, finished
    hypotheses scored ``sum log p / generated_len ** length_penalty``, its early-stop heuristic."""
    K, max_len, lp, early = plan.num_beams, plan.max_length, plan.length_penalty, plan.early_stopping
    device = decoder.enc.device
    prompt = cur = 1
    keep = max(2, 1 + (0 if eos is None else eos.numel())) * K
    first_k = torch.arange(keep, device=device) < K
    # transformers fills unused positions with `pad or eos[0]` (a pad id of 0 counts as unset)
    fill = (plan.pad_token_id or plan.eos_token_ids[0]) if plan.eos_token_ids else -1

    running = torch.full((batch, K, max_len), fill, dtype=torch.long, device=device)
    running[:, :, 0] = plan.decoder_start_token_id
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
        log_probs = _process(plan, flat, F.log_softmax(decoder.step(flat[:, -1]), dim=-1), eos)
        vocab = log_probs.shape[-1]
        log_probs = (log_probs.view(batch, K, vocab) + running_scores[:, :, None]).view(batch, K * vocab)

        # the best `keep` continuations over all beams
        top_scores, top_index = torch.topk(log_probs, keep)
        source_beam = top_index // vocab
        cand = _gather(running, source_beam)
        cand[:, :, cur] = top_index % vocab
        cand_origin = _gather(running_origin, source_beam)
        cand_origin[:, :, cur - prompt] = source_beam + batch_offset
        hits = cur + 1 >= max_len
        done = torch.full((batch, keep), hits, dtype=torch.bool, device=device)
        if eos is not None:
            done = done | torch.isin(cand[:, :, cur], eos)

        # running beams: the best K candidates that did not stop
        alive_scores = top_scores + done.float() * _BLOCKED
        best = torch.topk(alive_scores, K)[1]
        running, running_scores, running_origin = _gather(cand, best), _gather(alive_scores, best), _gather(cand_origin, best)

        # finished hypotheses: merge those that just stopped (among the top K) with the kept ones
        just_done = done & first_k[None, :]
        normed = top_scores / float((cur + 1 - prompt) ** lp)
        full = is_finished.all(dim=-1, keepdim=True) & (early is True)
        normed = normed + full.float() * _BLOCKED + (~can_improve).float() * _BLOCKED + (~just_done).float() * _BLOCKED
        merged_scores = torch.cat([finished_scores, normed], dim=1)
        pick = torch.topk(merged_scores, K)[1]
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
        open_beams = not (bool(is_finished.all()) and early is True)
        if not (bool(can_improve.any()) and open_beams and not bool(done.all())):
            break

    n = plan.num_return_sequences
    sequences = finished_seqs[:, :n].reshape(batch * n, max_len)
    scores = finished_scores[:, :n].reshape(batch * n)
    generated = int((finished_origin[:, :n].reshape(batch * n, -1) >= 0).sum(dim=1).max())
    return sequences[:, : prompt + generated], scores
