"""Same weights, same inputs: every backend gives transformers 4.57's outputs.

fp32, tolerance 1e-5 max |Δ| on every output (logits, hidden states, attentions, loss).
"""
from __future__ import annotations

import numpy as np
import pytest

from conformance_tests import oracle
from conformance_tests.conftest import max_abs, pair_case, require
from conformance_tests.runners import runner
from encdec.runner import sample_inputs

TOL = 1e-5
FIELDS = ("loss", "logits", "encoder_last_hidden_state", "decoder_hidden_states", "decoder_attentions",
          "cross_attentions", "encoder_hidden_states", "encoder_attentions")
TF_ORACLE_CASES = ("bert2gpt2", "roberta2roberta", "bert48-2gpt2-32-proj")


def input_sets(config):
    labels = sample_inputs(config, labels=True)
    plain = sample_inputs(config, labels=False, seed=1)
    plain["decoder_attention_mask"] = np.ones_like(plain["decoder_input_ids"])
    plain["decoder_attention_mask"][1, -2:] = 0
    return {"labels": labels, "decoder-padded": plain}


@pytest.fixture(scope="module")
def hf(case):
    pytest.importorskip("transformers")
    model = oracle.torch_model(case.config, case.weights)
    return {name: oracle.torch_forward(model, inputs) for name, inputs in input_sets(case.config).items()}


def assert_close(ours, ref, field, what):
    if isinstance(ref, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(ref), f"{what}: {field} has {len(ours)} items, expected {len(ref)}"
        for i, (a, b) in enumerate(zip(ours, ref)):
            d = max_abs(a, b)
            assert d <= TOL, f"{what}: {field}[{i}] max |Δ| {d:.3g} > {TOL}"
    else:
        d = max_abs(ours, ref)
        assert d <= TOL, f"{what}: {field} max |Δ| {d:.3g} > {TOL}"


@pytest.mark.parametrize("inputs_name", ["labels", "decoder-padded"])
def test_matches_transformers_pytorch(case, backend, hf, inputs_name):
    if inputs_name != "labels":  # labels of -100 pad the decoder inputs too
        case.skip_if_light("a second input set")
    require(backend)
    inputs = input_sets(case.config)[inputs_name]
    out = runner(case, backend).forward(**inputs, output_hidden_states=True, output_attentions=True)
    for field in FIELDS:
        if field in hf[inputs_name]:
            assert field in out, f"{backend} returned no {field}"
            assert_close(out[field], hf[inputs_name][field], field, f"{backend} vs transformers")


def test_backends_agree_pairwise(case, backend_pair):
    backend, other = backend_pair
    case.skip_if_light("pairwise agreement (each backend is checked against transformers)")
    require(backend)
    require(other)
    for name, inputs in input_sets(case.config).items():
        a = runner(case, backend).forward(**inputs)
        b = runner(case, other).forward(**inputs)
        assert_close(a["logits"], b["logits"], "logits", f"{backend} vs {other} ({name})")
        if "loss" in a:
            assert_close(a["loss"], b["loss"], "loss", f"{backend} vs {other}")


def test_matches_transformers_flax(case, backend):
    """transformers' FlaxEncoderDecoderModel, where it has the pair."""
    require(backend)
    pytest.importorskip("flax")
    if case.config.encoder.model_type == "electra":
        pytest.skip("transformers' FlaxEncoderDecoderModel calls an ELECTRA encoder without token_type_ids and fails")
    from transformers.models.auto import modeling_flax_auto as flax_auto

    if (case.config.encoder.model_type not in flax_auto.FLAX_MODEL_MAPPING_NAMES
            or case.config.decoder.model_type not in flax_auto.FLAX_MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        pytest.skip("transformers has no Flax class for a part of this pair")
    inputs = input_sets(case.config)["decoder-padded"]
    key = ("flax-oracle", case.name)
    if key not in _ORACLE_CACHE:  # one transformers Flax run per pair, shared by the backends
        _ORACLE_CACHE[key] = oracle.flax_forward(case.config, case.weights, inputs)
    ours = runner(case, backend).forward(**inputs)["logits"]
    assert_close(ours, _ORACLE_CACHE[key], "logits", f"{backend} vs transformers Flax")


def test_matches_transformers_tf(case, backend):
    """transformers' TFEncoderDecoderModel (tf-keras, own process) on a few pairs."""
    if case.name not in TF_ORACLE_CASES:
        pytest.skip("the TF oracle runs in a subprocess; a few pairs cover it")
    require(backend)
    pytest.importorskip("tf_keras")
    inputs = input_sets(case.config)["decoder-padded"]
    key = ("tf-oracle", case.name)
    if key not in _ORACLE_CACHE:  # every TF_ORACLE_CASES pair in one subprocess: one TensorFlow start
        cases = [pair_case(name) for name in TF_ORACLE_CASES]
        jobs = [(c.config, c.weights, input_sets(c.config)["decoder-padded"]) for c in cases]
        for c, logits in zip(cases, oracle.tf_forward_many(jobs)):
            _ORACLE_CACHE["tf-oracle", c.name] = logits
    ours = runner(case, backend).forward(**inputs)["logits"]
    assert_close(ours, _ORACLE_CACHE[key], "logits", f"{backend} vs transformers TF")


_ORACLE_CACHE: dict = {}
