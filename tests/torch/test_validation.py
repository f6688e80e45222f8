"""The core input validator is wired into the PyTorch entry points (forward, generate)."""
import pytest
import torch

from encdec.validation import InputValidationError
from encdec_torch import EncoderDecoderModel
from tests.core.tiny import tiny_composite


@pytest.fixture(scope="module")
def model():
    return EncoderDecoderModel(tiny_composite(), seed=0).eval()


def test_forward_refuses_hostile_inputs(model):
    ids = torch.full((2, 5), 3)
    with pytest.raises(InputValidationError, match=r"input_ids holds 99 .*\[0, 99\)"):
        model(input_ids=torch.full((2, 5), 99), decoder_input_ids=ids)
    # an all-ones mask of another batch size was silently broadcast before
    with pytest.raises(InputValidationError, match="attention_mask has batch size 1 but input_ids has batch size 2"):
        model(input_ids=ids, attention_mask=torch.ones(1, 5, dtype=torch.long), decoder_input_ids=ids)
    with pytest.raises(InputValidationError, match=r"labels holds -7"):
        model(input_ids=ids, labels=torch.full((2, 4), -7))
    with pytest.raises(InputValidationError, match=r"inputs_embeds holds nan at \(0, 0, 0\)"):  # NaN logits before
        model(inputs_embeds=torch.full((2, 5, 32), float("nan"), requires_grad=True), decoder_input_ids=ids)


def test_generate_refuses_out_of_vocab_start_and_long_outputs(model):
    ids = torch.full((2, 5), 3)
    with pytest.raises(InputValidationError, match=r"decoder_start_token_id=120 is outside the decoder vocabulary"):
        model.generate(ids, decoder_start_token_id=120, max_new_tokens=2)
    with pytest.raises(InputValidationError, match=r"max_length=65 .* 64 positions"):
        model.generate(ids, max_length=65)
