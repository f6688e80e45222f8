"""bf16 / fp16 weights and activations through ``from_pretrained(dtype=...)``: every variable
in that dtype, float32 logits and loss within the stated tolerance of fp32, greedy ids equal."""
import numpy as np
import pytest

from encdec_tf import TFEncoderDecoderModel
from tests.core import reduced_precision as rp
from tests.core.reduced_precision import checkpoint  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def ref(checkpoint):
    return TFEncoderDecoderModel.from_pretrained(checkpoint)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_close_to_fp32(checkpoint, ref, dtype):
    half = TFEncoderDecoderModel.from_pretrained(checkpoint, dtype=dtype)
    assert {v.dtype for v in half.backend_variables.values()} == {dtype}
    x = rp.inputs()
    a, b = ref(**x), half(**x)
    assert b.logits.dtype == "float32" and b.loss.dtype == "float32"
    rp.check_close(dtype, a.logits, b.logits, a.loss, b.loss)
    if dtype == "float16":
        return  # one compiled generate per dtype is enough test time: greedy ids are checked in bf16
    gen = rp.generate_kwargs()
    ids = half.generate(x["input_ids"], attention_mask=x["attention_mask"], **gen).numpy()
    assert ids.shape[1] == rp.NEW_TOKENS + 1
    assert np.array_equal(ids, ref.generate(x["input_ids"], attention_mask=x["attention_mask"], **gen).numpy())


def test_from_pretrained_creates_variables_from_the_checkpoint(checkpoint, ref, monkeypatch):
    """The load path builds each variable holding its weight (no zero fill + assign):
    nothing falls back to load_canonical, and the weights round-trip exactly."""
    from encdec.pretrained import load_pretrained

    def refuse(*_):
        raise AssertionError("from_pretrained fell back to load_canonical")

    monkeypatch.setattr(TFEncoderDecoderModel, "load_canonical", refuse)
    model = TFEncoderDecoderModel.from_pretrained(checkpoint)
    _, weights, _, _ = load_pretrained(checkpoint)
    state = model.canonical_state()
    assert state.keys() == weights.keys()
    assert all(np.array_equal(state[k], weights[k]) for k in weights)
