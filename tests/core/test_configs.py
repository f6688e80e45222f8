"""Configs: defaults, JSON round trips both ways with transformers 4.57, bad input."""
import json
import subprocess
import sys

import pytest

from encdec import AutoConfig, BertConfig, EncoderDecoderConfig, GPT2Config, RobertaConfig
from encdec.configuration import PretrainedConfig

from .tiny import part_kwargs


def test_import_is_framework_free():
    code = "import encdec, encdec.specs, encdec.layout, encdec.init, sys; " \
           "bad = {'torch','tensorflow','jax','flax','transformers'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_and_unknown_keys_survive(tmp_path):
    cfg = BertConfig(hidden_size=64, my_custom_key={"a": [1, 2]})
    assert cfg.num_attention_heads == 12 and cfg.pad_token_id == 0
    cfg.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "bert" and data["my_custom_key"] == {"a": [1, 2]}
    again = BertConfig.from_pretrained(tmp_path)
    assert again == cfg and again.my_custom_key == {"a": [1, 2]}
    assert BertConfig.from_pretrained(tmp_path, hidden_size=128).hidden_size == 128
    assert RobertaConfig().pad_token_id == 1


def test_encoder_decoder_config_sets_decoder_flags():
    e, d = BertConfig(**part_kwargs("bert")), GPT2Config(**part_kwargs("gpt2"))
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(e, d, decoder_start_token_id=5)
    assert cfg.decoder.is_decoder and cfg.decoder.add_cross_attention
    assert not cfg.encoder.is_decoder
    assert cfg.is_encoder_decoder and cfg.model_type == "encoder-decoder"
    assert cfg.decoder_start_token_id == 5 and cfg.vocab_size == 99 and cfg.tie_encoder_decoder is False
    assert cfg.encoder is e and cfg.decoder is d
    again = EncoderDecoderConfig.from_dict(json.loads(cfg.to_json_string()))
    assert again == cfg and isinstance(again.decoder, GPT2Config)


def test_encoder_decoder_config_needs_both_parts():
    with pytest.raises(ValueError, match="needs both `encoder` and `decoder`"):
        EncoderDecoderConfig(encoder=BertConfig())
    with pytest.raises(TypeError, match="`decoder` must be a config or a dict"):
        EncoderDecoderConfig(encoder=BertConfig(), decoder=3)


def test_bad_input(tmp_path):
    with pytest.raises(TypeError, match=r"BertConfig.hidden_size must be int, got str"):
        BertConfig(hidden_size="32")
    with pytest.raises(TypeError, match="num_hidden_layers must be int, got bool"):
        BertConfig(num_hidden_layers=True)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    with pytest.raises(ValueError, match=r"unknown model_type 't5'.*supported model types: bart, bert, bert-generation, camembert, electra, encoder-decoder, gpt2, .*prophetnet, .*rembert, .*roberta, xlm-roberta"):
        AutoConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        AutoConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="expects model_type='gpt2'"):
        GPT2Config.from_dict({"model_type": "bert"})
    with pytest.raises(FileNotFoundError):
        BertConfig.from_pretrained(tmp_path / "missing")


@pytest.mark.parametrize("key,value,match", [
    ("num_attention_heads", 0, "num_attention_heads=0 must be at least 1"),  # ZeroDivisionError before
    ("vocab_size", -5, "vocab_size=-5 must be at least 1"),
    ("num_hidden_layers", 10**9, "more than 10000 layers"),  # building the spec hung before
    ("layer_norm_eps", float("nan"), "layer_norm_eps=nan must be a finite number"),  # NaN outputs before
    ("to_dict", 1, "'to_dict' would replace the config's own method"),  # broke save_pretrained before
])
def test_hostile_config_values_refused(tmp_path, key, value, match):
    """A hostile config.json fails at load with the field named, before any model is built."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", key: value}))
    with pytest.raises(ValueError, match=match):
        AutoConfig.from_pretrained(tmp_path)


HF_PAIRS = [("bert", "bert"), ("bert", "gpt2"), ("roberta", "roberta"), ("electra", "gpt2"), ("bert", "bart")]


@pytest.mark.parametrize("enc,dec", HF_PAIRS, ids=lambda x: x)
def test_round_trip_with_transformers(tmp_path, enc, dec):
    transformers = pytest.importorskip("transformers")
    hf_cls = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
              "electra": transformers.ElectraConfig, "gpt2": transformers.GPT2Config, "bart": transformers.BartConfig}
    hf = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        hf_cls[enc](**part_kwargs(enc)), hf_cls[dec](**part_kwargs(dec)),
        decoder_start_token_id=3, pad_token_id=0, eos_token_id=2)
    hf.save_pretrained(tmp_path / "hf")
    ours = AutoConfig.from_pretrained(tmp_path / "hf")
    assert isinstance(ours, EncoderDecoderConfig)
    assert ours.decoder.is_decoder and ours.decoder.add_cross_attention
    assert (ours.decoder_start_token_id, ours.pad_token_id, ours.eos_token_id) == (3, 0, 2)
    assert ours.decoder.vocab_size == 99 and ours.encoder.num_hidden_layers == 2

    ours.save_pretrained(tmp_path / "ours")
    back = transformers.EncoderDecoderConfig.from_pretrained(tmp_path / "ours")
    strip = ("transformers_version", "_name_or_path", "torch_dtype", "dtype")

    def norm(d):
        return {k: (norm(v) if isinstance(v, dict) else v) for k, v in d.items() if k not in strip}

    hf_dict, back_dict = norm(hf.to_dict()), norm(back.to_dict())
    for part in ("encoder", "decoder"):
        for key, value in hf_dict[part].items():
            assert back_dict[part].get(key) == value, (part, key)
    for key in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "is_encoder_decoder", "model_type"):
        assert back_dict[key] == hf_dict[key]


def test_base_config_dispatches_on_model_type(tmp_path):
    GPT2Config(n_embd=16, n_head=2).save_pretrained(tmp_path)
    cfg = PretrainedConfig.from_pretrained(tmp_path)
    assert isinstance(cfg, GPT2Config) and cfg.hidden_size == 16 and cfg.num_attention_heads == 2


def test_set_attn_implementation_rule():
    from encdec.configuration import BertConfig, set_attn_implementation

    cfg = BertConfig()
    assert cfg._attn_implementation is None
    assert set_attn_implementation(cfg, None, False, "ProphetNetForCausalLM") == "eager"
    assert set_attn_implementation(cfg, None, True, "BertModel") == "eager"  # the config's choice stays
    with pytest.raises(ValueError, match="ProphetNetForCausalLM does not support attn_implementation='sdpa'"):
        set_attn_implementation(cfg, "sdpa", False, "ProphetNetForCausalLM")
    assert "_attn_implementation" not in str(cfg.to_dict())
