"""encdec_flax against transformers 4.57's FlaxEncoderDecoderModel (both in this process).

Runs the shared workload of :mod:`harness` (bert-base + gpt2, batch 4, source 128, target 64,
32 new tokens) with interleaved repetitions: the jitted forward, greedy and beam-4 generate
(one compiled program each, transformers' generate wrapped in ``jax.jit``; the first
call's compile time is reported apart) and
``from_pretrained`` of the ~1 GB PyTorch-format ``model.safetensors`` + the first forward.
``--dtype bfloat16`` loads ours with bf16 parameters and computation.

    python benchmarks/bench_flax.py [--repeats 3] [--dtype bfloat16] [--quick] [--skip-hf]
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("USE_TF", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import harness  # noqa: E402
from encdec_flax import FlaxEncoderDecoderModel  # noqa: E402


class FlaxSide(harness.Side):
    first_forward = "forward op by op"

    def __init__(self, config, shape, dtype, theirs: bool = False) -> None:
        super().__init__(config, shape, dtype)
        self.theirs = theirs
        self.label = "transformers" if theirs else "encdec_flax"
        if theirs:
            import transformers

            transformers.logging.set_verbosity_error()
            self.cls = transformers.FlaxEncoderDecoderModel
        self.arrays = {k: jnp.asarray(v) for k, v in self.inputs.items()}

    def load(self, path: str) -> None:
        if self.theirs:
            self.model = self.cls.from_pretrained(path, from_pt=True)
        else:
            dtype = getattr(jnp, self.dtype)
            self.model = FlaxEncoderDecoderModel.from_pretrained(path, dtype=dtype, param_dtype=dtype)
        model = self.model
        self.jitted = {}
        self.forward = jax.jit(lambda p, ids, mask, dec: model(ids, mask, dec, params=p).logits)

    def workload(self, name: str):
        a, m = self.arrays, self.model
        if name == "forward":
            return lambda: np.asarray(self.forward(m.params, a["input_ids"], a["attention_mask"],
                                                   a["decoder_input_ids"]).astype(jnp.float32))
        if name == "forward op by op":  # a plain call: ours compiles it once per shape, transformers' runs op by op
            return lambda: np.asarray(m(a["input_ids"], a["attention_mask"], a["decoder_input_ids"]).logits)
        gen = harness.generate_kwargs(self.shape, beams=self.shape.beams if name == "beam" else 1)
        if self.theirs:  # transformers' Flax generate traces on every call unless jitted, as its docs do
            if name not in self.jitted:
                self.jitted[name] = jax.jit(lambda ids, mask: m.generate(ids, attention_mask=mask, **gen).sequences)
            return lambda: np.asarray(self.jitted[name](a["input_ids"], a["attention_mask"]))
        return lambda: np.asarray(m.generate(a["input_ids"], attention_mask=a["attention_mask"], **gen).sequences)

    def matmul(self, n: int, dtype: str):
        a = jnp.ones((n, n), getattr(jnp, dtype))
        f = jax.jit(lambda x: x @ x)
        return lambda: f(a).block_until_ready()


def main(argv=None):
    return harness.main(__doc__, "flax", FlaxSide, lambda *a: FlaxSide(*a, theirs=True), argv=argv)


if __name__ == "__main__":
    main()
