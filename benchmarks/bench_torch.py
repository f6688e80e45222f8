"""Time encdec_torch against transformers 4.57's EncoderDecoderModel in one process.

Workload (issue 3): bert-base encoder + gpt2 decoder with cross-attention, random fp32
weights, batch 4, source 128 tokens, target 64 tokens, 32 new tokens.  Measures forward,
greedy generate, beam-4 generate and ``from_pretrained`` of the ~1 GB checkpoint followed by one
forward (so deferred page-ins of a memory-mapped load count), and prints
each ratio ours / transformers (below 1 means we are faster).  ``--bf16`` adds the opt-in
rows: ours with bfloat16 weights (``torch_dtype=torch.bfloat16``) against transformers in fp32.

    python benchmarks/bench_torch.py [--repeats 3] [--threads N] [--skip-load] [--bf16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")

import torch  # noqa: E402

from encdec.configuration import BertConfig, EncoderDecoderConfig, GPT2Config  # noqa: E402
from encdec.init import init_weights  # noqa: E402
from encdec.specs import encoder_decoder_spec  # noqa: E402
from encdec_torch import EncoderDecoderModel  # noqa: E402

BATCH, SOURCE, TARGET, NEW = 4, 128, 64, 32


def build():
    import transformers

    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(), GPT2Config(), decoder_start_token_id=101, pad_token_id=0, eos_token_id=50256)
    weights = init_weights(encoder_decoder_spec(config), seed=0)
    ours = EncoderDecoderModel(config).eval()
    ours.load_canonical(weights)
    theirs = transformers.EncoderDecoderModel(config=transformers.EncoderDecoderConfig.from_dict(config.to_dict())).eval()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    return ours, theirs


def timed(ours, theirs, repeats: int) -> tuple[float, float]:
    """Median seconds of ``ours()`` and ``theirs()``, run alternately after one warm-up each
    (alternating keeps the ratio fair when other load on the machine comes and goes)."""
    ours(), theirs()
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((ours, a), (theirs, b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def parser_for(doc: str) -> argparse.ArgumentParser:
    """The options every torch benchmark takes: ``--repeats`` and ``--threads``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    return parser


def setup(args: argparse.Namespace):
    """Threads, quiet transformers, seed; then ``(ours, theirs, input_ids, attention_mask)``."""
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    ours, theirs = build()
    ids = torch.randint(1000, 30000, (BATCH, SOURCE))
    return ours, theirs, ids, torch.ones_like(ids)


def main() -> None:
    import transformers

    parser = parser_for(__doc__)
    parser.add_argument("--skip-load", action="store_true", help="skip the checkpoint-loading timing")
    parser.add_argument("--bf16", action="store_true", help="also time ours in bfloat16 (opt-in) against fp32 transformers")
    args = parser.parse_args()
    ours, theirs, ids, mask = setup(args)
    dec = torch.randint(1000, 50000, (BATCH, TARGET))
    gen = dict(max_new_tokens=NEW, min_new_tokens=NEW)

    def forward(model):
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, use_cache=False).logits

    def greedy(model):
        with torch.no_grad():
            return model.generate(ids, attention_mask=mask, **gen)

    def beam(model):
        with torch.no_grad():
            return model.generate(ids, attention_mask=mask, num_beams=4, **gen)

    assert torch.equal(greedy(ours), greedy(theirs)), "greedy ids differ"
    assert torch.equal(beam(ours), beam(theirs)), "beam ids differ"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} alternating runs")
    print(f"{'workload':28s} {'ours s':>9s} {'transformers s':>15s} {'ratio':>7s}", flush=True)

    def report(name: str, a: float, b: float) -> None:
        print(f"{name:28s} {a:9.3f} {b:15.3f} {a / b:7.2f}", flush=True)

    workloads = (("forward", forward), ("greedy generate", greedy), ("beam-4 generate", beam))
    for name, fn in workloads:
        report(name, *timed(lambda: fn(ours), lambda: fn(theirs), args.repeats))
    if args.bf16:
        ours.to(torch.bfloat16)
        for name, fn in workloads:
            report(f"{name} [ours bf16]", *timed(lambda: fn(ours), lambda: fn(theirs), args.repeats))
        ours.to(torch.float32)
    if not args.skip_load:
        with tempfile.TemporaryDirectory() as tmp:
            ours.save_pretrained(tmp)
            size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 1e9
            # load + first forward: a loader that maps the file defers its reads to the forward
            report(f"load+forward ({size:.2f} GB)", *timed(
                lambda: forward(EncoderDecoderModel.from_pretrained(tmp)),
                lambda: forward(transformers.EncoderDecoderModel.from_pretrained(tmp)), args.repeats))


if __name__ == "__main__":
    main()
