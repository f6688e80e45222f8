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


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_generate_matches_transformers(case, backend, setting):
    if setting not in ("greedy", "beam") and case.name not in FULL_GRID:
        pytest.skip(f"{setting} runs on {', '.join(FULL_GRID[:-1])}")
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
    steps = 4
    cached = run.generate(ids, attention_mask=mask, max_new_tokens=steps, eos_token_id=None)
    dec = np.full((ids.shape[0], 1), case.config.decoder_start_token_id, np.int64)
    for _ in range(steps):
        logits = run.forward(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)["logits"]
        dec = np.concatenate([dec, logits[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(cached, dec)


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
