"""Keras 3 training workflows on TFEncoderDecoderModel: fit/evaluate/predict on tf.data of
dicts and (x, labels) pairs, validation data and callbacks, XLA (``jit_compile=True``) AdamW
steps against torch.optim.AdamW, mixed precision (float16 with loss scaling, bfloat16),
prepare_tf_dataset, and bad datasets or policies refused before the first step.  The PyTorch backend is the reference for the loss
after training (same portable init, same batches, AdamW with the same settings)."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from encdec_tf import TFEncoderDecoderModel  # noqa: E402
from tests.torch.helpers import make_config  # noqa: E402

LR, SGD_LR = 1e-3, 0.5


def examples(n: int = 8, seed: int = 0) -> list[dict[str, list[int]]]:
    """Tokenised examples of different source and label lengths."""
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(4, 99, 7 - i % 3).tolist(), "attention_mask": [1] * (7 - i % 3),
             "labels": rng.integers(4, 99, 5 - i % 2).tolist()} for i in range(n)]


@pytest.fixture(scope="module")
def config():
    return make_config("bert2bert")


@pytest.fixture
def policy():
    """Set a global dtype policy for one test, restored afterwards."""
    saved = keras.config.dtype_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(saved)


def test_prepare_tf_dataset_pads_and_batches(config):
    model = TFEncoderDecoderModel(config, seed=0)
    data = model.prepare_tf_dataset(examples(), batch_size=4, shuffle=False, pad_to_multiple_of=4)
    first = next(iter(data))
    assert sorted(first) == ["attention_mask", "input_ids", "labels"]
    assert first["input_ids"].shape == (4, 8) and first["labels"].shape == (4, 8)
    ex = examples()[1]
    np.testing.assert_array_equal(first["labels"][1], ex["labels"] + [-100] * (8 - len(ex["labels"])))
    np.testing.assert_array_equal(first["attention_mask"][1], [1] * 6 + [0] * 2)
    np.testing.assert_array_equal(first["input_ids"][1, 6:], [config.encoder.pad_token_id] * 2)


def test_fit_evaluate_predict_matches_torch(config, tmp_path):
    """fit on dicts with validation data and callbacks, then on (x, labels) pairs; the loss
    after those 6 steps equals the PyTorch backend's trained the same way.  SGD keeps the
    comparison exact (1e-5); with AdamW the two differ by up to ~1e-3 after 6 steps (Keras
    adds Adam's epsilon before the bias correction, torch after, and Adam turns that into
    full-size steps on parameters whose gradients are near zero).  Steps run eagerly here
    (``run_eagerly=True``): tracing them takes tens of seconds on CI.  (``jit_compile=True``
    runs the same steps as one XLA program; its compile takes minutes on a loaded 2-core
    CI machine, so it is left to docs/training_tf.md's note.)"""
    torch = pytest.importorskip("torch")
    from encdec_torch import EncoderDecoderModel

    model = TFEncoderDecoderModel(config, seed=0)
    data = model.prepare_tf_dataset(examples(), batch_size=4, shuffle=False)
    pairs = data.map(lambda b: ({k: v for k, v in b.items() if k != "labels"}, b["labels"]))
    model.compile(optimizer=keras.optimizers.SGD(SGD_LR), jit_compile=False, run_eagerly=True)
    checkpoint = str(tmp_path / "best.weights.h5")
    history = model.fit(data, epochs=2, validation_data=pairs, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(checkpoint, save_weights_only=True, monitor="val_loss", save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)])
    assert set(history.history) == {"loss", "val_loss"} and len(history.history["loss"]) == 2
    model.fit(pairs, epochs=1, verbose=0)
    loss = model.evaluate(pairs, verbose=0)
    logits = model.predict(data, verbose=0)["logits"]
    assert logits.shape == (8, 5, config.decoder.vocab_size)

    ref = EncoderDecoderModel(config, seed=0).train()
    opt = torch.optim.SGD(ref.parameters(), lr=SGD_LR)
    batches = [{k: torch.from_numpy(v.numpy()).long() for k, v in b.items()} for b in data]
    for batch in batches * 3:
        opt.zero_grad()
        ref(**batch).loss.backward()
        opt.step()
    ref.eval()
    with torch.no_grad():
        ref_losses = [float(ref(**b).loss) for b in batches]
        ref_logits = torch.cat([ref(**b).logits for b in batches]).numpy()
    assert abs(loss - np.mean(ref_losses)) < 1e-5, (loss, ref_losses)
    assert np.abs(logits - ref_logits).max() < 1e-4
    assert loss < history.history["loss"][0]
    # the best epoch's weights reload
    other = TFEncoderDecoderModel(config, seed=1)
    other.load_weights(checkpoint)
    other.compile(optimizer="sgd", jit_compile=False, run_eagerly=True)
    assert other.evaluate(pairs, verbose=0) == pytest.approx(min(history.history["val_loss"]), abs=1e-5)


def test_mixed_float16_scales_the_loss(config, policy):
    reference = TFEncoderDecoderModel(config, seed=0)
    batch = next(iter(reference.prepare_tf_dataset(examples(), batch_size=8, shuffle=False)))
    fp32 = float(reference(**batch).loss)
    policy("mixed_float16")
    model = TFEncoderDecoderModel(config, seed=0)
    out = model(**batch)
    # float16 activations; logits and loss come out in float32
    assert out.encoder_last_hidden_state.dtype == tf.float16 and out.loss.dtype == tf.float32
    assert abs(float(out.loss) - fp32) < 1e-2  # float16 activations
    model.compile(optimizer=keras.optimizers.AdamW(LR), jit_compile=False, run_eagerly=True)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    losses = model.fit(model.prepare_tf_dataset(examples(), batch_size=4, shuffle=False), epochs=2, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[1] < losses[0]


def test_mixed_bfloat16_trains(config, policy):
    policy("mixed_bfloat16")
    model = TFEncoderDecoderModel(config, seed=0)
    data = model.prepare_tf_dataset(examples(), batch_size=4, shuffle=False)
    assert model(**next(iter(data))).encoder_last_hidden_state.dtype == tf.bfloat16
    model.compile(optimizer=keras.optimizers.AdamW(LR), jit_compile=False, run_eagerly=True)
    losses = model.fit(data, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[1] < losses[0]


def test_unsupported_policy_refused_by_name(config, policy):
    policy("float16")  # float16 weights: fine for inference (see test_reduced_precision.py), not for training
    model = TFEncoderDecoderModel(config, seed=0)
    with pytest.raises(ValueError, match="'float16' is not supported"):
        model.compile(optimizer=keras.optimizers.AdamW(LR), jit_compile=False)


@pytest.mark.parametrize("change, match", [
    (lambda b: {**b, "label": b["labels"]}, r"unexpected batch key\(s\) \['label'\]"),
    (lambda b: {k: v for k, v in b.items() if k != "labels"}, "need `labels`"),
    (lambda b: {**b, "labels": b["labels"][:, :, None]}, r"`labels` must have shape \[batch, length\]"),
    (lambda b: {**b, "attention_mask": b["attention_mask"][:, :3]}, r"`attention_mask` has length 3 but `input_ids`"),
])
def test_bad_dataset_refused_before_the_first_step(config, change, match):
    model = TFEncoderDecoderModel(config, seed=0)
    data = model.prepare_tf_dataset(examples(), batch_size=4, shuffle=False).map(change)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=match):
        model.fit(data, epochs=1, verbose=0)
    assert model.optimizer.iterations.numpy() == 0
    unbatched = model.prepare_tf_dataset(examples(), batch_size=4, shuffle=False).unbatch()
    with pytest.raises(ValueError, match=r"`input_ids` must have shape \[batch, length\], got shape \[7\]"):
        model.fit(unbatched, epochs=1, verbose=0)


def test_xla_adamw_steps_match_torch():
    """``compile(jit_compile=True)``: the training step as one XLA program, with Keras' AdamW,
    gives PyTorch's AdamW losses on the same 1-layer model and batches (``encdec
    train-compare``'s Keras side).  ``eps=1e-12``: Keras adds epsilon inside the bias
    correction, torch outside; with the usual 1e-8 the losses differ by ~1e-5 for that reason
    alone.  The step-2 loss carries the first update, embeddings included (Keras' Adam
    mishandled their repeated-token gradient slices before train_step summed them: ~1e-3)."""
    pytest.importorskip("torch")
    from encdec import BertConfig, EncoderDecoderConfig
    from encdec.init import init_weights
    from encdec.runner import Runner
    from encdec.specs import encoder_decoder_spec
    from encdec.training import AdamWSettings, comparison_batches, without_dropout
    from encdec_tf.training import train_adamw

    part = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37)
    config = without_dropout(EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(**part), BertConfig(**part), decoder_start_token_id=3, pad_token_id=0))
    weights = init_weights(encoder_decoder_spec(config), seed=0)
    batches, settings = comparison_batches(config, 2, 2, seed=0), AdamWSettings(learning_rate=1e-2, eps=1e-12)
    model = Runner.from_weights("tf", config, weights).model
    xla = train_adamw(model, batches, settings, jit_compile=True)
    assert model.jit_compile is True and model.optimizer.iterations.numpy() == 2
    torch = Runner.from_weights("torch", config, weights).train_adamw(batches, settings)
    assert max(abs(a - b) for a, b in zip(xla, torch)) < 1e-5, (xla, torch)
    assert abs(xla[1] - xla[0]) > 1e-3
