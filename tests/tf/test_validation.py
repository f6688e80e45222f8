"""The core input validator is wired into the TensorFlow entry points (call, generate)."""
import numpy as np
import pytest
import tensorflow as tf

from encdec.validation import InputValidationError
from encdec_tf import TFEncoderDecoderModel
from tests.core.tiny import tiny_composite


@pytest.fixture(scope="module")
def model():
    return TFEncoderDecoderModel(tiny_composite())


def test_call_refuses_hostile_inputs(model):
    ids = np.full((2, 5), 3)
    with pytest.raises(InputValidationError, match=r"decoder_input_ids holds 4294967301"):
        model(input_ids=ids, decoder_input_ids=np.full((2, 5), 2**32 + 5, np.uint64))
    with pytest.raises(InputValidationError, match="input_ids must hold integer token ids; got dtype float32"):
        model(input_ids=tf.constant(ids, tf.float32), decoder_input_ids=ids)
    with pytest.raises(InputValidationError, match=r"attention_mask holds 0.5 at \(0, 0\)"):  # a half-masked key before
        model(input_ids=ids, attention_mask=tf.fill((2, 5), 0.5), decoder_input_ids=ids)


def test_generate_refuses_out_of_vocab_forced_bos(model):
    with pytest.raises(InputValidationError, match=r"forced_bos_token_id=99 is outside the decoder vocabulary \[0, 99\)"):
        model.generate(np.full((2, 5), 3), forced_bos_token_id=99, max_new_tokens=2)
    with pytest.raises(InputValidationError, match=r"input_ids holds -1"):
        model.generate(np.full((2, 5), -1), max_new_tokens=2)
