"""Keras integration and I/O: backend check, fit, SavedModel export, save/load round trips."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import torch

from .helpers import PAIRS, hf_model, inputs, make_config, make_pair

TOL = 1e-5
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_import_refuses_other_keras_backend():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", "import encdec_tf"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "KERAS_BACKEND=tensorflow" in proc.stderr


def test_fit_reduces_loss():
    import keras

    keras.utils.set_random_seed(0)  # fit runs dropout: fixed masks, not ones drawn from whatever ran before
    ours, _, _ = make_pair(PAIRS[1], hf=False)
    feed, labels = inputs(0)
    batch = {"input_ids": feed["input_ids"].astype(np.int32), "attention_mask": feed["attention_mask"].astype(np.int32),
             "labels": labels.astype(np.int32)}
    before = float(ours(**batch).loss)
    ours.compile(optimizer=keras.optimizers.Adam(1e-2))
    ds = tf.data.Dataset.from_tensors(batch).repeat(8)
    history = ours.fit(ds, epochs=1, verbose=0)
    after = float(ours(**batch).loss)
    assert np.isfinite(history.history["loss"][-1]) and history.history["loss"][-1] < before  # the tracker is fed
    assert after < before - 0.5


def test_export_saved_model_serves_logits_and_generate(tmp_path):
    ours, _, _ = make_pair(PAIRS[1], hf=False)
    feed, _ = inputs(0)
    expected = ours(**feed).logits.numpy()
    settings = dict(max_new_tokens=3, eos_token_id=7, jit_compile=False)  # no XLA compile when served: CI time
    ours.export(tmp_path / "saved", generate=settings)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    ids = loaded.signatures["generate"](input_ids=tf.constant(feed["input_ids"], tf.int32),
                                        attention_mask=tf.constant(feed["attention_mask"], tf.int32))["sequences"].numpy()
    eager = ours.generate(feed["input_ids"], attention_mask=feed["attention_mask"], **settings).numpy()
    assert ids.shape == (3, 4) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids[:, : eager.shape[1]], eager)
    assert (ids[:, eager.shape[1]:] == 0).all()  # static max_length columns, pad-filled
    serve = loaded.signatures["serving_default"]
    got = serve(**{k: tf.constant(v, tf.int32) for k, v in feed.items()})["logits"].numpy()
    assert np.max(np.abs(got - expected)) < TOL
    assert np.max(np.abs(loaded.serve(*[tf.constant(feed[k], tf.int32) for k in
                                        ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")])["logits"].numpy() - expected)) < TOL


@pytest.mark.parametrize("fmt", ["safetensors", "tf-h5"])
def test_save_load_round_trip_and_transformers_reads_it(tmp_path, fmt):
    from encdec_tf import TFEncoderDecoderModel

    ours, _, weights = make_pair(PAIRS[2], hf=False)
    feed, _ = inputs(ours.config.pad_token_id)
    ours.save_pretrained(tmp_path, format=fmt)
    assert os.path.exists(tmp_path / ("model.safetensors" if fmt == "safetensors" else "tf_model.h5"))
    again = TFEncoderDecoderModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(again(**feed).logits.numpy(), ours(**feed).logits.numpy())
    if fmt == "safetensors":
        import transformers

        ref = transformers.EncoderDecoderModel.from_pretrained(tmp_path).eval()
        with torch.no_grad():
            hf_logits = ref(**{k: torch.tensor(v) for k, v in feed.items()}).logits.numpy()
        assert np.max(np.abs(hf_logits - ours(**feed).logits.numpy())) < TOL


def test_variable_value_owns_one_copy_of_a_transposed_unaligned_kernel():
    from encdec_tf.models.common import variable_value

    flat = np.arange(1 + 6 * 4, dtype=np.float32)[1:]  # 4 bytes past the allocation: misaligned
    kernel = flat.reshape(4, 6).T  # a transposed view, as encdec.layout.to_backend lays out kernels
    expected = kernel.copy()
    t = variable_value(kernel, tf.float32, "k", (6, 4))
    half = variable_value(kernel, tf.bfloat16)
    flat[:] = -1  # the tensors own their memory
    np.testing.assert_array_equal(t.numpy(), expected)
    assert half.dtype == tf.bfloat16 and np.array_equal(tf.cast(half, tf.float32).numpy(), expected)
    with pytest.raises(ValueError, match="k has shape"):
        variable_value(kernel, tf.float32, "k", (4, 6))


def test_loads_transformers_pytorch_checkpoint(tmp_path):
    from encdec_tf import TFEncoderDecoderModel

    config = make_config(PAIRS[1])
    from encdec.init import init_weights
    from encdec.specs import encoder_decoder_spec

    weights = init_weights(encoder_decoder_spec(config), 3, randomize_all=True)
    ref = hf_model(config, weights)
    ref.save_pretrained(tmp_path, safe_serialization=False)
    ours = TFEncoderDecoderModel.from_pretrained(tmp_path, from_pt=True)
    feed, _ = inputs(0)
    with torch.no_grad():
        expected = ref(**{k: torch.tensor(v) for k, v in feed.items()}).logits.numpy()
    assert np.max(np.abs(ours(**feed).logits.numpy() - expected)) < TOL


def test_from_encoder_decoder_pretrained_with_prefixed_kwargs(tmp_path):
    import transformers

    from encdec_tf import TFEncoderDecoderModel

    enc = transformers.BertModel(transformers.BertConfig(**make_config(PAIRS[1]).encoder.to_dict()))
    dec = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{k: v for k, v in make_config(PAIRS[1]).decoder.to_dict().items()
                                                                  if k not in ("is_decoder", "add_cross_attention")}))
    enc.save_pretrained(tmp_path / "enc")
    dec.save_pretrained(tmp_path / "dec")
    model = TFEncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "enc", tmp_path / "dec",
                                                                  decoder_resid_pdrop=0.0, encoder_hidden_dropout_prob=0.0)
    assert model.config.decoder.resid_pdrop == 0.0 and model.config.encoder.hidden_dropout_prob == 0.0
    assert model.config.decoder.add_cross_attention and model.config.decoder.is_decoder
    state = model.canonical_state()
    ref = enc.state_dict()
    np.testing.assert_array_equal(state["encoder.embeddings.word_embeddings.weight"], ref["embeddings.word_embeddings.weight"].numpy())
    np.testing.assert_array_equal(state["decoder.transformer.h.1.attn.c_attn.weight"],
                                  dec.state_dict()["transformer.h.1.attn.c_attn.weight"].numpy())


def test_h5_both_ways_with_transformers_tf_model(tmp_path):
    """transformers' own TFEncoderDecoderModel (tf-keras, own process) reads our tf_model.h5
    with equal logits, and the tf_model.h5 it writes loads here."""
    from encdec_tf import TFEncoderDecoderModel

    pytest.importorskip("tf_keras")
    ours, _, _ = make_pair(PAIRS[1], hf=False)
    feed, _ = inputs(0)
    ours.save_pretrained(tmp_path / "ckpt", format="tf-h5")
    np.savez(tmp_path / "inputs.npz", **{k: v.astype(np.int32) for k, v in feed.items()})
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "USE_TORCH": "0", "USE_TF": "1"}
    env.pop("KERAS_BACKEND", None)
    script = os.path.join(os.path.dirname(__file__), "hf_tf_oracle.py")
    proc = subprocess.run([sys.executable, script, str(tmp_path / "ckpt"), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "logits.npy"), str(tmp_path / "theirs")], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = np.load(tmp_path / "logits.npy")
    assert np.max(np.abs(ours(**feed).logits.numpy() - expected)) < TOL
    assert os.path.exists(tmp_path / "theirs" / "tf_model.h5")
    again = TFEncoderDecoderModel.from_pretrained(tmp_path / "theirs")
    assert np.max(np.abs(again(**feed).logits.numpy() - expected)) < TOL
