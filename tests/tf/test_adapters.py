"""TF adapters: the Keras side (trainable variables, ``fit``, compiled-function invalidation,
no stale variables) against the torch backend on the same weights.  Logits, loss and XLA greedy
ids against the ``adapters`` library on every shared case: ``conformance_tests/test_adapters.py``."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

from encdec.adapters import SeqBnConfig, adapter_params, adapter_sites
from encdec.init import init_weights
from encdec.specs import encoder_decoder_spec
from encdec_tf import TFEncoderDecoderModel
from encdec_torch import EncoderDecoderModel
from conformance_tests.adapter_cases import TOL, ours_config
from tests.torch.helpers import inputs, make_config

GREEDY = dict(max_length=8, do_sample=False, num_beams=1)


def build(pair: str, seed: int = 0) -> tuple[TFEncoderDecoderModel, EncoderDecoderModel, dict]:
    """(TF model, torch model, numpy inputs) holding the same random base weights."""
    config = make_config(pair)
    weights = init_weights(encoder_decoder_spec(config), seed=seed, randomize_all=True)
    ours = TFEncoderDecoderModel(make_config(pair))
    ours.load_canonical(weights)
    ref = EncoderDecoderModel(make_config(pair)).eval()
    ref.load_canonical(weights)
    return ours, ref, {k: v.numpy() for k, v in inputs(config).items()}


def random_adapter(model, name: str, key: str, seed: int = 3) -> dict[str, np.ndarray]:
    """Every adapter entry random (a fresh LoRA's B is zero, which would hide bugs)."""
    rng = np.random.default_rng(seed)
    shapes = adapter_params(adapter_sites(model.config, name, ours_config(key)))
    return {n: (rng.standard_normal(s) * 0.3).astype(np.float32) for n, s in sorted(shapes.items())}


def add(models, key: str, name: str = "a") -> None:
    """Add adapter ``name`` with the same random weights to every model and activate it."""
    weights = random_adapter(models[0], name, key)
    for m in models:
        m.add_adapter(name, ours_config(key))
        m.load_adapter_state(name, weights)
        m.set_active_adapters(name)


def tf_logits(model, x) -> np.ndarray:
    return model(**x).logits.numpy()


def torch_logits(model, x) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in x.items()}).logits.numpy()


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@pytest.mark.parametrize("pair,key", [("bert2bert", "seqbn-mh-leave0"), ("bert2gpt2", "lora-mlp-leave0")])
def test_inactive_adapter_is_bit_identical(pair, key):
    """(bit identity on every site and backend: conformance_tests; here also no stale variables.)"""
    ours, _, x = build(pair)
    plain = tf_logits(ours, x)
    variables = [v.path for v in ours.variables]
    add((ours,), key)
    ours.set_active_adapters(None)
    assert np.array_equal(tf_logits(ours, x), plain)
    ours.set_active_adapters("a")
    ours.delete_adapter("a")
    assert np.array_equal(tf_logits(ours, x), plain)
    assert [v.path for v in ours.variables] == variables  # no stale adapter variable stays tracked


def test_dropout_honours_training():
    ours, _, x = build("bert2bert")
    weights = random_adapter(ours, "a", "seqbn")
    ours.add_adapter("a", SeqBnConfig(dropout=0.5))
    ours.load_adapter_state("a", weights)
    ours.set_active_adapters("a")
    ref = TFEncoderDecoderModel(ours.config)  # same base and adapter, no adapter dropout
    ref.load_canonical(ours.canonical_state())
    add((ref,), "seqbn")
    assert np.array_equal(tf_logits(ours, x), tf_logits(ref, x))  # inference: no dropout
    assert max_abs(ours(**x, training=True).logits, tf_logits(ref, x)) > 1e-3


@pytest.mark.parametrize("pair,key", [("bert2bert", "seqbn"), ("bert48-gpt2-proj", "lora-mlp-leave0")])
def test_train_adapter_fit_trains_only_the_adapter(pair, key):
    ours, _, x = build(pair)
    add((ours,), key)
    ours.add_adapter("other", SeqBnConfig())
    ours.train_adapter("a")
    own = {id(v) for v in ours.adapter_variables("a")}
    assert own and {id(v) for v in ours.trainable_variables} == own
    if pair == "bert48-gpt2-proj":
        assert ours.enc_to_dec_proj is not None and not any(v.trainable for v in ours.store.variables.values())
    base = ours.canonical_state()
    adapter = ours.adapter_state("a")
    batch = dict(x, labels=np.where(x["decoder_attention_mask"] == 1, x["decoder_input_ids"], -100))
    ds = tf.data.Dataset.from_tensor_slices(batch).batch(3)
    ours.compile(optimizer=keras.optimizers.Adam(1e-2))
    losses = ours.fit(ds, epochs=6, verbose=0).history["loss"]
    assert losses[-1] < losses[0]
    after = ours.canonical_state()
    assert all(np.array_equal(base[k], after[k]) for k in base)
    assert any(not np.array_equal(adapter[k], v) for k, v in ours.adapter_state("a").items())


def test_gradient_tape_sees_only_the_adapter():
    ours, _, x = build("bert2bert")
    add((ours,), "lora")
    ours.train_adapter("a")
    labels = x["decoder_input_ids"]
    with tf.GradientTape() as tape:
        loss = ours(input_ids=x["input_ids"], attention_mask=x["attention_mask"], labels=labels, training=True).loss
    grads = tape.gradient(loss, ours.trainable_variables)
    names = [v.name for v in ours.trainable_variables]
    assert names and all(".loras.a.lora_" in n for n in names)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


@pytest.mark.parametrize("pair,key", [("bert2gpt2", "lora-mlp-leave0")])  # the others: conformance_tests
def test_merge_lora_keeps_outputs(pair, key):
    ours, ref, x = build(pair)
    add((ours, ref), key)
    before = tf_logits(ours, x)
    ours.merge_adapter("a")
    ref.merge_adapter("a")
    assert ours.adapter_configs == {} and not ours._adapter_layers()
    assert max_abs(tf_logits(ours, x), before) < TOL
    assert max_abs(tf_logits(ours, x), torch_logits(ref, x)) < TOL


def test_compiled_generate_follows_the_active_adapter():
    """Each adapter change drops the compiled decode programs, which traced the previous state."""
    ours, _, x = build("bert2gpt2")
    base = ours.generate(x["input_ids"], x["attention_mask"], **GREEDY).numpy()
    add((ours,), "lora")
    got = ours.generate(x["input_ids"], x["attention_mask"], **GREEDY).numpy()
    assert np.array_equal(got, ours.generate(x["input_ids"], x["attention_mask"], jit_compile=False, **GREEDY).numpy())
    assert not np.array_equal(got, base)
    ours.delete_adapter("a")
    assert np.array_equal(ours.generate(x["input_ids"], x["attention_mask"], **GREEDY).numpy(), base)


def test_keras_functions_follow_the_active_adapter():
    """``evaluate`` traces a test function; an adapter change must retrace it."""
    ours, _, x = build("bert2bert")
    batch = dict(x, labels=x["decoder_input_ids"])
    ds = tf.data.Dataset.from_tensor_slices(batch).batch(3)
    ours.compile(optimizer="adam")
    base = ours.evaluate(ds, verbose=0)
    add((ours,), "seqbn")
    with_adapter = ours.evaluate(ds, verbose=0)
    assert abs(with_adapter - float(ours(**batch).loss)) < TOL
    assert abs(with_adapter - base) > 1e-3
    ours.delete_adapter("a")
    assert ours.evaluate(ds, verbose=0) == base


def test_save_in_tf_load_in_torch(tmp_path):
    ours, ref, x = build("bert2bert")
    add((ours,), "seqbn-mh-leave0")
    ours.save_adapter(tmp_path, "a")
    assert ref.load_adapter(tmp_path, set_active=True) == "a"
    assert max_abs(tf_logits(ours, x), torch_logits(ref, x)) < TOL
    fresh, _, _ = build("bert2bert")
    fresh.load_adapter(tmp_path, set_active=True)
    assert np.array_equal(tf_logits(fresh, x), tf_logits(ours, x))
