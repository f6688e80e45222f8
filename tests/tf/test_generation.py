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


# --- transformers' generate surface: outputs, prompts, no cache, encoder_outputs, hooks ------------
from encdec.generation_logits import transition_scores  # noqa: E402
from encdec_tf.generation import OPS  # noqa: E402

ALL_OUTPUTS = dict(return_dict_in_generate=True, output_scores=True, output_logits=True, output_attentions=True,
                   output_hidden_states=True)


@pytest.fixture(scope="module")
def bert2gpt2():
    ours, hf, _ = make_pair(PAIRS[1])
    feed, _ = inputs(0)
    return ours, hf, feed["input_ids"], feed["attention_mask"]


def _same_fields(a, b):
    """Every field transformers returns, with its shapes; ids exact, floats to 1e-4 (-inf where it has -inf)."""
    assert set(a.keys()) == {k for k in b.keys() if k != "past_key_values"}
    for name in a.keys():
        got, ref = tf.nest.flatten(a[name]), [t.numpy() for t in torch.utils._pytree.tree_leaves(b[name])]
        assert len(got) == len(ref), name
        for x, y in zip(got, ref):
            x = np.asarray(x)
            assert x.shape == y.shape, (name, x.shape, y.shape)
            if name in ("sequences", "beam_indices"):
                np.testing.assert_array_equal(x, y, err_msg=name)
            else:
                assert (np.isinf(x) == np.isinf(y)).all(), name
                np.testing.assert_allclose(np.where(np.isinf(y), 0, x), np.where(np.isinf(y), 0, y), atol=1e-4, err_msg=name)


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=4, use_cache=False, decoder_input_ids=[[2, 9], [2, 4], [2, 5]], repetition_penalty=1.2),
    dict(max_new_tokens=4, num_beams=3, num_return_sequences=2, eos_token_id=7, decoder_input_ids=[[9], [4], [5]]),
    dict(max_new_tokens=4, num_beams=2, use_cache=False, length_penalty=0.8),
], ids=["greedy-nocache-prompt", "beam-prompt", "beam-nocache"])
def test_return_dict_fields_equal_transformers(bert2gpt2, kw):
    ours, hf, ids, mask = bert2gpt2
    kw = dict(kw, **ALL_OUTPUTS)
    a = ours.generate(ids, attention_mask=mask, jit_compile=False, **kw)
    with torch.no_grad():
        tkw = {k: torch.tensor(v) if k == "decoder_input_ids" else v for k, v in kw.items()}
        b = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **tkw)
    _same_fields(a, b)
    mine = transition_scores(OPS, list(a.scores), a.sequences, a.get("beam_indices"))
    with torch.no_grad():
        ref = hf.compute_transition_scores(b.sequences, b.scores, b.get("beam_indices")).numpy()
    np.testing.assert_allclose(np.where(np.isinf(ref), 0, mine.numpy()), np.where(np.isinf(ref), 0, ref), atol=1e-4)


def test_xla_return_dict_equals_eager(bert2gpt2):
    ours, _, ids, mask = bert2gpt2
    kw = dict(max_new_tokens=4, num_beams=2, eos_token_id=7, **ALL_OUTPUTS)
    eager = ours.generate(ids, attention_mask=mask, jit_compile=False, **kw)
    xla = ours.generate(ids, attention_mask=mask, **kw)
    assert sorted(xla.keys()) == sorted(eager.keys())
    for name in eager.keys():
        for x, y in zip(tf.nest.flatten(xla[name]), tf.nest.flatten(eager[name]), strict=True):
            assert x.shape == y.shape, name
            np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-5, err_msg=name)


def test_sampling_scores_are_transformers_processed_distribution(bert2gpt2):
    ours, hf, ids, mask = bert2gpt2
    kw = dict(do_sample=True, max_new_tokens=2, top_k=5, top_p=0.8, temperature=0.7, return_dict_in_generate=True,
              output_scores=True, output_logits=True)
    a = ours.generate(ids, attention_mask=mask, jit_compile=False, seed=1, **kw)
    with torch.no_grad():
        b = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), **kw)
    # the first step sees the same prefix on both sides: same raw logits and processed distribution
    np.testing.assert_allclose(a.logits[0].numpy(), b.logits[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(tf.nn.softmax(a.scores[0]).numpy(), torch.softmax(b.scores[0], -1).numpy(), atol=1e-5)


def test_roberta_start_equal_to_pad_without_cache_equals_transformers():
    ours, hf, _ = make_pair(PAIRS[2])  # RoBERTa's pad id is 1: start with it, positions come from the mask's cumsum
    feed, _ = inputs(1)
    _check(ours, hf, feed["input_ids"], feed["attention_mask"], max_new_tokens=6, use_cache=False, decoder_start_token_id=1)


def test_encoder_outputs_processors_criteria_and_max_time(bert2gpt2):
    ours, _, ids, mask = bert2gpt2
    base = ours.generate(ids, attention_mask=mask, max_new_tokens=5, jit_compile=False).numpy()
    enc = ours.encoder(input_ids=tf.constant(ids, tf.int32), attention_mask=tf.constant(mask, tf.int32))
    from_enc = ours.generate(None, attention_mask=mask, encoder_outputs=enc, max_new_tokens=5, jit_compile=False)
    np.testing.assert_array_equal(from_enc.numpy(), base)

    banned = int(base[0, 1])

    def ban(input_ids, scores):  # a traceable processor: same as suppress_tokens=[banned]
        return tf.where(tf.range(scores.shape[-1])[None, :] == banned, float("-inf"), scores)

    ref = ours.generate(ids, attention_mask=mask, max_new_tokens=5, suppress_tokens=[banned], jit_compile=False).numpy()
    assert (ref != base).any()
    for jit in (False, True):
        got = ours.generate(ids, attention_mask=mask, max_new_tokens=5, logits_processor=[ban], jit_compile=jit).numpy()
        np.testing.assert_array_equal(got, ref)
    # a criterion (input_ids, scores, cur_len) stopping at 3 tokens equals max_length=3
    stop = ours.generate(ids, attention_mask=mask, max_new_tokens=5, jit_compile=False,
                         stopping_criteria=[lambda i, s, cur_len: cur_len >= 3]).numpy()
    np.testing.assert_array_equal(stop, base[:, :3])
    with pytest.raises(ValueError, match="logits processor .*<lambda>.* must return"):
        ours.generate(ids, max_new_tokens=2, jit_compile=False, logits_processor=[lambda i, s: s[:, :3]])
    with pytest.raises(ValueError, match="stopping criterion .*<lambda>.* must return"):
        ours.generate(ids, max_new_tokens=2, jit_compile=False, stopping_criteria=[lambda i, s: s])
    # max_time: honoured eagerly (every row stops after the first step past it), refused compiled
    timed = ours.generate(ids, attention_mask=mask, max_new_tokens=5, max_time=1e-9, jit_compile=False).numpy()
    np.testing.assert_array_equal(timed, base[:, :2])
    with pytest.raises(ValueError, match="max_time.*jit_compile=False"):
        ours.generate(ids, max_new_tokens=2, max_time=1.0)


def test_prophetnet_refuses_what_tf_does_not_implement():
    ours, _, _ = make_pair(PAIRS[7], hf=False)
    for kw, name in ((dict(use_cache=False), "use_cache"), (dict(return_dict_in_generate=True, output_attentions=True),
                                                              "output_attentions")):
        with pytest.raises(NotImplementedError, match=f"`{name}`.*ProphetNet"):
            ours.generate(np.ones((1, 3), np.int32), max_new_tokens=2, **kw)
