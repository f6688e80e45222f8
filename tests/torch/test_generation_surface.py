"""PyTorch generate's transformers surface: use_cache=False, decoder prompts, encoder_outputs,
per-step scores/logits and transition scores, against transformers 4.57."""
import numpy as np
import pytest
import torch

from conformance_tests import oracle
from conformance_tests.pairs import PAIRS
from encdec.generation_logits import transition_scores
from encdec.init import init_weights
from encdec.runner import sample_inputs
from encdec.specs import encoder_decoder_spec
from encdec_torch import EncoderDecoderModel
from encdec_torch.generation import TorchOps

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair():
    config = next(p for p in PAIRS if p.id == "roberta2roberta").config()
    weights = init_weights(encoder_decoder_spec(config), seed=7, randomize_all=True)
    ours = EncoderDecoderModel(config=config).eval()
    ours.load_canonical(weights)
    inputs = sample_inputs(config, labels=False)
    return ours, oracle.torch_model(config, weights), torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"])


@pytest.mark.parametrize("settings", [
    dict(max_new_tokens=6, use_cache=False),
    dict(max_new_tokens=5, num_beams=2, use_cache=False),
    dict(max_new_tokens=5, decoder_input_ids=[[7, 9], [7, 4]]),
    dict(max_new_tokens=5, num_beams=2, decoder_input_ids=[[2, 9, 8], [2, 4, 4]]),
], ids=["greedy-nocache", "beam-nocache", "prompt", "beam-prompt"])
def test_ids_match_transformers(pair, settings):
    ours, hf, ids, mask = pair
    settings = {k: torch.tensor(v) if k == "decoder_input_ids" else v for k, v in settings.items()}
    with torch.no_grad():
        a = ours.generate(ids, attention_mask=mask, **settings)
        b = hf.generate(ids, attention_mask=mask, **settings)
    assert torch.equal(a, b), (a, b)


@pytest.mark.parametrize("settings", [dict(), dict(num_beams=3, num_return_sequences=2)], ids=["greedy", "beam"])
def test_scores_logits_and_transition_scores(pair, settings):
    ours, hf, ids, mask = pair
    kw = dict(max_new_tokens=5, return_dict_in_generate=True, output_scores=True, output_logits=True,
              repetition_penalty=1.2, **settings)
    with torch.no_grad():
        a = ours.generate(ids, attention_mask=mask, **kw)
        b = hf.generate(ids, attention_mask=mask, **kw)
        ref = hf.compute_transition_scores(b.sequences, b.scores, getattr(b, "beam_indices", None))
    assert torch.equal(a.sequences, b.sequences)
    for name in ("scores", "logits"):
        assert len(getattr(a, name)) == len(getattr(b, name))
        for x, y in zip(getattr(a, name), getattr(b, name)):
            assert x.shape == y.shape
            np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-4)  # -inf entries must match too
    mine = transition_scores(TorchOps(torch.device("cpu")), a.scores, a.sequences, a.beam_indices)
    np.testing.assert_allclose(mine.numpy(), ref.numpy(), atol=1e-4)


def test_encoder_outputs_and_bad_processor(pair):
    ours, _, ids, mask = pair
    with torch.no_grad():
        enc = ours.encode(ids, mask)
        a = ours.generate(ids, attention_mask=mask, max_new_tokens=4)
        b = ours.generate(attention_mask=mask, encoder_outputs=enc, max_new_tokens=4)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="logits processor"):
        ours.generate(ids, max_new_tokens=2, logits_processor=[lambda i, s: s[:, :3]])
    with pytest.raises(NotImplementedError, match="penalty_alpha"):
        ours.generate(ids, max_new_tokens=2, penalty_alpha=0.6)
