"""Greedy and beam-search ids: identical across backends and to transformers 4.57;
cached decoding (generate) equals an uncached argmax loop over full forwards."""
from __future__ import annotations

import numpy as np
import pytest

from conformance_tests import oracle
from conformance_tests.conftest import require
from conformance_tests.runners import runner
from encdec.runner import sample_inputs

SETTINGS = {
    "greedy": dict(max_new_tokens=6),
    "greedy-penalties": dict(max_new_tokens=6, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3),
    "beam": dict(max_new_tokens=6, num_beams=3, num_return_sequences=2, length_penalty=0.7),
    "beam-early": dict(max_new_tokens=5, num_beams=2, early_stopping=True),
}


def gen_inputs(config):
    inputs = sample_inputs(config, labels=False)
    return inputs["input_ids"], inputs["attention_mask"]


_HF: dict = {}


def hf_ids(case, setting):
    key = (case.name, setting)
    if key not in _HF:
        pytest.importorskip("transformers")
        model = oracle.torch_model(case.config, case.weights)
        ids, mask = gen_inputs(case.config)
        _HF[key] = oracle.torch_generate(model, ids, mask, **SETTINGS[setting])
    return _HF[key]


#: every setting runs on these; the other pairs run greedy and beam only (each setting is
#: a separate compiled program in TF and Flax, so the full grid would dominate the suite).
FULL_GRID = ("bert2gpt2", "roberta2roberta", "bert2bart-decoder", "checkpoint")


#: light pairs whose decoder decodes through another pair's code (BertGeneration is BERT's
#: decoder with a plain head, which the forward checks cover): no compiled TF/Flax programs.
NO_COMPILED_DECODE = ("bertgen2bertgen-shared",)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_generate_matches_transformers(case, backend, setting):
    if setting not in ("greedy", "beam") and case.name not in FULL_GRID:
        pytest.skip(f"{setting} runs on {', '.join(FULL_GRID[:-1])}")
    if case.light and backend != "torch" and (setting == "beam" or case.name in NO_COMPILED_DECODE):
        # beam search reorders every decoder's cache with the same code (full pairs check it);
        # greedy still runs the light pairs' own cached attention (ProphetNet streams, RemBERT,
        # relative positions) in each compiled loop
        pytest.skip(f"{setting} in {backend}: not run for light pairs")
    require(backend)
    ids, mask = gen_inputs(case.config)
    ours = runner(case, backend).generate(ids, attention_mask=mask, **SETTINGS[setting])
    ref = hf_ids(case, setting)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    np.testing.assert_array_equal(ours, ref, err_msg=f"{backend} {setting} ids differ from transformers")


def test_cached_equals_uncached(case, backend):
    case.skip_if_light("cached vs uncached decoding")
    require(backend)
    if case.config.decoder.model_type == "prophetnet":
        pytest.skip("transformers' ProphetNet reads the predict streams' relative-position bias through another index "
                    "layout over several positions than over one, so its full forward is not its cached steps")
    ids, mask = gen_inputs(case.config)
    run = runner(case, backend)
    # the greedy setting: its compiled program is the one test_generate_matches_transformers built
    cached = run.generate(ids, attention_mask=mask, **SETTINGS["greedy"])
    assert cached.shape[1] > 3, "decoding stopped too early to compare cached steps"
    # one uncached forward over the decoded ids: the decoder is causal, so position t's logits are
    # those of an uncached step on the prefix up to t: one forward (in Flax one program), not one per step
    logits = run.forward(input_ids=ids, attention_mask=mask, decoder_input_ids=cached)["logits"]
    gen = run.model.generation_config
    eos = [e for e in (gen.eos_token_id if isinstance(gen.eos_token_id, (list, tuple)) else [gen.eos_token_id])
           if e is not None]
    done = np.zeros(ids.shape[0], bool)
    for t in range(cached.shape[1] - 1):  # rows past their eos get pad, as generate gives them
        token = np.where(done, gen.pad_token_id, logits[:, t].argmax(-1))
        np.testing.assert_array_equal(cached[:, t + 1], token, err_msg=f"step {t + 1}")
        done |= np.isin(token, eos)


def test_default_mask_masks_pads(case, backend):
    """Without an attention_mask, pads in input_ids are masked (transformers' rule).
    Uses the greedy setting, whose compiled program the other tests already built."""
    case.skip_if_light("default attention mask")
    require(backend)
    ids, mask = gen_inputs(case.config)
    assert (mask == 0).any()  # the inputs do carry padding
    run = runner(case, backend)
    greedy = SETTINGS["greedy"]
    np.testing.assert_array_equal(run.generate(ids, **greedy), run.generate(ids, attention_mask=mask, **greedy))


# --- the core's processors and warpers, per backend, against transformers' own -------------
PROCESSOR_SETTINGS = {
    "penalties": dict(repetition_penalty=1.4, no_repeat_ngram_size=2, encoder_repetition_penalty=1.3,
                      encoder_no_repeat_ngram_size=2, min_length=9),
    "words": dict(bad_words_ids=[[5], [7, 8], [3]], sequence_bias=[[[12], 3.0], [[13, 14], -2.0]],
                  suppress_tokens=[9, 10], begin_suppress_tokens=[11], renormalize_logits=True),
    "decay": dict(exponential_decay_length_penalty=(1, 1.5), forced_eos_token_id=[4, 6], max_length=7),
    "sample-typical": dict(do_sample=True, temperature=0.7, top_k=20, typical_p=0.8, min_p=0.05),
    "sample-cutoffs": dict(do_sample=True, top_k=0, top_p=0.9, epsilon_cutoff=0.02, eta_cutoff=0.05),
}


def _processed(backend, plan, scores, seqs, cur_len, enc, expand):
    from encdec.generation_logits import process, warp

    if backend == "torch":
        import torch

        from encdec_torch.generation import TorchOps

        ops, arr = TorchOps(torch.device("cpu")), torch.from_numpy
    elif backend == "flax":
        import jax.numpy as jnp

        from encdec_flax.generation import OPS as ops
        arr = jnp.asarray
    else:
        import tensorflow as tf

        from encdec_tf.generation import OPS as ops

        def arr(x):  # the TF backend's ids are int32
            return tf.constant(x.astype(np.int32) if x.dtype.kind == "i" else x)
    out = process(plan, ops, arr(scores), arr(seqs), cur_len, arr(enc), expand)
    return np.asarray(warp(plan, ops, out))


@pytest.mark.parametrize("setting", list(PROCESSOR_SETTINGS))
def test_processed_scores_match_transformers(backend, setting):
    """Every backend's processed scores (the probability vectors sampling draws from) equal
    transformers' processors and warpers on the same inputs, at several lengths."""
    pytest.importorskip("transformers")
    require(backend)
    import torch
    import transformers

    from encdec import BertConfig, EncoderDecoderConfig
    from encdec.generation import resolve_generation

    tiny = dict(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)

    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(**tiny), BertConfig(**tiny), decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)
    rng = np.random.default_rng(0)
    expand, batch = 2, 2
    enc = rng.integers(0, 40, (batch, 6))
    seqs = rng.integers(0, 8, (batch * expand, 6))  # a small alphabet, so n-grams repeat
    seqs[:, 0] = 2
    seqs[:, 2] = 13
    plan, _ = resolve_generation(config, None, dict(PROCESSOR_SETTINGS[setting]))
    hf_cfg = transformers.GenerationConfig(**{**PROCESSOR_SETTINGS[setting], "eos_token_id": 3, "pad_token_id": 0,
                                              "decoder_start_token_id": 2})
    hf = transformers.EncoderDecoderModel(config=oracle._hf_config(config))
    hf_cfg._eos_token_tensor = torch.tensor([3])
    procs = hf._get_logits_processor(hf_cfg, input_ids_seq_length=1, encoder_input_ids=torch.from_numpy(enc),
                                     prefix_allowed_tokens_fn=None, logits_processor=transformers.LogitsProcessorList(),
                                     device="cpu")
    for cur_len in (1, 3, 4, 6):
        scores = rng.normal(size=(batch * expand, 40)).astype(np.float32) * 3
        ref = procs(torch.from_numpy(seqs[:, :cur_len]), torch.from_numpy(scores)).numpy()
        ours = _processed(backend, plan, scores, seqs if backend != "torch" else seqs[:, :cur_len], cur_len, enc, expand)
        np.testing.assert_array_equal(np.isinf(ours), np.isinf(ref), err_msg=f"{setting} at length {cur_len}")
        finite = np.isfinite(ref)
        np.testing.assert_allclose(ours[finite], ref[finite], atol=1e-5, rtol=1e-5)



def test_encoder_ids_outside_decoder_vocab(backend):
    """Encoder ids the decoder's vocabulary lacks (a bigger encoder vocabulary) count nowhere
    in the encoder_* processors, in every backend as in the core's NumPy reference
    (transformers indexes its scores with them and fails)."""
    require(backend)
    from encdec.generation import DecodePlan
    from encdec.generation_logits import ArrayOps, process

    plan = DecodePlan(max_length=8, min_length=0, do_sample=False, num_beams=1, temperature=1.0, top_k=50, top_p=1.0,
                      repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0, early_stopping=False,
                      num_return_sequences=1, eos_token_ids=(3,), pad_token_id=0, decoder_start_token_id=2,
                      encoder_repetition_penalty=1.5, encoder_no_repeat_ngram_size=2)
    enc = np.array([[5, 60, 7, 5, 6], [45, 5, 70, 1, 2]])  # vocab 50: 60, 70 outside
    seqs = np.array([[2, 5, 0, 0], [2, 5, 0, 0]])  # after 5: bans 60 (absent), 6 in row 0; 70 (absent) in row 1
    scores = np.random.default_rng(0).normal(size=(2, 50)).astype(np.float32)
    ref = process(plan, ArrayOps(np), scores, seqs, 2, enc)
    assert np.isinf(ref).sum() == 1 and np.isinf(ref[0, 6])
    ours = _processed(backend, plan, scores, seqs if backend != "torch" else seqs[:, :2], 2, enc, 1)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


# --- beam search's exact ties and placeholder rows: one rule in the core, every backend ---------
#: one new token, forced: the logits do not matter.  "tie": tokens 4 and 5 both score 0 on the
#: first beam (an exact tie, lower id first); "placeholder": a single finite hypothesis per
#: input, so the second returned row is a placeholder, [start, beam_fill_token_id] (pad 1 here).
TIE_SETTINGS = {
    "tie": dict(max_new_tokens=1, num_beams=2, num_return_sequences=2, forced_eos_token_id=[5, 4], eos_token_id=5,
                pad_token_id=0),
    "placeholder": dict(max_new_tokens=1, num_beams=2, num_return_sequences=2, forced_eos_token_id=5, eos_token_id=5,
                        pad_token_id=1),
}


@pytest.mark.parametrize("setting", list(TIE_SETTINGS))
def test_beam_exact_ties_and_placeholder_rows(case, backend, setting):
    """encdec.generation.beam_fill_token_id's rules give the same ids in every backend; the
    placeholder rows equal transformers' and the tied hypotheses are transformers' (whose order
    among exact ties is torch.topk's, not defined by index)."""
    if case.name != "bert2gpt2":
        pytest.skip("runs on bert2gpt2 (the forced token makes the model irrelevant)")
    require(backend)
    ids, mask = gen_inputs(case.config)
    extra = {"jit_compile": False} if backend == "tf" else {}  # TF's eager loop: no XLA compile for this case
    ours = runner(case, backend).generate(ids, attention_mask=mask, **TIE_SETTINGS[setting], **extra)
    start = case.config.decoder_start_token_id
    second = 5 if setting == "tie" else 1
    expected = np.array([[start, 4 if setting == "tie" else 5], [start, second]] * ids.shape[0])
    np.testing.assert_array_equal(ours, expected, err_msg=f"{backend} {setting}")
    pytest.importorskip("transformers")
    ref = oracle.torch_generate(oracle.torch_model(case.config, case.weights), ids, mask, **TIE_SETTINGS[setting])
    if setting == "placeholder":
        np.testing.assert_array_equal(ours, ref)
    else:  # the same hypotheses per input, in the core's order
        pairs = ref.reshape(ids.shape[0], 2, -1)
        np.testing.assert_array_equal(np.sort(pairs, axis=1).reshape(ref.shape), expected)
