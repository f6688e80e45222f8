"""Time encdec_flax against transformers 4.57's FlaxEncoderDecoderModel in one process.

Workload (issue 4): bert-base encoder + gpt2 decoder with cross-attention, random fp32
weights, batch 4, source 128 tokens, target 64 tokens, 32 new tokens.  Measures the
jitted forward, greedy generate (steady state; the first call's compile time is reported
apart) and ``from_pretrained`` of the ~1 GB PyTorch-format ``model.safetensors``, and
prints each ratio ours / transformers (below 1 means we are faster).

    python benchmarks/bench_flax.py [--repeats 3] [--tiny] [--skip-hf]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any, Callable

os.environ.setdefault("USE_TF", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from encdec.configuration import BertConfig, EncoderDecoderConfig, GPT2Config  # noqa: E402
from encdec_flax import FlaxEncoderDecoderModel  # noqa: E402

BATCH, SOURCE, TARGET, NEW_TOKENS = 4, 128, 64, 32
START, PAD = 0, 0


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


def workload_config(tiny: bool) -> EncoderDecoderConfig:
    if tiny:  # a smoke-test size
        enc = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
        dec = GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, bos_token_id=98, eos_token_id=98)
    else:
        enc, dec = BertConfig(), GPT2Config()
    config = EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.decoder_start_token_id, config.pad_token_id = START, PAD
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="tiny config (smoke test)")
    parser.add_argument("--skip-hf", action="store_true", help="time encdec_flax only")
    args = parser.parse_args()

    config = workload_config(args.tiny)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config.encoder.vocab_size, (BATCH, SOURCE)).astype(np.int32)
    mask = np.ones((BATCH, SOURCE), np.int32)
    dec = rng.integers(1, config.decoder.vocab_size, (BATCH, TARGET)).astype(np.int32)
    eos = config.decoder.eos_token_id  # transformers' Flax generate takes it from the decoder config
    gen_kwargs = dict(max_new_tokens=NEW_TOKENS, decoder_start_token_id=START, pad_token_id=PAD, eos_token_id=eos)
    results: dict[str, dict[str, float]] = {"ours": {}, "hf": {}}

    with tempfile.TemporaryDirectory() as tmp:
        model, t = timed(lambda: FlaxEncoderDecoderModel(config, seed=0))
        print(f"portable init: {t:.2f}s ({model.num_parameters() / 1e6:.0f}M parameters)")
        model.save_pretrained(tmp)
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 1e9
        print(f"checkpoint: {size:.2f} GB model.safetensors (canonical = PyTorch names)")
        del model

        ours, results["ours"]["load"] = timed(lambda: FlaxEncoderDecoderModel.from_pretrained(tmp))
        forward = jax.jit(lambda p: ours(ids, mask, dec, params=p).logits)
        steady = {
            ("ours", "forward"): lambda: forward(ours.params),
            ("ours", "greedy"): lambda: ours.generate(ids, mask, **gen_kwargs).sequences,
        }
        _, results["ours"]["forward compile"] = timed(steady["ours", "forward"])
        out, results["ours"]["greedy compile"] = timed(steady["ours", "greedy"])
        print(f"ours: generated {out.shape[1] - 1} tokens per row")

        if not args.skip_hf:
            import transformers

            hf, results["hf"]["load"] = timed(lambda: transformers.FlaxEncoderDecoderModel.from_pretrained(tmp, from_pt=True))
            hf_forward = jax.jit(lambda p: hf(ids, mask, dec, params=p).logits)
            steady["hf", "forward"] = lambda: hf_forward(hf.params)
            steady["hf", "greedy"] = lambda: hf.generate(ids, attention_mask=mask, **gen_kwargs).sequences
            logits, results["hf"]["forward compile"] = timed(steady["hf", "forward"])
            diff = float(np.abs(np.asarray(forward(ours.params)) - np.asarray(logits)).max())
            print(f"max |logits ours - transformers| = {diff:.2e}")
            out_hf, results["hf"]["greedy compile"] = timed(steady["hf", "greedy"])
            print(f"transformers: generated {out_hf.shape[1] - 1} tokens per row; "
                  f"ids equal: {np.array_equal(np.asarray(out), np.asarray(out_hf))}")

        # steady state, interleaved so that load from other processes hits both sides alike
        for _ in range(args.repeats):
            for (who, name), fn in steady.items():
                _, t = timed(fn)
                results[who][name] = min(t, results[who].get(name, float("inf")))

    print(f"\n{'measure':<18}{'ours (s)':>10}{'transformers (s)':>18}{'ratio':>8}")
    for name, value in results["ours"].items():
        ref = results["hf"].get(name)
        ratio = f"{value / ref:8.2f}" if ref else f"{'-':>8}"
        print(f"{name:<18}{value:>10.3f}{(ref if ref else float('nan')):>18.3f}{ratio}")
    print("(compile rows are first calls: tracing + XLA compilation + one run)")


if __name__ == "__main__":
    main()
