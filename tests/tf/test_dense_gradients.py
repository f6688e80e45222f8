"""train_step hands the optimizer dense gradients: Keras 3's Adam squares an IndexedSlices
gradient slice by slice, so a token id repeated in the batch would get the sum of its slices'
squares as second moment instead of the square of their sum (and MirroredStrategy, which
concatenates the replicas' slices, would drift from one device; tests/tf/test_distributed.py)."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from encdec_tf import TFEncoderDecoderModel  # noqa: E402
from tests.torch.helpers import make_config  # noqa: E402

LR = 1e-3


class RecordingAdam(keras.optimizers.Adam):
    """Adam that records the type of each gradient it is given."""

    def apply_gradients(self, grads_and_vars):
        grads_and_vars = list(grads_and_vars)
        self.seen = {type(g).__name__ for g, _ in grads_and_vars}
        return super().apply_gradients(grads_and_vars)


def test_repeated_token_takes_a_full_first_adam_step():
    model = TFEncoderDecoderModel(make_config("bert2bert"), seed=0)
    table = "encoder.embeddings.word_embeddings.weight"
    before = model.canonical_state()[table]
    ids = np.array([[7, 7, 7, 9, 11, 13]], np.int32)  # token 7 three times: three slices of one row
    optimizer = RecordingAdam(LR)
    model.compile(optimizer=optimizer, jit_compile=False, run_eagerly=True)
    model.train_on_batch({"input_ids": ids, "labels": np.array([[5, 6, 8, 10]], np.int32)})
    assert optimizer.seen == {"EagerTensor"}  # no IndexedSlices reach the optimizer
    step = np.abs(model.canonical_state()[table][7] - before[7])
    # Adam's first step is lr * g / (|g| + eps'): lr wherever |g| >> eps'; slice by slice it
    # would be lr * |sum of slices| / sqrt(sum of squares), anywhere from 0 to sqrt(3) * lr
    assert step.max() <= LR * (1 + 1e-4)
    assert np.median(step) == pytest.approx(LR, rel=1e-2)
