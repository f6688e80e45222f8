"""generate() against transformers 4.57 (PyTorch) token for token, and XLA against eager."""
import numpy as np
import pytest
import tensorflow as tf
import torch

from encdec_tf.generation import _COMPILED

from .helpers import PAIRS, inputs, make_pair, pair_id


def _setup(pair):
    ours, hf, _ = make_pair(pair)
    if pair[1] == "bart":  # BART configs force eos (2) at the last position: both sides take it from the decoder
        assert ours.generation_config.forced_eos_token_id == 2 or ours.config.decoder.forced_eos_token_id == 2
    feed, _ = inputs(ours.config.pad_token_id)
    ids, mask = feed["input_ids"], feed["attention_mask"]
    probe = ours.generate(ids, attention_mask=mask, max_length=12, eos_token_id=None, jit_compile=False).numpy()
    values, counts = np.unique(probe[:, 1:], return_counts=True)
    eos = int(values[np.argmax(counts)])  # a token the model emits, so that rows finish early
    return ours, hf, ids, mask, eos


def _check(ours, hf, ids, mask, **kw):
    got = ours.generate(ids, attention_mask=mask, jit_compile=False, **kw).numpy()
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **kw).numpy()
    assert got.dtype == np.int32
    assert got.shape == ref.shape, kw
    np.testing.assert_array_equal(got, ref, err_msg=str(kw))
    return got


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_greedy_and_beam_equal_transformers(pair):
    ours, hf, ids, mask, eos = _setup(pair)
    pad = ours.config.pad_token_id
    greedy = _check(ours, hf, ids, mask, max_length=12, eos_token_id=eos, pad_token_id=pad)
    assert (greedy[:, 0] == ours.config.decoder_start_token_id).all()
    _check(ours, hf, ids, mask, max_length=12, num_beams=3, eos_token_id=eos, pad_token_id=pad)


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=9, repetition_penalty=1.5, no_repeat_ngram_size=2, min_length=5),
    dict(max_length=11, num_beams=3, num_return_sequences=2, length_penalty=0.7),
    dict(max_length=10, num_beams=2, early_stopping=True, min_new_tokens=3),
    dict(max_length=10, num_beams=4, early_stopping="never", num_return_sequences=4, no_repeat_ngram_size=1),
    dict(max_length=10, num_beams=2, repetition_penalty=0.8, length_penalty=1.3),
], ids=["penalties", "nrs-lp", "early", "never-ngram1", "beam-penalties"])
def test_generation_options_equal_transformers(kw):
    ours, hf, ids, mask, eos = _setup(PAIRS[1])
    _check(ours, hf, ids, mask, eos_token_id=eos, pad_token_id=0, **kw)
    _check(ours, hf, ids, mask, eos_token_id=[eos, 5, 9], pad_token_id=0, **kw)


def test_xla_generate_equals_eager_and_is_cached():
    ours, _, _ = make_pair(PAIRS[1], hf=False)
    feed, _ = inputs(0)
    ids, mask = feed["input_ids"], feed["attention_mask"]
    for kw in (dict(max_length=9, eos_token_id=83), dict(max_length=9, num_beams=3, eos_token_id=83, num_return_sequences=2)):
        eager = ours.generate(ids, attention_mask=mask, jit_compile=False, **kw).numpy()
        xla = ours.generate(ids, attention_mask=mask, **kw).numpy()
        np.testing.assert_array_equal(xla, eager)
        np.testing.assert_array_equal(ours.generate(ids, attention_mask=mask, **kw).numpy(), eager)
    fns = list(_COMPILED[ours].values())
    assert len(fns) == 2 and all(f.experimental_get_tracing_count() == 1 for f in fns)
    # users may also compile generate themselves: static max_length columns, pad-filled
    outer = tf.function(lambda i, m: ours.generate(i, attention_mask=m, max_length=9, eos_token_id=83), jit_compile=True)
    padded = outer(tf.constant(ids, tf.int32), tf.constant(mask, tf.int32)).numpy()
    short = ours.generate(ids, attention_mask=mask, max_length=9, eos_token_id=83).numpy()
    assert padded.shape == (ids.shape[0], 9)
    np.testing.assert_array_equal(padded[:, : short.shape[1]], short)
    assert (padded[:, short.shape[1]:] == 0).all()


def test_max_length_beyond_positions_is_refused():
    ours, _, _ = make_pair(PAIRS[1], hf=False)
    with pytest.raises(ValueError, match="max_length=65 .* exceeds the 64 positions"):
        ours.generate(np.ones((1, 3), np.int32), max_length=65)


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    ours, _, _ = make_pair(PAIRS[1], hf=False)
    feed, _ = inputs(0)
    ids, mask = feed["input_ids"], feed["attention_mask"]
    kw = dict(do_sample=True, max_length=10, top_k=20, top_p=0.9, temperature=1.7, num_return_sequences=2, jit_compile=False)
    a = ours.generate(ids, attention_mask=mask, seed=3, **kw).numpy()
    b = ours.generate(ids, attention_mask=mask, seed=3, **kw).numpy()
    c = ours.generate(ids, attention_mask=mask, seed=4, **kw).numpy()
    assert a.shape[0] == 2 * ids.shape[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    greedy = ours.generate(ids, attention_mask=mask, max_length=10, jit_compile=False).numpy()
    top1 = ours.generate(ids, attention_mask=mask, max_length=10, do_sample=True, top_k=1, seed=0, jit_compile=False).numpy()
    np.testing.assert_array_equal(top1, greedy)


def test_forced_bos_and_eos_equal_transformers():
    ours, hf, ids, mask, eos = _setup(PAIRS[1])
    for kw in (dict(max_length=8), dict(max_length=8, num_beams=3)):
        got = _check(ours, hf, ids, mask, forced_bos_token_id=11, forced_eos_token_id=[eos, 13], eos_token_id=eos,
                     pad_token_id=0, **kw)
        assert (got[:, 1] == 11).all()


def test_generate_rejects_unknown_arguments():
    ours, _, _ = make_pair(PAIRS[1], hf=False)
    with pytest.raises(TypeError, match="bogus"):
        ours.generate(np.ones((1, 3), np.int32), bogus=1)
