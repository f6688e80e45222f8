"""Kwarg routing, label shifting and output containers: the semantics every backend shares."""
import numpy as np
import pytest

from encdec.labels import shift_tokens_right
from encdec.outputs import Seq2SeqLMOutput
from encdec.routing import check_no_unknown, split_forward_kwargs, split_pretrained_kwargs


def test_forward_routing():
    enc, dec = split_forward_kwargs({"token_type_ids": 1, "decoder_head_mask": 2, "position_ids": 3, "decoder_position_ids": 4})
    assert enc == {"token_type_ids": 1, "position_ids": 3}
    assert dec == {"head_mask": 2, "position_ids": 4}


def test_pretrained_routing():
    enc, dec, rest = split_pretrained_kwargs(
        {"encoder_hidden_dropout_prob": 0.0, "decoder_model": "m", "decoder_start_token_id": 5, "revision": "x"})
    assert enc == {"hidden_dropout_prob": 0.0}
    assert dec == {"model": "m", "start_token_id": 5}
    assert rest == {"revision": "x"}


def test_unknown_kwargs_error_names_them():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): bogus, zzz"):
        check_no_unknown("forward", {"zzz": 1, "bogus": 2}, ["input_ids"])
    check_no_unknown("forward", {}, ["input_ids"])


def test_shift_tokens_right_hand_computed():
    labels = np.array([[5, 6, 7, -100], [8, -100, -100, -100]])
    out = shift_tokens_right(labels, pad_token_id=0, decoder_start_token_id=2)
    np.testing.assert_array_equal(out, [[2, 5, 6, 7], [2, 8, 0, 0]])
    assert labels[0, 3] == -100  # input untouched


@pytest.mark.parametrize("pad,start,match", [(0, None, "decoder_start_token_id"), (None, 2, "pad_token_id")])
def test_shift_tokens_right_errors(pad, start, match):
    with pytest.raises(ValueError, match=f"set `{match}` on the model config"):
        shift_tokens_right(np.zeros((1, 3), int), pad, start)


def test_shift_tokens_right_in_torch():
    torch = pytest.importorskip("torch")
    labels = torch.tensor([[5, -100, 7]])
    out = shift_tokens_right(labels, 1, 4, xp=torch)
    assert out.tolist() == [[4, 5, 1]] and out.dtype == torch.int64


def test_output_access_modes():
    out = Seq2SeqLMOutput(logits=np.ones(2), encoder_last_hidden_state=np.zeros(1))
    assert out.loss is None
    assert list(out.keys()) == ["logits", "encoder_last_hidden_state"]
    assert out[0] is out.logits and out["encoder_last_hidden_state"] is out[1]
    assert len(out.to_tuple()) == 2
    out.loss = np.float32(3.0)
    assert out["loss"] == 3.0
    with pytest.raises(KeyError):
        out["cross_attentions"]


def test_decoder_inputs_from_labels_masks_pads():
    from encdec.labels import decoder_inputs_from_labels

    labels = np.array([[5, 6, -100], [7, 1, 8]])
    ids, mask = decoder_inputs_from_labels(labels, pad_token_id=1, decoder_start_token_id=2)
    np.testing.assert_array_equal(ids, [[2, 5, 6], [2, 7, 1]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 0]])
    given = np.ones((2, 3), np.int64)
    assert decoder_inputs_from_labels(labels, 1, 2, given)[1] is given
