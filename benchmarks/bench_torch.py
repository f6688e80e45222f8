"""encdec_torch against transformers 4.57's EncoderDecoderModel (both in this process).

Runs the shared workload of :mod:`harness` (bert-base + gpt2, batch 4, source 128, target 64,
32 new tokens; forward, greedy, beam 4, load + first forward of the ~1 GB checkpoint) with
interleaved repetitions and prints ours / transformers and ours / the machine's bound.
``--dtype bfloat16`` loads ours with ``torch_dtype=torch.bfloat16`` (transformers stays fp32).

    python benchmarks/bench_torch.py [--repeats 3] [--dtype bfloat16] [--quick] [--skip-hf]
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import harness  # noqa: E402
from encdec.configuration import BertConfig, EncoderDecoderConfig, GPT2Config  # noqa: E402
from encdec.init import init_weights  # noqa: E402
from encdec.specs import encoder_decoder_spec  # noqa: E402
from encdec_torch import EncoderDecoderModel  # noqa: E402

BATCH, SOURCE, TARGET, NEW = 4, 128, 64, 32


class TorchSide(harness.Side):
    """Either implementation: they share the call surface."""

    def __init__(self, config, shape, dtype, theirs: bool = False) -> None:
        super().__init__(config, shape, dtype)
        self.theirs = theirs
        self.label = "transformers" if theirs else "encdec_torch"
        self.t = {k: torch.from_numpy(v).long() for k, v in self.inputs.items()}
        if theirs:  # imported here: the load figure must not include the import
            import transformers

            transformers.logging.set_verbosity_error()
            self.cls = transformers.EncoderDecoderModel

    def load(self, path: str) -> None:
        if self.theirs:
            self.model = self.cls.from_pretrained(path).eval()
        else:
            self.model = EncoderDecoderModel.from_pretrained(path, torch_dtype=getattr(torch, self.dtype))

    def workload(self, name: str):
        t, m = self.t, self.model
        gen = harness.generate_kwargs(self.shape, beams=self.shape.beams if name == "beam" else 1)

        @torch.no_grad()
        def call():
            if name == "forward":
                out = m(input_ids=t["input_ids"], attention_mask=t["attention_mask"],
                        decoder_input_ids=t["decoder_input_ids"], use_cache=False).logits
                return out.float().numpy()
            return m.generate(t["input_ids"], attention_mask=t["attention_mask"], **gen).numpy()

        return call

    def matmul(self, n: int, dtype: str):
        a = torch.randn(n, n, dtype=getattr(torch, dtype))
        return lambda: a @ a


# --- helpers bench_adapters.py uses: an in-memory pair with the same weights ------------------
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


timed = harness.interleaved


def parser_for(doc: str):
    """``--repeats`` and ``--threads``, for bench_adapters.py."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    return parser


def setup(args):
    """Threads, quiet transformers, seed; then ``(ours, theirs, input_ids, attention_mask)``."""
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    ours, theirs = build()
    ids = torch.randint(1000, 30000, (BATCH, SOURCE))
    return ours, theirs, ids, torch.ones_like(ids)


def main(argv=None):
    return harness.main(__doc__, "torch", TorchSide, lambda *a: TorchSide(*a, theirs=True), argv=argv)


if __name__ == "__main__":
    main()
