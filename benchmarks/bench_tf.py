"""encdec_tf (Keras 3) against transformers 4.57's TFEncoderDecoderModel.

Runs the shared workload of :mod:`harness` (bert-base + gpt2, batch 4, source 128, target 64,
32 new tokens) with interleaved repetitions.  Forward and generate run as XLA programs on
both sides (``tf.function(..., jit_compile=True)``; transformers' generate wrapped the way its
docs show); "forward eager" is the plain eager call.  transformers' TF classes need tf-keras,
so that side runs in a worker process with ``TF_USE_LEGACY_KERAS=1``, driven request by
request so the two sides still alternate.

    python benchmarks/bench_tf.py [--repeats 3] [--dtype bfloat16] [--quick] [--skip-hf]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


class TFSide(harness.Side):
    """Either implementation (which one depends on the Keras the process runs)."""

    first_forward = "forward eager"

    def __init__(self, config, shape, dtype, theirs: bool = False) -> None:
        super().__init__(config, shape, dtype)
        import tensorflow as tf

        self.tf, self.theirs = tf, theirs
        self.label = "transformers" if theirs else "encdec_tf"
        self.feed = {k: tf.constant(v) for k, v in self.inputs.items()}
        if theirs:
            import transformers

            transformers.logging.set_verbosity_error()
            self.cls = transformers.TFEncoderDecoderModel
        else:
            os.environ.setdefault("KERAS_BACKEND", "tensorflow")
            from encdec_tf import TFEncoderDecoderModel

            self.cls = TFEncoderDecoderModel

    def load(self, path: str) -> None:
        tf = self.tf
        if self.theirs:
            self.model = self.cls.from_pretrained(path, from_pt=True)
            self.generate = tf.function(self.model.generate, jit_compile=True)
        else:
            kw = {} if self.dtype == "float32" else {"dtype": self.dtype}
            self.model = self.cls.from_pretrained(path, **kw)
            self.generate = self.model.generate  # one XLA program already
        self.forward_xla = tf.function(lambda f: self.model(**f, use_cache=False).logits, jit_compile=True)
        self.programs = {}

    def workload(self, name: str):
        feed, m = self.feed, self.model
        if name == "forward":
            return lambda: self.tf.cast(self.forward_xla(feed), "float32").numpy()
        if name == "forward eager":
            return lambda: self.tf.cast(m(**feed, use_cache=False).logits, "float32").numpy()
        gen = harness.generate_kwargs(self.shape, beams=self.shape.beams if name == "beam" else 1)
        return lambda: self.generate(feed["input_ids"], attention_mask=feed["attention_mask"], **gen).numpy()

    def matmul(self, n: int, dtype: str):
        a = self.tf.random.normal((n, n), dtype=dtype)
        return lambda: self.tf.matmul(a, a).numpy()


def theirs(config, shape, dtype):
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "USE_TF": "1"}
    for name in ("KERAS_BACKEND", "USE_TORCH"):  # USE_TORCH=1 would hide transformers' TF classes
        env.pop(name, None)
    argv = [sys.executable, os.path.abspath(__file__), "--worker"] + (["--quick"] if shape.new_tokens < 32 else [])
    return harness.WorkerSide("transformers", argv, env)


def main(argv=None):
    return harness.main(__doc__, "tf", TFSide, theirs, worker=lambda *a: TFSide(*a, theirs=True),
                        extra_workloads=("forward eager",), argv=argv)


if __name__ == "__main__":
    main()
