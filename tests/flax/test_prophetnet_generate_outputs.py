"""Flax ``generate``'s cross-attentions with a ProphetNet decoder: transformers returns every
query stream (main + ``ngram`` predict streams) per decoded token; the PyTorch backend (equal
to transformers 4.57 in tests/torch) is the reference."""
import numpy as np
import pytest
import torch

from conformance_tests.conftest import pair_case
from encdec.generation import UnsupportedGenerationSetting
from encdec.runner import Runner, sample_inputs

TOL = 1e-5  # attention probabilities in fp32 (softmax outputs <= 1)


def test_prophetnet_cross_attentions_keep_every_stream():
    case = pair_case("bert2prophetnet")
    x = sample_inputs(case.config, batch=2, labels=False)
    ours = Runner.from_weights("flax", case.config, case.weights).model
    ref = Runner.from_weights("torch", case.config, case.weights).model
    kw = dict(max_new_tokens=3, eos_token_id=None, return_dict_in_generate=True, output_attentions=True)
    a = ours.generate(x["input_ids"], x["attention_mask"], pad_to_max_length=False, **kw)
    with torch.no_grad():
        b = ref.generate(torch.tensor(x["input_ids"]), attention_mask=torch.tensor(x["attention_mask"]), **kw)
    np.testing.assert_array_equal(np.asarray(a.sequences), b.sequences.numpy())
    streams = 1 + case.config.decoder.ngram
    for name in ("decoder_attentions", "cross_attentions"):
        assert len(getattr(a, name)) == len(getattr(b, name)) == 3
        for step_a, step_b in zip(getattr(a, name), getattr(b, name)):
            for layer_a, layer_b in zip(step_a, step_b):
                assert np.asarray(layer_a).shape == tuple(layer_b.shape), name
                assert np.abs(np.asarray(layer_a) - layer_b.numpy()).max() <= TOL, name
    assert a.cross_attentions[0][0].shape[2] == streams
    with pytest.raises(UnsupportedGenerationSetting, match="ProphetNet"):
        ours.generate(x["input_ids"], x["attention_mask"], use_cache=False, **kw)
