"""Forward, cache and generation against transformers 4.57's EncoderDecoderModel (fp32, 1e-5)."""
from __future__ import annotations

import pytest
import torch

from encdec.specs import encoder_decoder_spec
from tests.torch.helpers import EOS, PAIRS, build_pair, inputs, max_diff

TOL = 1e-5
COMPARED = ("logits", "decoder_hidden_states", "decoder_attentions", "cross_attentions",
            "encoder_last_hidden_state", "encoder_hidden_states", "encoder_attentions")


@pytest.mark.parametrize("pair", list(PAIRS))
def test_forward_matches_transformers(pair):
    config, _, ours, hf = build_pair(pair, attn="eager")
    x = inputs(config)
    with torch.no_grad():
        a = ours(**x, output_hidden_states=True, output_attentions=True)
        b = hf(**x, output_hidden_states=True, output_attentions=True)
    for key in COMPARED:
        assert a[key] is not None, key
        assert max_diff(a[key], b[key]) <= TOL, key


@pytest.mark.parametrize("pair", list(PAIRS))
def test_sdpa_logits_and_loss_match_transformers(pair):
    config, _, ours, hf = build_pair(pair)
    x = inputs(config)
    labels = x["decoder_input_ids"].clone()
    labels[x["decoder_attention_mask"] == 0] = -100
    with torch.no_grad():
        a = ours(input_ids=x["input_ids"], attention_mask=x["attention_mask"], labels=labels)
        b = hf(input_ids=x["input_ids"], attention_mask=x["attention_mask"], labels=labels)
    assert max_diff(a.logits, b.logits) <= TOL
    assert abs(float(a.loss) - float(b.loss)) <= TOL


@pytest.mark.parametrize("pair", list(PAIRS))
def test_state_dict_names_are_the_spec(pair):
    config, weights, ours, hf = build_pair(pair)
    assert set(ours.state_dict()) == set(encoder_decoder_spec(config).params) == set(hf.state_dict())
    state = ours.canonical_state()
    assert set(state) == set(weights)
    assert all((state[k] == weights[k]).all() for k in weights)


@pytest.mark.parametrize("pair", list(PAIRS))
def test_cached_decoding_equals_full_pass(pair):
    config, _, ours, _ = build_pair(pair)
    x = inputs(config)
    del x["decoder_attention_mask"]
    with torch.no_grad():
        full = ours(**x, use_cache=False)
        assert full.past_key_values is None
        enc = (full.encoder_last_hidden_state,)
        steps, past = [], None
        for t in range(x["decoder_input_ids"].shape[1]):
            out = ours(encoder_outputs=enc, attention_mask=x["attention_mask"],
                       decoder_input_ids=x["decoder_input_ids"][:, t:t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits)
    assert past[0][0].shape[2] == x["decoder_input_ids"].shape[1]
    assert max_diff(torch.cat(steps, dim=1), full.logits) <= TOL


GENERATE = {
    "greedy": dict(max_new_tokens=10),
    "beam3-nrs2": dict(num_beams=3, num_return_sequences=2, max_new_tokens=10),
    "beam3-lp-ngram": dict(num_beams=3, length_penalty=0.5, no_repeat_ngram_size=2, max_new_tokens=10),
}
#: eos ids that random tiny models hit often, so rows finish at different steps
MANY_EOS = list(range(EOS, 40))
GENERATE_EXTRA = {
    "greedy-eos-min": dict(eos_token_id=MANY_EOS, min_new_tokens=2, max_new_tokens=10),
    "greedy-repetition": dict(repetition_penalty=1.8, max_length=9),
    "beam4-early": dict(num_beams=4, early_stopping=True, eos_token_id=MANY_EOS, max_new_tokens=10),
    "beam3-never-lp2": dict(num_beams=3, early_stopping="never", length_penalty=2.0, eos_token_id=MANY_EOS, max_new_tokens=10),
    "beam3-eos-nrs3": dict(num_beams=3, num_return_sequences=3, eos_token_id=MANY_EOS, length_penalty=0.0, max_new_tokens=8),
    "beam2-min-length": dict(num_beams=2, eos_token_id=MANY_EOS, min_length=5, max_new_tokens=8),
}
CASES = [(p, v) for p in PAIRS for v in GENERATE] + [("bert2gpt2", v) for v in GENERATE_EXTRA] + [
    ("roberta2roberta", "beam4-early"), ("bert2bart", "greedy-eos-min")]


@pytest.mark.parametrize("pair,variant", CASES)
def test_generate_ids_equal_transformers(pair, variant):
    config, _, ours, hf = build_pair(pair)
    x = inputs(config)
    settings = {**GENERATE, **GENERATE_EXTRA}[variant]
    a = ours.generate(x["input_ids"], attention_mask=x["attention_mask"], **settings)
    with torch.no_grad():
        b = hf.generate(x["input_ids"], attention_mask=x["attention_mask"], **settings)
    assert a.dtype == torch.long
    assert a.shape == b.shape and torch.equal(a, b), (a, b)


def test_beam_sequences_scores_match_transformers():
    config, _, ours, hf = build_pair("bert2gpt2")
    x = inputs(config)
    settings = dict(num_beams=3, num_return_sequences=2, eos_token_id=MANY_EOS, max_new_tokens=8)
    a = ours.generate(x["input_ids"], attention_mask=x["attention_mask"], return_dict_in_generate=True,
                      output_scores=True, **settings)
    with torch.no_grad():
        b = hf.generate(x["input_ids"], attention_mask=x["attention_mask"], return_dict_in_generate=True,
                        output_scores=True, **settings)
    assert torch.equal(a.sequences, b.sequences)
    assert max_diff(a.sequences_scores, b.sequences_scores) <= TOL
    assert torch.equal(a.beam_indices, b.beam_indices)
    assert len(a.scores) == len(b.scores)
    assert max(max_diff(s, t) for s, t in zip(a.scores, b.scores)) <= 1e-4


def test_sampling_follows_the_seed_and_top_k_1_is_greedy():
    config, _, ours, hf = build_pair("bert2gpt2")
    x = inputs(config)
    sample = dict(do_sample=True, top_k=20, top_p=0.9, temperature=0.7, max_new_tokens=10, num_return_sequences=2)
    first = ours.generate(x["input_ids"], generator=torch.Generator().manual_seed(5), **sample)
    again = ours.generate(x["input_ids"], generator=torch.Generator().manual_seed(5), **sample)
    other = ours.generate(x["input_ids"], generator=torch.Generator().manual_seed(6), **sample)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape[0] == 2 * x["input_ids"].shape[0]
    greedy = ours.generate(x["input_ids"], max_new_tokens=10)
    top1 = ours.generate(x["input_ids"], do_sample=True, top_k=1, max_new_tokens=10)
    assert torch.equal(greedy, top1)
    torch.manual_seed(11)
    a = ours.generate(x["input_ids"], **sample)
    torch.manual_seed(11)
    with torch.no_grad():
        b = hf.generate(x["input_ids"], **sample)
    assert torch.equal(a, b)


def test_generate_infers_the_encoder_mask_from_padding_like_transformers():
    config, _, ours, hf = build_pair("bert2bert")
    x = inputs(config)
    a = ours.generate(x["input_ids"], max_new_tokens=6)
    b = hf.generate(x["input_ids"], max_new_tokens=6)
    assert torch.equal(a, b)
    explicit = ours.generate(x["input_ids"], attention_mask=x["attention_mask"], max_new_tokens=6, return_dict_in_generate=True)
    assert torch.equal(a, explicit.sequences)


def test_special_ids_set_on_the_config_after_construction():
    """A start id set on ``model.config`` after construction is used when the generation
    config lacks one (core rule; transformers 4.57 would fall back to the decoder's bos id),
    while ids the generation config already holds stay (as in transformers)."""
    config, _, ours, hf = build_pair("bert2gpt2", decoder_start_token_id=None)
    x = inputs(config)
    ours.config.decoder_start_token_id = 7
    ours.config.eos_token_id = 11
    a = ours.generate(x["input_ids"], attention_mask=x["attention_mask"], max_new_tokens=5)
    hf.config.eos_token_id = 11
    with torch.no_grad():
        b = hf.generate(x["input_ids"], attention_mask=x["attention_mask"], max_new_tokens=5, decoder_start_token_id=7)
    assert a[:, 0].eq(7).all() and torch.equal(a, b)


def test_beam_fields_without_scores_match_transformers():
    """transformers 4.57 returns beam_indices for every beam search with return_dict_in_generate,
    sequences_scores only with output_scores."""
    config, _, ours, hf = build_pair("bert2gpt2")
    x = inputs(config)
    settings = dict(num_beams=2, max_new_tokens=4, return_dict_in_generate=True)
    a = ours.generate(x["input_ids"], attention_mask=x["attention_mask"], **settings)
    with torch.no_grad():
        b = hf.generate(x["input_ids"], attention_mask=x["attention_mask"], **settings)
    assert a.sequences_scores is None and b.sequences_scores is None
    assert torch.equal(a.beam_indices, b.beam_indices)
