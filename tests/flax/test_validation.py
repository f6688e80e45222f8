"""The core input validator is wired into the Flax entry points (__call__, generate);
under ``jax.jit`` only shapes are checked."""
import jax
import numpy as np
import pytest

from encdec.validation import InputValidationError
from encdec_flax import FlaxEncoderDecoderModel
from tests.core.tiny import tiny_composite


@pytest.fixture(scope="module")
def model():
    return FlaxEncoderDecoderModel(tiny_composite())


def test_call_refuses_hostile_inputs(model):
    ids = np.full((2, 5), 3)
    with pytest.raises(InputValidationError, match=r"input_ids holds 99 .*\[0, 99\)"):  # NaN logits before
        model(np.full((2, 5), 99), decoder_input_ids=ids)
    with pytest.raises(InputValidationError, match=r"labels holds 120"):  # a wrong loss before
        model(ids, labels=np.full((2, 4), 120))
    with pytest.raises(InputValidationError, match=r"decoder_input_ids has 65 positions, but the decoder \(gpt2\) embeds at most 64"):
        model(ids, decoder_input_ids=np.full((2, 65), 3))
    with pytest.raises(InputValidationError, match=r"attention_mask holds nan at \(0, 0\)"):  # NaN logits before
        model(ids, attention_mask=jax.numpy.full((2, 5), jax.numpy.nan), decoder_input_ids=ids)
    with pytest.raises(InputValidationError, match="decoder_input_ids has batch size 3"):  # shapes are checked under jit
        jax.jit(lambda a, b: model(a, decoder_input_ids=b).logits)(ids, np.full((3, 4), 3))


def test_generate_refuses_wrapping_ids_and_long_outputs(model):
    with pytest.raises(InputValidationError, match=r"input_ids holds 4294967301"):  # read as 5 before
        model.generate(np.full((1, 4), 2**32 + 5, np.uint64), max_new_tokens=2)
    with pytest.raises(InputValidationError, match=r"max_length=300 .* exceeds the 64 positions"):
        model.generate(np.full((1, 4), 3), max_length=300)


def test_encode_and_decode_are_checked(model):
    ids = np.full((2, 5), 3)
    with pytest.raises(InputValidationError, match=r"input_ids holds 99"):
        model.encode(np.full((2, 5), 99))
    states = model.encode(ids)
    with pytest.raises(InputValidationError, match=r"decoder_input_ids holds -3"):
        model.decode(np.full((2, 1), -3), states)
    with pytest.raises(InputValidationError, match="decoder_input_ids has batch size 3 but encoder_outputs"):
        model.decode(np.full((3, 1), 3), states)
