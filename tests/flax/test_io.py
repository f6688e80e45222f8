"""Checkpoints through the core: our safetensors / msgpack read by transformers (PyTorch
and Flax) and theirs read here, with identical logits; building from part checkpoints."""
import logging

import numpy as np
import pytest
import torch

from encdec_flax import FlaxEncoderDecoderModel
from tests.flax.conftest import hf_config, hf_pt_model
from tests.flax.test_modeling import TOL, build, decoder_inputs, inputs, maxdiff


def pt_logits(model, ids, mask, dec):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                     decoder_input_ids=torch.tensor(dec, dtype=torch.long)).logits.numpy()


@pytest.mark.parametrize("pair", ["bert2gpt2", "projection"])
def test_safetensors_round_trip_and_transformers_reads_it(pair, tmp_path):
    import transformers

    cfg, _, model = build(pair)
    ids, mask, labels = inputs(pair)
    dec = decoder_inputs(cfg, labels)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    ours = model(ids, mask, dec).logits
    again = FlaxEncoderDecoderModel.from_pretrained(tmp_path)
    assert maxdiff(again(ids, mask, dec).logits, ours) == 0
    theirs = transformers.EncoderDecoderModel.from_pretrained(tmp_path).eval()
    assert maxdiff(pt_logits(theirs, ids, mask, dec), ours) < TOL


def test_msgpack_round_trip_and_transformers_flax_reads_it(tmp_path):
    import transformers

    cfg, _, model = build("bert2bart")
    ids, mask, labels = inputs("bert2bart")
    dec = decoder_inputs(cfg, labels)
    model.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "flax_model.msgpack").exists() and not (tmp_path / "model.safetensors").exists()
    ours = model(ids, mask, dec).logits
    again = FlaxEncoderDecoderModel.from_pretrained(tmp_path, from_flax=True)
    assert maxdiff(again(ids, mask, dec).logits, ours) == 0
    theirs = transformers.FlaxEncoderDecoderModel.from_pretrained(tmp_path)
    assert maxdiff(theirs(ids, mask, dec).logits, ours) < TOL


def test_reads_transformers_pytorch_checkpoint(tmp_path):
    cfg, weights, model = build("roberta2roberta")
    ids, mask, labels = inputs("roberta2roberta")
    dec = decoder_inputs(cfg, labels)
    pt = hf_pt_model(cfg, weights)
    pt.save_pretrained(tmp_path)
    ours = FlaxEncoderDecoderModel.from_pretrained(tmp_path, from_pt=True)
    assert maxdiff(ours(ids, mask, dec).logits, pt_logits(pt, ids, mask, dec)) < TOL
    with pytest.raises(TypeError, match="bogus"):
        FlaxEncoderDecoderModel.from_pretrained(tmp_path, bogus=1)


def test_from_encoder_decoder_pretrained(tmp_path, caplog):
    import transformers

    cfg, weights, _ = build("bert2gpt2")
    hf = hf_config(cfg)
    encoder = transformers.BertModel(hf.encoder).eval()
    decoder_cfg = transformers.GPT2Config(**{k: v for k, v in hf.decoder.to_dict().items() if k != "add_cross_attention"})
    decoder_cfg.add_cross_attention, decoder_cfg.is_decoder = False, False
    decoder = transformers.GPT2LMHeadModel(decoder_cfg).eval()
    encoder.save_pretrained(tmp_path / "enc")
    decoder.save_pretrained(tmp_path / "dec")
    with caplog.at_level(logging.INFO, logger="encdec_flax.modeling_encoder_decoder"):
        model = FlaxEncoderDecoderModel.from_encoder_decoder_pretrained(
            tmp_path / "enc", tmp_path / "dec", decoder_resid_pdrop=0.0, pad_token_id=5)
    assert "crossattention" in caplog.text
    assert model.config.decoder.add_cross_attention and model.config.decoder.resid_pdrop == 0.0
    assert model.config.pad_token_id == 5 and model.config.decoder.pad_token_id is None
    state = model.canonical_state()
    for name, value in encoder.state_dict().items():
        np.testing.assert_array_equal(state[f"encoder.{name}"], value.numpy())
    np.testing.assert_array_equal(state["decoder.transformer.h.1.mlp.c_fc.weight"],
                                  decoder.state_dict()["transformer.h.1.mlp.c_fc.weight"].numpy())
    ids, mask, _ = inputs("bert2gpt2")
    with torch.no_grad():
        ref = encoder(torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
    assert maxdiff(model.encode(ids, mask).last_hidden_state, ref) < TOL
    with pytest.raises(TypeError, match="bogus"):
        FlaxEncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "enc", tmp_path / "dec", bogus=1)
