"""Compiled generation against transformers 4.57's PyTorch generate on the same weights:
greedy and beam ids token for token (and beam scores), processors, sampling."""
import jax
import numpy as np
import pytest
import torch

from tests.flax.test_modeling import build, inputs, maxdiff
from tests.flax.conftest import hf_pt_model

MAX_LENGTH = 9
#: weights with std 0.3 make outputs depend on the source (std 0.02 ones repeat one token);
#: the eos ids are tokens these models emit mid-sequence, so rows finish at different steps.
STD = 0.3
EOS = {"bert2gpt2": [23, 37], "roberta2roberta": [30, 70], "bert2bart": [37, 6], "electra2gpt2": [23, 37]}


def run_both(pair, **settings):
    cfg, weights, model = build(pair, std=STD)
    ids, mask, _ = inputs(pair, batch=3)
    mask[2, 3:] = 0
    kw = dict(max_length=MAX_LENGTH, pad_token_id=cfg.pad_token_id, decoder_start_token_id=cfg.decoder_start_token_id, **settings)
    ours = model.generate(ids, mask, pad_to_max_length=False, **kw)  # transformers PyTorch's trimmed shape
    # default: transformers' Flax shape, max_length columns padded with the pad id (same compiled program)
    padded = np.asarray(model.generate(ids, mask, **kw).sequences)
    trimmed = np.asarray(ours.sequences)
    assert padded.shape == (trimmed.shape[0], MAX_LENGTH)
    assert np.array_equal(padded[:, : trimmed.shape[1]], trimmed) and (padded[:, trimmed.shape[1]:] == cfg.pad_token_id).all()
    with torch.no_grad():
        ref = hf_pt_model(cfg, weights).generate(
            torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
            output_scores=True, return_dict_in_generate=True, **kw,
        )
    return model, ours, ref


@pytest.mark.parametrize("pair", ["bert2gpt2", "roberta2roberta", "bert2bart"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_greedy_and_beam_equal_transformers(pair, num_beams):
    _, ours, ref = run_both(pair, num_beams=num_beams, eos_token_id=EOS[pair], no_repeat_ngram_size=1)
    np.testing.assert_array_equal(np.asarray(ours.sequences), ref.sequences.numpy())
    assert np.isin(ref.sequences.numpy()[:, 1:], EOS[pair]).any()  # rows hit eos: the stopping logic ran
    if num_beams > 1:
        assert maxdiff(ours.sequences_scores, ref.sequences_scores) < 1e-5


def test_beam_options_and_processors_equal_transformers():
    _, ours, ref = run_both(
        "bert2gpt2", num_beams=3, num_return_sequences=2, length_penalty=0.7, early_stopping=True,
        eos_token_id=EOS["bert2gpt2"], repetition_penalty=1.2, no_repeat_ngram_size=2, min_new_tokens=3, forced_eos_token_id=5,
    )
    np.testing.assert_array_equal(np.asarray(ours.sequences), ref.sequences.numpy())
    assert maxdiff(ours.sequences_scores, ref.sequences_scores) < 1e-5


def test_greedy_processors_equal_transformers():
    _, ours, ref = run_both("electra2gpt2", eos_token_id=EOS["electra2gpt2"], repetition_penalty=1.3, no_repeat_ngram_size=2,
                            min_length=5, forced_bos_token_id=9, forced_eos_token_id=[5, 6])
    assert ref.sequences[:, 1].eq(9).all() and ref.sequences.shape[1] == MAX_LENGTH
    np.testing.assert_array_equal(np.asarray(ours.sequences), ref.sequences.numpy())


def test_sampling_is_seeded_and_compiled_once():
    _, _, model = build("bert2gpt2")
    ids, mask, _ = inputs("bert2gpt2")
    kw = dict(do_sample=True, max_new_tokens=6, top_k=5, top_p=0.9, temperature=0.7, num_return_sequences=2)
    a = model.generate(ids, mask, prng_key=jax.random.PRNGKey(1), **kw).sequences
    b = model.generate(ids, mask, prng_key=jax.random.PRNGKey(1), **kw).sequences
    c = model.generate(ids, mask, prng_key=jax.random.PRNGKey(2), **kw).sequences
    assert a.shape == (4, 7) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(model._generate_programs) == 1
    # top_k=1 sampling is greedy decoding
    greedy = model.generate(ids, mask, max_new_tokens=6).sequences
    assert np.array_equal(model.generate(ids, mask, do_sample=True, top_k=1, max_new_tokens=6).sequences, greedy)


def test_generate_rejects_unknown_arguments():
    _, _, model = build("bert2gpt2")
    ids, mask, _ = inputs("bert2gpt2")
    with pytest.raises(TypeError, match="foo"):
        model.generate(ids, mask, foo=1)
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate(ids, mask, num_return_sequences=2)
