"""bf16 / fp16 weights and activations loaded through ``from_pretrained(torch_dtype=...)``:
logits within the stated tolerance of fp32, the loss in fp32, greedy ids equal."""
import numpy as np
import pytest
import torch

from encdec_torch import EncoderDecoderModel
from tests.core import reduced_precision as rp
from tests.core.reduced_precision import checkpoint  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def ref(checkpoint):
    return EncoderDecoderModel.from_pretrained(checkpoint)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_close_to_fp32(checkpoint, ref, dtype):
    half = EncoderDecoderModel.from_pretrained(checkpoint, torch_dtype=dtype)
    assert {p.dtype for p in half.parameters()} == {getattr(torch, dtype)}
    x = {k: torch.from_numpy(v) for k, v in rp.inputs().items()}
    with torch.no_grad():
        a, b = ref(**x), half(**x)
    assert b.loss.dtype == torch.float32
    rp.check_close(dtype, a.logits, b.logits.float(), a.loss, b.loss)
    if dtype == "float16":
        return  # one compiled generate per dtype is enough test time: greedy ids are checked in bf16
    gen = rp.generate_kwargs()
    ids = half.generate(x["input_ids"], attention_mask=x["attention_mask"], **gen)
    assert ids.shape[1] == rp.NEW_TOKENS + 1
    assert np.array_equal(ids, ref.generate(x["input_ids"], attention_mask=x["attention_mask"], **gen))
