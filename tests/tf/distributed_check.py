"""Run as a script by tests/tf/test_distributed.py: Keras ``fit`` (two AdamW steps) under
``tf.distribute.MirroredStrategy`` on two logical CPU devices against the same ``fit`` on
one device.  Prints one JSON line; writes the mirrored model's checkpoint under argv[1].
The steps run eagerly (``run_eagerly=True``: tracing them took most of this check's time);
docs/distributed_tf.md runs the same under ``tf.function``."""
import json
import os
import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from encdec import BertConfig, EncoderDecoderConfig, GPT2Config  # noqa: E402
from encdec_tf import TFEncoderDecoderModel  # noqa: E402

out_dir = sys.argv[1]
config = EncoderDecoderConfig.from_encoder_decoder_configs(
    BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2,
               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
)
config.decoder_start_token_id, config.pad_token_id = 3, 0
rng = np.random.default_rng(0)
batch = {"input_ids": rng.integers(4, 100, (4, 12)).astype(np.int32), "attention_mask": np.ones((4, 12), np.int32),
         "labels": rng.integers(4, 100, (4, 7)).astype(np.int32)}
batch["attention_mask"][1, 9:] = 0
batch["labels"][:, 5:] = -100  # same number of labels per row: the mean of the replicas' means is the global mean


def fit(model, strategy):
    # AdamW: before train_step densified embedding gradients, Keras' Adam squared the replicas'
    # concatenated IndexedSlices slice by slice and drifted from one device (1.8e-3 after 2 steps)
    with strategy.scope():  # the optimizer's variables are created by compile: in the model's strategy
        model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-3), jit_compile=False, run_eagerly=True)
    data = tf.data.Dataset.from_tensor_slices(batch).batch(4).repeat(2)  # global batch 4: 2 rows per replica
    return model.fit(data, epochs=2, steps_per_epoch=1, verbose=0).history["loss"]


single = TFEncoderDecoderModel(config, seed=0)
single_losses = fit(single, tf.distribute.get_strategy())
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    mirrored = TFEncoderDecoderModel(config, seed=0)
mirrored_losses = fit(mirrored, strategy)
a, b = single.canonical_state(), mirrored.canonical_state()
mirrored.save_pretrained(os.path.join(out_dir, "ckpt"))
logits = mirrored(**batch).logits.numpy()
np.savez(os.path.join(out_dir, "batch_logits.npz"), logits=logits, **batch)
report = {
    "single_losses": [float(x) for x in single_losses],
    "mirrored": {
        "replicas": strategy.num_replicas_in_sync,
        "losses": [float(x) for x in mirrored_losses],
        "max_loss_diff": max(abs(x - y) for x, y in zip(single_losses, mirrored_losses)),
        "max_param_diff": max(float(np.max(np.abs(a[k] - b[k]))) for k in a),
        "mirrored_variables": type(mirrored.trainable_variables[0].value).__name__,
        "iterations": int(mirrored.optimizer.iterations.numpy()),
    },
}
print("REPORT " + json.dumps(report))
