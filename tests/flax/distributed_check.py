"""Run as a script by tests/flax/test_distributed.py with 8 simulated host devices: the
sharded optax step and ``generate`` against the single-device ones, and a checkpoint saved
from sharded parameters.  Prints one JSON line of measurements; writes the checkpoint and
its logits under argv[1]."""
import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax.traverse_util import flatten_dict  # noqa: E402

from encdec import BertConfig, GPT2Config  # noqa: E402
from encdec_flax import EncoderDecoderConfig, FlaxEncoderDecoderModel  # noqa: E402
from encdec_flax.sharding import (gather, make_mesh, optimizer_state_shardings, param_shardings, shard_batch,  # noqa: E402
                                  shard_params)  # noqa: E402

out_dir = sys.argv[1]
assert len(jax.devices()) == 8, jax.devices()
config = EncoderDecoderConfig.from_encoder_decoder_configs(
    BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64),
    GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2),
)
config.decoder_start_token_id, config.pad_token_id = 3, 0
model = FlaxEncoderDecoderModel(config, seed=0)
rng = np.random.default_rng(0)
batch = {"input_ids": rng.integers(4, 100, (8, 12)), "attention_mask": np.ones((8, 12), np.int32),
         "labels": rng.integers(4, 100, (8, 7))}
batch["attention_mask"][1, 9:] = 0
batch["labels"][:, 5:] = -100
# eps=1e-6 (optax's default is 1e-8): Adam divides each gradient entry by its own magnitude
# plus eps, so an entry near eps in size has an update that depends on its last bits, and
# those differ with the reduction order of a sharded sum; a larger eps bounds that gain.
optimizer = optax.adamw(1e-3, eps=1e-6)


def loss_fn(params, batch, key):
    # dropout off: keeps the compiled programs small (on 2 CPU cores compilation dominates)
    return model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"], params=params).loss


def train_step(params, opt_state, batch, key):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def run(params, batch, shardings=None):
    """Two steps; with ``shardings`` the jitted init and step keep the parameters and the
    optimizer state (its moments are parameter-shaped) placed as the plan says."""
    if shardings is None:
        init, step_fn = jax.jit(optimizer.init), jax.jit(train_step)
    else:
        opt_shardings = optimizer_state_shardings(optimizer, params, shardings)
        init = jax.jit(optimizer.init, out_shardings=opt_shardings)
        step_fn = jax.jit(train_step, out_shardings=(shardings, opt_shardings, None))
    opt_state = init(params)
    losses = []
    for step in range(2):
        params, opt_state, loss = step_fn(params, opt_state, batch, jax.random.PRNGKey(step))
        losses.append(float(loss))
    return params, opt_state, losses


import time  # noqa: E402
T0 = time.time()


def log(msg):
    print(f"[{time.time() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def max_diff(a, b):
    fa, fb = flatten_dict(gather(a)), flatten_dict(gather(b))
    assert fa.keys() == fb.keys()
    return max(float(np.max(np.abs(fa[k] - fb[k]))) for k in fa)


def same_specs(tree, shardings):
    got = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x: x.sharding.spec, tree))
    want = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda s: s.spec, shardings))
    return got == want


ref_params, _, ref_losses = run(model.params, batch)
log("single-device steps")
ref_ids = np.asarray(model.generate(batch["input_ids"], batch["attention_mask"], params=ref_params, max_length=9).sequences)
log("single-device generate")
report = {"single_losses": ref_losses}
# generate traces (issue 14.3): one input row per device under jax.pmap, parameters broadcast
per_device = jax.pmap(lambda p, x, m: model.generate(x, m, params=p, max_length=9).sequences, in_axes=(None, 0, 0))
pmap_ids = per_device(ref_params, batch["input_ids"].reshape(8, 1, -1), batch["attention_mask"].reshape(8, 1, -1))
report["pmap_generate_equal"] = bool(np.array_equal(np.asarray(pmap_ids).reshape(ref_ids.shape), ref_ids))
log("pmap generate")
for label, (data, mdl, fsdp) in {"dp2_tp4_fsdp": (2, 4, True)}.items():
    mesh = make_mesh(data, mdl)
    shardings = param_shardings(model, mesh, fsdp=fsdp)
    params = shard_params(model, mesh, fsdp=fsdp)
    params, opt_state, losses = run(params, shard_batch(batch, mesh), shardings)
    log(f"{label} steps")
    mu = opt_state[0].mu
    report[label] = {
        "losses": losses,
        "max_loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
        "max_param_diff": max_diff(params, ref_params),
        "params_keep_sharding": same_specs(params, shardings),
        "adam_state_sharded_like_params": same_specs(mu, shardings),
        "split_leaves": sum(s.spec != jax.sharding.PartitionSpec() for s in jax.tree_util.tree_leaves(shardings)),
        "query_kernel_shard": list(params["encoder"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
                                   .addressable_shards[0].data.shape),
    }
    if label == "dp2_tp4_fsdp":
        ids = np.asarray(model.generate(batch["input_ids"], batch["attention_mask"], params=params, max_length=9).sequences)
        report[label]["generate_equal"] = bool(np.array_equal(ids, ref_ids))
        log(f"{label} generate")
        model.save_pretrained(os.path.join(out_dir, "ckpt"), params=params)  # gathered to canonical names
        reloaded = FlaxEncoderDecoderModel.from_pretrained(os.path.join(out_dir, "ckpt"))
        report[label]["reload_equal"] = max_diff(reloaded.params, params) == 0.0
        logits = np.asarray(reloaded(batch["input_ids"], batch["attention_mask"], labels=batch["labels"]).logits)
        log("checkpoint")
        np.savez(os.path.join(out_dir, "batch_logits.npz"), logits=logits, **batch)
print("REPORT " + json.dumps(report))
