"""A decoder position whose self-attention row is fully masked (``decoder_start_token_id ==
pad_token_id``: the mask derived from the shifted labels is 0 at position 0).  transformers
4.57's GPT-2 under SDPA (its default) gives that row a zero attention output; every backend
matches it (logits and loss to 1e-5)."""
from __future__ import annotations

import numpy as np
import pytest

from conformance_tests.conftest import max_abs, require
from encdec.configuration import BertConfig, EncoderDecoderConfig, GPT2Config
from encdec.init import init_weights
from encdec.runner import Runner, sample_inputs
from encdec.specs import encoder_decoder_spec

_REF: dict = {}


def _case():
    if "case" not in _REF:
        pytest.importorskip("transformers")
        import torch
        import transformers

        config = EncoderDecoderConfig.from_encoder_decoder_configs(
            BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                       max_position_embeddings=64),
            GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64),
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=3)
        weights = init_weights(encoder_decoder_spec(config), seed=1, randomize_all=True)
        inputs = sample_inputs(config, labels=True)
        hf = transformers.EncoderDecoderModel(transformers.EncoderDecoderConfig.from_dict(config.to_dict())).eval()
        assert hf.config.decoder._attn_implementation == "sdpa"
        hf.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
        with torch.no_grad():
            ref = hf(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        _REF["case"] = config, weights, inputs, ref.logits.numpy(), float(ref.loss)
    return _REF["case"]


def test_fully_masked_gpt2_row_matches_transformers_sdpa(backend):
    require(backend)
    config, weights, inputs, logits, loss = _case()
    out = Runner.from_weights(backend, config, weights).forward(**inputs)
    assert max_abs(out["logits"], logits) <= 1e-5
    assert abs(float(out["loss"]) - loss) <= 1e-5
