"""GenerationConfig I/O and validation; resolution into a DecodePlan."""
import json

import numpy as np
import pytest

from encdec import BertConfig, EncoderDecoderConfig, GPT2Config
from encdec.generation import GenerationConfig, beam_fill_token_id, default_attention_mask, resolve_generation

from .tiny import part_kwargs


def model_config(**kw):
    return EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(**part_kwargs("bert")), GPT2Config(**part_kwargs("gpt2")), **kw)


def test_round_trip_keeps_unknown_keys(tmp_path):
    cfg = GenerationConfig(num_beams=4, eos_token_id=[2, 3], early_stopping=True, extra={"my_key": 0.5})
    cfg.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "generation_config.json").read_text())
    assert data["my_key"] == 0.5 and data["eos_token_id"] == [2, 3]
    again = GenerationConfig.from_dict(data)
    assert again == cfg and again.eos_token_ids == [2, 3]


@pytest.mark.parametrize("kwargs,match", [
    ({"num_beams": 0}, "num_beams"),
    ({"num_return_sequences": 3, "num_beams": 2}, "num_return_sequences"),
    ({"do_sample": True, "num_beams": 2}, "beam sampling"),
    ({"temperature": 0.0}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"early_stopping": "sometimes"}, "early_stopping"),
    ({"eos_token_id": [1, "2"]}, "eos_token_id"),
    ({"max_length": 3.5}, "max_length"),
    ({"length_penalty": float("nan")}, "`length_penalty` must be a finite number"),
])
def test_contradictions_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GenerationConfig.from_dict(kwargs)


def test_resolution_from_model_config():
    cfg = model_config(decoder_start_token_id=7, pad_token_id=0)
    plan, rest = resolve_generation(cfg, None, {"max_new_tokens": 5, "attention_mask": "mask", "num_beams": 3})
    assert rest == {"attention_mask": "mask"}
    assert plan.max_length == 6 and plan.num_beams == 3 and plan.mode == "beam"
    assert plan.decoder_start_token_id == 7 and plan.pad_token_id == 0
    # GPT-2's eos comes from the decoder config, as transformers does
    assert plan.eos_token_ids == (50256,)


def test_resolution_errors():
    bert2bert = EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(**part_kwargs("bert")), BertConfig(**part_kwargs("bert")))
    with pytest.raises(ValueError, match="decoder start token"):
        resolve_generation(bert2bert, GenerationConfig(pad_token_id=0), {})
    # without decoder_start_token_id, the decoder's bos is the start token (GPT-2: 50256)
    plan, _ = resolve_generation(model_config(pad_token_id=0), None, {})
    assert plan.decoder_start_token_id == 50256
    with pytest.raises(ValueError, match="no room to generate"):
        resolve_generation(model_config(decoder_start_token_id=1, pad_token_id=0), None, {"max_length": 1})


def test_pad_defaults_to_eos():
    cfg = model_config(decoder_start_token_id=1)
    cfg.decoder.pad_token_id = None
    plan, _ = resolve_generation(cfg, None, {"eos_token_id": [4, 5]})
    assert plan.pad_token_id == 4 and plan.eos_token_ids == (4, 5)

    # neither pad nor eos: transformers generates to max_length and masks no input id by default
    cfg.decoder.eos_token_id = cfg.decoder.bos_token_id = None
    plan, _ = resolve_generation(cfg, None, {})
    assert plan.eos_token_ids == () and not plan.mask_pads
    ids = np.array([[5, 0, 0]])
    assert default_attention_mask(ids, plan, np).tolist() == [[1, 1, 1]]


def test_none_switches_off_and_warnings_as_transformers(caplog):
    """None turns a processor or warper off (transformers leaves it out); settings without
    effect warn as transformers 4.57 does (its logger's texts; a UserWarning for lengths)."""
    cfg = model_config(decoder_start_token_id=1, pad_token_id=0)
    plan, _ = resolve_generation(cfg, None, {"do_sample": True, "top_k": None, "temperature": None, "length_penalty": None})
    assert (plan.top_k, plan.temperature, plan.length_penalty) == (0, 1.0, 1.0)
    with caplog.at_level("WARNING", logger="encdec.generation"):
        resolve_generation(cfg, None, {"temperature": 0.5, "top_k": 10, "early_stopping": True, "max_length": 9,
                                       "max_new_tokens": 3})
    assert "not valid and may be ignored: ['early_stopping', 'temperature', 'top_k']" in caplog.text
    assert "Both `max_new_tokens` (=3) and `max_length` (=9)" in caplog.text
    with pytest.warns(UserWarning, match="Unfeasible length constraints"):
        resolve_generation(cfg, None, {"max_new_tokens": 3, "min_new_tokens": 5})


def test_beam_fill_token_is_transformers_rule():
    """pad; the first eos when the pad id is 0 (unset for transformers); -1 without eos."""
    cfg = model_config(decoder_start_token_id=1)
    fill = [beam_fill_token_id(resolve_generation(cfg, None, kw)[0]) for kw in (
        {"pad_token_id": 3, "eos_token_id": [4, 5]}, {"pad_token_id": 0, "eos_token_id": [4, 5]},
        {"pad_token_id": 0, "eos_token_id": None})]
    assert fill == [3, 4, -1]


def test_forced_ids_come_from_the_decoder_config():
    from encdec import BartConfig

    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(**part_kwargs("bert")), BartConfig(**part_kwargs("bart")), decoder_start_token_id=2, pad_token_id=1)
    plan, _ = resolve_generation(cfg, None, {})
    assert plan.forced_eos_token_ids == (2,) and plan.forced_bos_token_id is None
    plan, _ = resolve_generation(cfg, None, {"forced_eos_token_id": None, "forced_bos_token_id": 5})
    assert plan.forced_eos_token_ids == ()  # an explicit None switches it off, as in transformers
    assert plan.forced_bos_token_id == 5
    with pytest.raises(ValueError, match="forced_bos_token_id"):
        GenerationConfig.from_dict({"forced_bos_token_id": "0"})


def test_default_attention_mask_rule():
    import numpy as np

    from encdec.generation import default_attention_mask

    plan, _ = resolve_generation(model_config(decoder_start_token_id=1, pad_token_id=0), None, {})
    ids = np.array([[5, 6, 0], [7, 8, 9]])
    np.testing.assert_array_equal(default_attention_mask(ids, plan, np), [[1, 1, 0], [1, 1, 1]])
    plan, _ = resolve_generation(model_config(decoder_start_token_id=1, pad_token_id=0), None, {"eos_token_id": 0})
    np.testing.assert_array_equal(default_attention_mask(ids, plan, np), np.ones((2, 3)))  # pad is eos: no masking


def test_stop_ids_outside_vocabulary_match_no_token():
    """min_new_tokens bans the eos ids: one outside the vocabulary (GPT-2's 50256 on a small
    vocabulary) bans nothing, and a negative one must not index from the end."""
    from encdec.generation_logits import ArrayOps

    assert np.asarray(ArrayOps(np).in_set(5, (50256, -2, 1))).tolist() == [[False, True, False, False, False]]


@pytest.mark.parametrize("content", [b"[]", b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe"])
def test_hostile_generation_config_file_named(tmp_path, content):
    """Not an object, nested too deeply, not UTF-8: a ValueError naming the file."""
    (tmp_path / "generation_config.json").write_bytes(content)
    with pytest.raises(ValueError, match="generation_config.json"):
        GenerationConfig.from_pretrained(tmp_path)
