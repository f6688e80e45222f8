"""Checkpoints both ways with transformers 4.57, and composite models from part checkpoints."""
from __future__ import annotations

import logging

import pytest
import torch

from encdec_torch import EncoderDecoderModel, GenerationConfig
from tests.torch.helpers import build_pair, inputs, make_config, max_diff, part_kwargs

TOL = 1e-5


@pytest.mark.parametrize("pair", ["bert2gpt2", "roberta2roberta", "bert2bart", "bert48-gpt2-proj"])
def test_transformers_checkpoint_loads_here_and_ours_loads_there(pair, tmp_path):
    import transformers

    config, _, ours, hf = build_pair(pair)
    x = inputs(config)
    hf.save_pretrained(tmp_path / "hf")
    ours.save_pretrained(tmp_path / "ours")
    assert (tmp_path / "ours" / "model.safetensors").exists()
    assert (tmp_path / "ours" / "generation_config.json").exists()
    mine = EncoderDecoderModel.from_pretrained(tmp_path / "hf")
    theirs = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "ours")
    assert not mine.training
    with torch.no_grad():
        ref = hf(**x).logits
        assert max_diff(mine(**x).logits, ref) <= TOL
        assert max_diff(theirs(**x).logits, ref) <= TOL


def test_tied_model_round_trip_and_pytorch_bin(tmp_path):
    import transformers

    config, _, ours, hf = build_pair("bert2bert", tie_encoder_decoder=True)
    x = inputs(config)
    ours.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "pytorch_model.bin").exists()
    again = EncoderDecoderModel.from_pretrained(tmp_path)
    assert again.decoder.bert.embeddings.word_embeddings.weight is again.encoder.embeddings.word_embeddings.weight
    theirs = transformers.EncoderDecoderModel.from_pretrained(tmp_path)
    with torch.no_grad():
        ref = ours(**x).logits
        assert max_diff(again(**x).logits, ref) == 0
        assert max_diff(theirs(**x).logits, ref) <= TOL


def test_from_pretrained_options(tmp_path):
    config, _, ours, _ = build_pair("bert2gpt2")
    ours.generation_config = GenerationConfig(max_length=7, num_beams=2, decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)
    ours.save_pretrained(tmp_path)
    half = EncoderDecoderModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16, local_files_only=True)
    assert half.dtype == torch.bfloat16
    assert half.generation_config.num_beams == 2 and half.generation_config.max_length == 7
    x = inputs(config)
    assert half.generate(x["input_ids"]).shape[1] <= 7
    override = EncoderDecoderModel.from_pretrained(tmp_path, decoder_start_token_id=5)
    assert override.config.decoder_start_token_id == 5
    with pytest.raises(ValueError, match="torch_dtype"):
        EncoderDecoderModel.from_pretrained(tmp_path, torch_dtype="int8")
    with pytest.raises(TypeError, match="no_such_option"):
        EncoderDecoderModel.from_pretrained(tmp_path, no_such_option=1)


def _save_parts(tmp_path):
    """A transformers BertModel and GPT2LMHeadModel (no cross-attention) saved apart."""
    import transformers

    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(**part_kwargs("bert"))).eval()
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(**part_kwargs("gpt2"))).eval()
    bert.save_pretrained(tmp_path / "bert")
    gpt2.save_pretrained(tmp_path / "gpt2")
    return bert, gpt2


def test_from_encoder_decoder_pretrained_with_plain_part_checkpoints(tmp_path, caplog):
    bert, gpt2 = _save_parts(tmp_path)
    with caplog.at_level(logging.INFO, logger="encdec_torch.modeling_encoder_decoder"):
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(
            tmp_path / "bert", tmp_path / "gpt2", decoder_resid_pdrop=0.0, encoder_hidden_dropout_prob=0.0,
            pad_token_id=0,
        )
    assert not model.training
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
    assert model.config.decoder.resid_pdrop == 0.0 and model.config.encoder.hidden_dropout_prob == 0.0
    assert model.config.pad_token_id == 0  # unprefixed keywords reach the composite config
    model.config.decoder_start_token_id = 2
    state = model.canonical_state()
    for name, value in bert.state_dict().items():
        assert (state[f"encoder.{name}"] == value.numpy()).all(), name
    for name, value in gpt2.state_dict().items():
        if name in ("lm_head.weight",) or ".attn.bias" in name:
            continue
        assert (state[f"decoder.{name}"] == value.numpy()).all(), name
    messages = [r.getMessage() for r in caplog.records if "newly initialized" in r.getMessage()]
    assert len(messages) == 1 and "crossattention" in messages[0]
    x = inputs(model.config)
    with torch.no_grad():
        bert_states = bert(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).last_hidden_state
        assert max_diff(model(**x).encoder_last_hidden_state, bert_states) <= TOL


def test_from_encoder_decoder_pretrained_with_instances_and_errors(tmp_path):
    _save_parts(tmp_path)
    first = EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "bert", tmp_path / "gpt2")
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(
        encoder_model=first.encoder, decoder_pretrained_model_name_or_path=tmp_path / "gpt2")
    assert model.encoder is first.encoder
    with pytest.raises(ValueError, match="decoder_pretrained_model_name_or_path"):
        EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="composite"):
        first.save_pretrained(tmp_path / "composite")
        EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "composite", tmp_path / "gpt2")


def test_from_encoder_decoder_pretrained_initialises_the_projection(tmp_path, caplog):
    import transformers

    transformers.BertModel(transformers.BertConfig(**part_kwargs("bert", hidden=48))).save_pretrained(tmp_path / "bert")
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**part_kwargs("gpt2"))).save_pretrained(tmp_path / "gpt2")
    with caplog.at_level(logging.INFO, logger="encdec_torch.modeling_encoder_decoder"):
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "bert", tmp_path / "gpt2")
    assert "enc_to_dec_proj.weight" in caplog.text
    proj = model.enc_to_dec_proj
    assert tuple(proj.weight.shape) == (32, 48) and float(proj.bias.abs().max()) == 0.0
    assert abs(float(proj.weight.std()) - 0.02) < 0.005


def test_save_in_another_framework_format_and_load_back(tmp_path):
    config, _, ours, _ = build_pair("bert2bart")
    assert ours.save_pretrained(tmp_path, format="flax-msgpack")[-1] == "flax_model.msgpack"
    again = EncoderDecoderModel.from_pretrained(tmp_path)
    x = inputs(config)
    with torch.no_grad():
        assert max_diff(again(**x).logits, ours(**x).logits) == 0


def test_load_state_dict_changed_on_one_side_of_a_tie():
    """``state_dict()`` gives tie targets as copies (for safetensors' Trainer checkpoints); a
    dict changed on one side of a tie loads that side into the shared parameter, whichever
    side it is, as shared memory gives transformers' models (its
    ``load_flax_weights_in_pytorch_model`` sets only the word embeddings)."""
    model = EncoderDecoderModel(make_config("bert2bert")).eval()
    source, tied = "decoder.bert.embeddings.word_embeddings.weight", "decoder.cls.predictions.decoder.weight"
    for changed in (source, tied):
        state = model.state_dict()
        new = torch.randn_like(state[changed])
        state[changed] = new
        model.load_state_dict(state)
        assert torch.equal(model.decoder.bert.embeddings.word_embeddings.weight, new), changed
        assert model.decoder.cls.predictions.decoder.weight is model.decoder.bert.embeddings.word_embeddings.weight
    with torch.device("meta"):  # big-model loading: nothing to compare with, the load assigns
        empty = EncoderDecoderModel(make_config("bert2bert"))
    empty.load_state_dict(model.state_dict(), assign=True)
    assert torch.equal(empty.decoder.bert.embeddings.word_embeddings.weight, model.decoder.bert.embeddings.word_embeddings.weight)
