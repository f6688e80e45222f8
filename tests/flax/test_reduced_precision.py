"""bf16 / fp16 weights and activations through ``from_pretrained(dtype=..., param_dtype=...)``:
logits within the stated tolerance of fp32, the loss in fp32, greedy ids equal."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from encdec_flax import FlaxEncoderDecoderModel
from tests.core import reduced_precision as rp
from tests.core.reduced_precision import checkpoint  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def ref(checkpoint):
    return FlaxEncoderDecoderModel.from_pretrained(checkpoint)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_close_to_fp32(checkpoint, ref, dtype):
    half = FlaxEncoderDecoderModel.from_pretrained(checkpoint, dtype=getattr(jnp, dtype), param_dtype=dtype)
    assert {x.dtype for x in jax.tree_util.tree_leaves(half.params)} == {jnp.dtype(dtype)}
    x = rp.inputs()
    a, b = ref(**x), half(**x)
    assert b.loss.dtype == jnp.float32
    rp.check_close(dtype, a.logits, b.logits, a.loss, b.loss)
    if dtype == "float16":
        return  # one compiled generate per dtype is enough test time: greedy ids are checked in bf16
    gen = rp.generate_kwargs()
    ids = half.generate(x["input_ids"], attention_mask=x["attention_mask"], **gen).sequences
    assert ids.shape[1] == rp.NEW_TOKENS + 1
    assert np.array_equal(ids, ref.generate(x["input_ids"], attention_mask=x["attention_mask"], **gen).sequences)


def test_param_dtype_must_be_floating(checkpoint):
    with pytest.raises(ValueError, match="param_dtype"):
        FlaxEncoderDecoderModel.from_pretrained(checkpoint, param_dtype=jnp.int8)
