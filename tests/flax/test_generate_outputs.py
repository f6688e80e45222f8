"""Flax ``generate``'s transformers surface against transformers 4.57's PyTorch ``generate``
on the same weights: ``return_dict_in_generate`` fields (scores, raw logits, attentions,
hidden states, beam indices) for beam search with a decoder prompt, uncached greedy
decoding, sampling; ``encoder_outputs``, traceable user processors and stopping criteria,
``max_time``; ``generate`` inside ``jax.jit``.  Each test compiles one program."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from encdec.generation_logits import transition_scores
from encdec_flax.generation import OPS
from tests.flax.conftest import hf_pt_model
from tests.flax.test_modeling import build, inputs

TOL = 1e-4  # per-step scores/logits through a whole decode (the brief's bound; measured ~1e-5)
FIELDS = ("scores", "logits", "sequences_scores", "beam_indices", "encoder_attentions", "encoder_hidden_states",
          "decoder_attentions", "cross_attentions", "decoder_hidden_states")
ALL_OUTPUTS = dict(return_dict_in_generate=True, output_scores=True, output_logits=True, output_attentions=True,
                   output_hidden_states=True)


def _max_diff(ours, ref, name):
    """Max |Δ| over nested tuples, asserting the same nesting and shapes."""
    if isinstance(ref, (tuple, list)):
        assert isinstance(ours, (tuple, list)) and len(ours) == len(ref), (name, len(ours), len(ref))
        return max([_max_diff(a, b, name) for a, b in zip(ours, ref)] + [0.0])
    ours, ref = np.asarray(ours), ref.numpy()
    assert ours.shape == ref.shape, (name, ours.shape, ref.shape)
    finite = np.isfinite(ref)
    assert np.array_equal(finite, np.isfinite(ours)), name  # -inf where transformers has -inf
    with np.errstate(invalid="ignore"):  # -inf - -inf where both are -inf
        return float(np.abs(np.where(finite, ours - ref, 0.0)).max(initial=0.0))


def _torch_kwargs(kw):
    return {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}


def _compare(pair, settings, model_kwargs=None):
    """Our generate and transformers' on the same weights and inputs; ids must be equal;
    returns both outputs, the transformers model and max |Δ| per field transformers returned."""
    cfg, weights, model = build(pair, std=0.3)
    ids, mask, _ = inputs(pair, batch=3)
    mask[2, 3:] = 0
    kw = dict(max_length=8, pad_token_id=cfg.pad_token_id, decoder_start_token_id=cfg.decoder_start_token_id)
    kw.update(settings)
    ours = model.generate(ids, mask, pad_to_max_length=False, **kw, **(model_kwargs or {}))
    hf = hf_pt_model(cfg, weights)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask), **_torch_kwargs(kw))
    np.testing.assert_array_equal(np.asarray(ours.sequences), ref.sequences.numpy())
    diffs = {}
    for name in FIELDS:
        if getattr(ref, name, None) is not None:
            assert getattr(ours, name) is not None, name
            diffs[name] = _max_diff(getattr(ours, name), getattr(ref, name), name)
    return ours, ref, hf, diffs


def test_beam_with_prompt_returns_transformers_fields():
    """Beam search from a 3-token decoder prompt (decoded at once before the loop), every field."""
    prompt = np.array([[3, 10, 11]] * 3)
    ours, ref, hf, diffs = _compare("bert2gpt2", dict(num_beams=3, num_return_sequences=2, eos_token_id=[80, 37],
                                                      decoder_input_ids=prompt, **ALL_OUTPUTS))
    assert set(diffs) == set(FIELDS) and max(diffs.values()) < TOL, diffs
    assert ours.decoder_attentions[0][0].shape[2] == 3 and ours.decoder_attentions[1][0].shape[2] == 1  # prompt step
    assert (np.asarray(ours.beam_indices) == -1).any()  # a hypothesis ended before the longest
    # the core's compute_transition_scores on our fields equals transformers' on theirs
    trans = transition_scores(OPS, ours.scores, ours.sequences, ours.beam_indices)
    with torch.no_grad():
        ref_trans = hf.compute_transition_scores(ref.sequences, ref.scores, ref.beam_indices)
    assert np.abs(np.asarray(trans) - ref_trans.numpy()).max() < TOL


def test_uncached_greedy_roberta_start_is_pad():
    """use_cache=False is honoured: with a RoBERTa decoder whose start token is its pad id,
    positions come from the whole prefix (transformers' uncached rule), not a cache offset."""
    _, ref, _, diffs = _compare("roberta2roberta", dict(use_cache=False, decoder_start_token_id=1, eos_token_id=[30, 70],
                                                        **ALL_OUTPUTS))
    assert max(diffs.values()) < TOL, diffs
    assert ref.decoder_attentions[-1][0].shape[2] == ref.sequences.shape[1] - 1  # uncached: all queries each step


def test_sampling_scores_are_transformers_distributions():
    """Sampled ids differ across frameworks; the first step's processed (warped) scores and
    raw logits, where every row has the same prefix, equal transformers'.  Row 0 of the
    source has no padding, so a pad from the length bucket would change its pad score."""
    settings = dict(do_sample=True, temperature=0.7, top_k=0, num_return_sequences=2, max_length=5,
                    return_dict_in_generate=True, output_scores=True, output_logits=True,
                    # over the unbucketed source ids: the length bucket's pads are not source tokens
                    encoder_repetition_penalty=1.5, renormalize_logits=True)
    cfg, weights, model = build("bert2bart", std=0.3)
    ids, mask, _ = inputs("bert2bart", batch=3)
    kw = dict(pad_token_id=cfg.pad_token_id, decoder_start_token_id=cfg.decoder_start_token_id, **settings)
    ours = model.generate(ids, mask, prng_key=jax.random.PRNGKey(3), **kw)
    torch.manual_seed(0)
    with torch.no_grad():
        ref = hf_pt_model(cfg, weights).generate(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask), **kw)
    assert len(ours.scores) == len(ours.logits) == 4
    assert _max_diff(ours.scores[0], ref.scores[0], "scores") < TOL
    assert _max_diff(ours.logits[0], ref.logits[0], "logits") < TOL
    # each drawn token had a finite processed score
    drawn = np.asarray(ours.sequences)[:, 1:5]
    for t in range(4):
        assert np.isfinite(np.take_along_axis(np.asarray(ours.scores[t]), drawn[:, t:t + 1], axis=1)).all()


def test_encoder_outputs_user_processor_and_criterion():
    """``encoder_outputs`` skips the encoder; a traceable processor ``(input_ids, scores)``
    and a Flax-style criterion ``(input_ids, scores, cur_len)`` act as transformers' do."""
    cfg, weights, model = build("bert2gpt2", std=0.3)
    ids, mask, _ = inputs("bert2gpt2", batch=3)

    def ban_7(input_ids, scores):
        return scores.at[:, 7].set(-jnp.inf)

    def last_is_multiple_of_5(input_ids, scores, cur_len):
        return input_ids[:, cur_len - 1] % 5 == 0

    kw = dict(max_length=8, pad_token_id=0, decoder_start_token_id=3, eos_token_id=[23, 37])
    ours = model.generate(None, mask, encoder_outputs=model.encode(ids, mask), logits_processor=[ban_7],
                          stopping_criteria=[last_is_multiple_of_5], pad_to_max_length=False, **kw)

    class TorchBan7:
        def __call__(self, input_ids, scores):
            return scores.index_fill(1, torch.tensor([7]), -float("inf"))

    class TorchStop:
        def __call__(self, input_ids, scores, **_):
            return input_ids[:, -1] % 5 == 0

    import transformers

    with torch.no_grad():
        ref = hf_pt_model(cfg, weights).generate(
            torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
            logits_processor=transformers.LogitsProcessorList([TorchBan7()]),
            stopping_criteria=transformers.StoppingCriteriaList([TorchStop()]), **kw)
    np.testing.assert_array_equal(np.asarray(ours.sequences), ref.numpy())
    assert 7 not in np.asarray(ours.sequences)[:, 1:]


def test_generate_inside_jit_and_refusals():
    """``jax.jit(lambda p, x: model.generate(x, params=p).sequences)`` traces (issue 14.3)
    and gives transformers' ids; what needs concrete values is refused by name there."""
    cfg, weights, model = build("bert2gpt2", std=0.3)
    ids, mask, _ = inputs("bert2gpt2", batch=3)
    kw = dict(max_length=7, eos_token_id=[23, 37])
    jitted = jax.jit(lambda p, x, m: model.generate(x, m, params=p, **kw))  # GenerateOutput is a pytree
    got = np.asarray(jitted(model.params, ids, mask).sequences)
    with torch.no_grad():
        ref = hf_pt_model(cfg, weights).generate(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                                                 pad_token_id=0, decoder_start_token_id=3, **kw).numpy()
    assert got.shape == (3, 7)
    np.testing.assert_array_equal(got[:, : ref.shape[1]], ref)
    assert (got[:, ref.shape[1]:] == 0).all()
    for bad, name in ((dict(max_time=1.0), "max_time"), (dict(return_dict_in_generate=True, output_scores=True),
                                                         "per-step outputs")):
        with pytest.raises(ValueError, match=name):
            jax.jit(lambda p, x: model.generate(x, params=p, **kw, **bad).sequences)(model.params, ids)
    with pytest.raises(ValueError, match="streamer"):
        model.generate(ids, streamer=object())

    def wrong_shape(input_ids, scores):
        return scores[:, :5]

    with pytest.raises(ValueError, match="wrong_shape.*shape"):  # found while tracing: nothing compiles
        model.generate(ids, mask, logits_processor=[wrong_shape], **kw)


def test_max_time_stops_after_one_token():
    """max_time (a host clock read inside the compiled loop): ~0 seconds stops every row after
    its first token, as transformers' MaxTimeCriteria does."""
    _, _, model = build("bert2gpt2", std=0.3)
    ids, mask, _ = inputs("bert2gpt2")
    out = model.generate(ids, mask, max_new_tokens=4, max_time=1e-9, pad_to_max_length=False)
    assert out.sequences.shape == (2, 2)
