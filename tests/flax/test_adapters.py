"""Flax adapters against the PyTorch backend (``encdec_torch``, itself checked against the
AdapterHub ``adapters`` library) on the same base and adapter weights; plus the Flax-only
parts: jit, optax training with ``adapter_param_labels``, compiled generate.  Logits and loss
against the library itself on every shared case, file round trips between backends and errors:
``conformance_tests/test_adapters.py``."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax.traverse_util import flatten_dict

from encdec.adapters import LoRAConfig
from encdec_flax import FlaxEncoderDecoderModel
from encdec_torch import EncoderDecoderModel
from conformance_tests.adapter_cases import ours_config
from tests.flax.conftest import canonical_weights, inputs, make_config

TOL = 1e-5


def random_adapter_state(model, name: str, seed: int = 3) -> dict[str, np.ndarray]:
    """Non-trivial values for every adapter weight (LoRA's B starts at zero)."""
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(v.shape) * 0.3).astype(np.float32) for k, v in model.adapter_state(name).items()}


def build(pair: str, key: str | None = None, std: float = 0.02):
    """(config, flax model, torch model) on the same weights; with ``key`` both hold the same
    random adapter ``"a"``, active."""
    config = make_config(pair)
    weights = canonical_weights(config, std=std)
    ours = FlaxEncoderDecoderModel(config, _do_init=False)
    ours.load_canonical(weights)
    ref = EncoderDecoderModel(config).eval()
    ref.load_canonical(weights)
    if key is not None:
        for model in (ours, ref):
            model.add_adapter("a", ours_config(key))
        state = random_adapter_state(ours, "a")
        for model in (ours, ref):
            model.load_adapter_state("a", state)
            model.set_active_adapters("a")
    return config, ours, ref


def batch(pair: str) -> dict[str, np.ndarray]:
    ids, mask, labels = inputs(pair)
    return dict(input_ids=ids, attention_mask=mask, labels=labels)


def run_torch(model, x: dict):
    with torch.no_grad():
        return model(**{k: torch.tensor(v, dtype=torch.long) for k, v in x.items()})


def maxdiff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())


def test_inactive_adapter_is_bit_identical():
    """(conformance_tests checks the other sites; here GPT-2's fused c_attn LoRA.)"""
    pair, key = "bert2gpt2", "lora-all-leave1"
    _, plain, _ = build(pair)
    _, ours, _ = build(pair)
    x = batch(pair)
    want = np.asarray(plain(**x).logits)
    ours.add_adapter("a", ours_config(key))
    ours.load_adapter_state("a", random_adapter_state(ours, "a"))
    assert np.array_equal(np.asarray(ours(**x).logits), want)
    ours.set_active_adapters("a")
    ours.set_active_adapters(None)
    assert np.array_equal(np.asarray(ours(**x).logits), want)
    ours.set_active_adapters("a")
    ours.delete_adapter("a")
    assert np.array_equal(np.asarray(ours(**x).logits), want)
    assert flatten_dict(ours.params).keys() == flatten_dict(plain.params).keys()
    assert ours.module.adapter is None


def test_parameters_live_at_canonical_paths_and_survive_load_canonical():
    _, ours, _ = build("bert2bert", "seqbn-mh-leave0")
    layer = ours.params["encoder"]["encoder"]["layer"]["1"]
    assert layer["output"]["adapters"]["a"]["adapter_down"]["0"]["kernel"].shape == (32, 4)  # [in, out]
    assert "adapters" not in ours.params["encoder"]["encoder"]["layer"]["0"]["output"]  # leave_out=[0]
    state = ours.adapter_state("a")
    base = ours.canonical_state()
    assert not [k for k in base if ".adapters." in k]  # canonical_state is the base model only
    ours.load_canonical(base)
    assert all(np.array_equal(v, ours.adapter_state("a")[k]) for k, v in state.items())
    _, lora, _ = build("bert2gpt2", "lora-mlp-leave0")
    assert lora.params["decoder"]["transformer"]["h"]["1"]["mlp"]["c_fc"]["loras"]["a"]["lora_A"].shape == (2, 32)


def test_jit_forward_reads_adapter_from_params():
    _, ours, ref = build("bert2bert", "lora-all-leave1")
    x = batch("bert2bert")
    fwd = jax.jit(lambda params: ours(**x, params=params).logits)
    assert maxdiff(fwd(ours.params), run_torch(ref, x).logits) < TOL
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.zeros_like(leaf) if any(getattr(k, "key", None) == "lora_B" for k in path) else leaf, ours.params)
    without = fwd(zeroed)  # adapter still active: B = 0 must give the base model (B is an input, not a constant)
    ours.set_active_adapters(None)
    assert maxdiff(without, ours(**x).logits) < TOL


@pytest.mark.parametrize("pair,key", [("bert2bert", "seqbn"), ("bert2bert", "lora"), ("bert2gpt2", "seqbn-mh-leave0")])
def test_optax_training_updates_only_the_adapter(pair, key):
    _, ours, _ = build(pair, key)
    with pytest.raises(ValueError, match="train_adapter"):
        ours.adapter_param_labels()
    x = batch(pair)
    ours.train_adapter("a")
    labels = ours.adapter_param_labels()
    flat_labels = flatten_dict(labels)
    assert {k for k, v in flat_labels.items() if v == "trainable"} == {k for k in flat_labels if "a" in k}
    tx = optax.multi_transform({"trainable": optax.adam(1e-2), "frozen": optax.set_to_zero()}, ours.adapter_param_labels)
    params, before = ours.params, ours.params
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: ours(**x, params=p).loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(5):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    changed = {k for k, v in flatten_dict(params).items() if not np.array_equal(v, flatten_dict(before)[k])}
    assert changed and changed == {k for k, v in flat_labels.items() if v == "trainable"}


def test_adapter_dropout_runs_only_in_training():
    _, ours, ref = build("bert2bert")
    for name, rate in (("a", 0.5), ("same-without-dropout", 0.0)):
        ours.add_adapter(name, LoRAConfig(r=4, dropout=rate, init_weights="bert"))
    ref.add_adapter("a", LoRAConfig(r=4, dropout=0.5, init_weights="bert"))
    ref.load_adapter_state("a", ours.adapter_state("a"))
    ref.set_active_adapters("a")
    ref.eval()  # encdec_torch builds adapter modules in training mode even inside an eval() model
    x = batch("bert2bert")

    def run(name, seed=None):
        ours.set_active_adapters(name)
        rng = {} if seed is None else dict(train=True, dropout_rng=jax.random.PRNGKey(seed))
        return np.asarray(ours(**x, **rng).logits)

    assert maxdiff(run("a"), run_torch(ref, x).logits) < TOL  # not training: no dropout
    assert np.array_equal(run("a", 0), run("a", 0))
    # same adapter weights and base dropout masks (per-module rngs): only the adapter's dropout differs
    assert maxdiff(run("a", 0), run("same-without-dropout", 0)) > 1e-4


@pytest.mark.parametrize("pair,key", [("bert2bert", "lora-all-leave1"), ("bert2gpt2", "lora-all-leave1")])
def test_merge_lora_keeps_outputs_and_equals_torch(pair, key):
    _, ours, ref = build(pair, key)
    x = batch(pair)
    before = ours(**x).logits
    ours.merge_adapter("a")
    ref.merge_adapter("a")
    assert "a" not in ours.adapter_configs and ours.module.adapter is None
    assert not [k for k in flatten_dict(ours.params) if "loras" in k]
    assert maxdiff(ours(**x).logits, before) < TOL
    merged, want = ours.canonical_state(), ref.canonical_state()
    assert max(maxdiff(merged[k], want[k]) for k in want) < 1e-6


@pytest.mark.parametrize("pair,key,beams", [("bert2bert", "lora-all-leave1", 3), ("bert2gpt2", "seqbn-mh-leave0", 3),
                                            ("bert2gpt2", "lora-all-leave1", 1)])
def test_generate_with_adapter_equals_torch(pair, key, beams):
    """The cached decode (cross-attention keys/values computed once in init_cache) runs the
    adapter; changing the active adapter drops the compiled programs."""
    _, ours, ref = build(pair, key, std=0.3)
    ids, mask, _ = inputs(pair)
    kw = dict(max_length=8, num_beams=beams, do_sample=False)

    def both():
        with torch.no_grad():
            want = ref.generate(torch.tensor(ids, dtype=torch.long), torch.tensor(mask), **kw).numpy()
        return np.asarray(ours.generate(ids, mask, pad_to_max_length=False, **kw).sequences), want

    got, want = both()
    np.testing.assert_array_equal(got, want)
    assert len(ours._generate_programs) == 1
    for model in (ours, ref):
        model.set_active_adapters(None)
    assert not ours.__dict__.get("_generate_programs")
    base, want_base = both()
    np.testing.assert_array_equal(base, want_base)
    assert not np.array_equal(base, got)  # the adapter changes the ids


def test_params_without_the_active_adapter_are_refused():
    config, ours, _ = build("bert2bert", "lora")
    plain = FlaxEncoderDecoderModel(config, _do_init=False)
    plain.load_canonical(ours.canonical_state())
    with pytest.raises(ValueError, match="adapter 'a' is active but the params given lack its weights at "
                                         r"encoder\.encoder\.layer\.0\.attention\.self\.query\.loras\.a"):
        ours(**batch("bert2bert"), params=plain.params)
