"""TF backend benchmark: encdec_tf (Keras 3) vs transformers 4.57's TFEncoderDecoderModel.

Workload (issue 5): bert-base encoder + gpt2 decoder, random fp32 weights, batch 4,
source 128, target 64, greedy generation of 32 new tokens; forward (eager and XLA),
greedy generate with XLA (first-call compile time reported separately) and the load of
a ~1 GB PyTorch-format checkpoint (``model.safetensors``).  transformers' TF model needs
tf-keras, so it runs in its own process (``--hf-worker``) with ``TF_USE_LEGACY_KERAS=1``.

    python benchmarks/bench_tf.py [--repeats 3] [--skip-hf] [--tiny]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import numpy as np

BATCH, SOURCE, TARGET, NEW_TOKENS = 4, 128, 64, 32
START, PAD = 0, 0


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def workload_inputs(vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(1, vocab, (BATCH, SOURCE)).astype(np.int32),
        "attention_mask": np.ones((BATCH, SOURCE), np.int32),
        "decoder_input_ids": rng.integers(1, vocab, (BATCH, TARGET)).astype(np.int32),
    }


def make_checkpoint(directory: str, tiny: bool) -> None:
    from encdec.configuration import BertConfig, EncoderDecoderConfig, GPT2Config
    from encdec.init import init_weights
    from encdec.pretrained import save_pretrained
    from encdec.specs import encoder_decoder_spec

    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    enc = BertConfig(**small) if tiny else BertConfig()
    dec = GPT2Config(n_embd=64, n_layer=2, n_head=4) if tiny else GPT2Config()
    config = EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, decoder_start_token_id=START, pad_token_id=PAD)
    save_pretrained(directory, config, init_weights(encoder_decoder_spec(config), seed=0))


def generate_kwargs() -> dict[str, Any]:
    return dict(max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=PAD, decoder_start_token_id=START)


def measure(model: Any, load_s: float, generate: Callable[[Any, Any], Any], repeats: int) -> dict[str, float]:
    """Forward (eager, XLA) and XLA greedy generate timings for either implementation."""
    import tensorflow as tf

    res = {"load_s": load_s}
    feed = {k: tf.constant(v) for k, v in workload_inputs(min(model.config.encoder.vocab_size, model.config.decoder.vocab_size)).items()}
    model(**feed, use_cache=False)
    res["forward_eager_s"] = best_of(lambda: model(**feed, use_cache=False).logits.numpy(), repeats)
    xla_forward = tf.function(lambda f: model(**f, use_cache=False).logits, jit_compile=True)
    t = time.perf_counter()
    xla_forward(feed).numpy()
    res["forward_xla_compile_s"] = time.perf_counter() - t
    res["forward_xla_s"] = best_of(lambda: xla_forward(feed).numpy(), repeats)
    ids, mask = feed["input_ids"], feed["attention_mask"]
    t = time.perf_counter()
    out = generate(ids, mask)
    res["generate_xla_first_call_s"] = time.perf_counter() - t
    res["generate_xla_s"] = best_of(lambda: generate(ids, mask).numpy(), repeats)
    res["generated_length"] = int(out.shape[1])
    return res


def load_ours(checkpoint: str) -> tuple[Any, float]:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from encdec_tf import TFEncoderDecoderModel

    t = time.perf_counter()
    model = TFEncoderDecoderModel.from_pretrained(checkpoint)
    return model, time.perf_counter() - t


def run_ours(model: Any, load_s: float, repeats: int) -> dict[str, float]:
    return measure(model, load_s, lambda ids, mask: model.generate(ids, attention_mask=mask, **generate_kwargs()), repeats)


def run_hf(checkpoint: str, repeats: int) -> dict[str, float]:
    """transformers' TFEncoderDecoderModel in this (tf-keras) process."""
    import tensorflow as tf
    import transformers

    t = time.perf_counter()
    model = transformers.TFEncoderDecoderModel.from_pretrained(checkpoint, from_pt=True)
    load_s = time.perf_counter() - t
    xla_generate = tf.function(model.generate, jit_compile=True)
    return measure(model, load_s, lambda ids, mask: xla_generate(ids, attention_mask=mask, **generate_kwargs()), repeats)


def hf_in_subprocess(checkpoint: str, repeats: int) -> dict[str, float]:
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "USE_TF": "1"}
    for name in ("KERAS_BACKEND", "USE_TORCH"):  # USE_TORCH=1 would hide transformers' TF classes
        env.pop(name, None)
    proc = subprocess.run([sys.executable, __file__, "--hf-worker", checkpoint, "--repeats", str(repeats)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"transformers worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def combine(rounds: list[dict[str, float]], first_only: bool) -> dict[str, float]:
    """Best steady-state time over rounds; load/compile times from the first round for our
    in-process model (later rounds reuse it), the best round for transformers' fresh processes."""
    out = dict(rounds[0])
    for key in out:
        if key.endswith(("forward_eager_s", "forward_xla_s", "generate_xla_s")) or not first_only:
            out[key] = min(r[key] for r in rounds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per round (best kept)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both implementations")
    parser.add_argument("--skip-hf", action="store_true", help="time encdec_tf only")
    parser.add_argument("--tiny", action="store_true", help="tiny model (smoke test of the script)")
    parser.add_argument("--hf-worker", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hf_worker:
        print(json.dumps(run_hf(args.hf_worker, args.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(tmp, args.tiny)
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 1e9
        print(f"checkpoint: {size:.2f} GB; batch {BATCH}, source {SOURCE}, target {TARGET}, {NEW_TOKENS} new tokens")
        # Alternate the two implementations so that a drifting machine load hits both alike;
        # steady-state timings keep the best round, load and compile times the first.
        model, load_s = load_ours(tmp)
        ours_rounds, theirs_rounds = [], []
        for _ in range(args.rounds):
            ours_rounds.append(run_ours(model, load_s, args.repeats))
            if not args.skip_hf:
                theirs_rounds.append(hf_in_subprocess(tmp, args.repeats))
    ours = combine(ours_rounds, first_only=True)
    theirs = combine(theirs_rounds, first_only=False) if theirs_rounds else None
    print(f"{'metric':28s} {'encdec_tf':>10s} {'transformers':>13s} {'ratio':>7s}")
    for key, value in ours.items():
        ref = None if theirs is None else theirs.get(key)
        ratio = f"{value / ref:7.2f}" if ref and key != "generated_length" else ""
        print(f"{key:28s} {value:10.3f} {'' if ref is None else f'{ref:13.3f}'} {ratio}")
    if theirs is not None:
        print(f"forward ours XLA / transformers eager: {ours['forward_xla_s'] / theirs['forward_eager_s']:.2f}")


if __name__ == "__main__":
    main()
