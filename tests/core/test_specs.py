"""Specs against transformers 4.57: names, shapes and tie groups equal state_dict()."""
import numpy as np
import pytest

from encdec import configuration as C
from encdec.init import init_weights
from encdec.layout import Layout, from_backend, to_backend
from encdec.specs import KINDS, encoder_decoder_spec, needs_projection

from .tiny import PAIRS, pair_id, part_kwargs


def ours(pair):
    enc, dec, hidden, extra = pair
    e = C.config_class_for(enc)(**part_kwargs(enc, hidden))
    d = C.config_class_for(dec)(**part_kwargs(dec))
    return C.EncoderDecoderConfig.from_encoder_decoder_configs(e, d, **extra)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_spec_matches_transformers_state_dict(pair):
    transformers = pytest.importorskip("transformers")
    enc, dec, hidden, extra = pair
    hf_cls = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
              "electra": transformers.ElectraConfig, "gpt2": transformers.GPT2Config, "bart": transformers.BartConfig,
              "prophetnet": transformers.ProphetNetConfig, "rembert": transformers.RemBertConfig,
              "bert-generation": transformers.BertGenerationConfig, "xlm-roberta": transformers.XLMRobertaConfig,
              "camembert": transformers.CamembertConfig}
    hc = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        hf_cls[enc](**part_kwargs(enc, hidden)), hf_cls[dec](**part_kwargs(dec)), **extra)
    model = transformers.EncoderDecoderModel(config=hc)
    state = model.state_dict()
    spec = encoder_decoder_spec(ours(pair))
    assert {p.name: p.shape for p in spec} == {k: tuple(v.shape) for k, v in state.items()}

    by_ptr: dict[int, set[str]] = {}
    for k, v in state.items():
        by_ptr.setdefault(v.data_ptr(), set()).add(k)
    hf_groups = {frozenset(g) for g in by_ptr.values() if len(g) > 1}
    our_groups: dict[str, set[str]] = {}
    for tied, source in spec.ties.items():
        our_groups.setdefault(source, {source}).add(tied)
    assert {frozenset(g) for g in our_groups.values()} == hf_groups


def test_projection_rule():
    assert needs_projection(ours(("bert", "gpt2", 48, {})))
    assert not needs_projection(ours(("bert", "gpt2", 32, {})))
    cfg = ours(("bert", "gpt2", 48, {}))
    cfg.decoder.cross_attention_hidden_size = 48
    spec = encoder_decoder_spec(cfg)
    assert "enc_to_dec_proj.weight" not in spec
    # cross-attention then reads 48-wide encoder states directly
    assert spec["decoder.transformer.h.0.crossattention.c_attn.weight"].shape == (48, 64)


def test_tie_encoder_decoder_needs_same_type():
    cfg = ours(("bert", "gpt2", 32, {}))
    cfg.tie_encoder_decoder = True
    with pytest.raises(ValueError, match="same model type"):
        encoder_decoder_spec(cfg)


def test_unsupported_options_refused():
    with pytest.raises(NotImplementedError, match="position_embedding_type"):
        encoder_decoder_spec(C.EncoderDecoderConfig(
            encoder=C.BertConfig(position_embedding_type="rotary", **part_kwargs("bert")),
            decoder=C.GPT2Config(**part_kwargs("gpt2"))))
    with pytest.raises(NotImplementedError, match="hidden_act='xielu' is not implemented"):
        from encdec.activations import check_activation

        check_activation("xielu", "hidden_act")


def test_unknown_model_type_lists_supported():
    cfg = ours(("bert", "gpt2", 32, {}))
    cfg.decoder.model_type = "t5"  # instance attribute shadows the class value
    with pytest.raises(ValueError, match=r"supported: bart, bert, .*gpt2, .*prophetnet, .*rembert, .*roberta"):
        encoder_decoder_spec(cfg)


def test_portable_init_is_deterministic_and_tied():
    spec = encoder_decoder_spec(ours(("bert", "bert", 32, {})))
    a = init_weights(spec, seed=3, randomize_all=True)
    b = init_weights(spec, seed=3, randomize_all=True)
    c = init_weights(spec, seed=4, randomize_all=True)
    assert set(a) == set(spec.params)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["encoder.pooler.dense.weight"], c["encoder.pooler.dense.weight"])
    tied = "decoder.cls.predictions.decoder.weight"
    assert a[tied] is a[spec.ties[tied]]
    plain = init_weights(spec, seed=3)
    assert np.all(plain["encoder.pooler.dense.bias"] == 0)
    assert np.all(plain["encoder.embeddings.LayerNorm.weight"] == 1)
    assert all(a[p.name].shape == p.shape and a[p.name].dtype == np.float32 for p in spec)


def test_layout_round_trip_flax_style():
    layout = Layout(
        leaf={"linear": "kernel", "conv1d": "kernel", "embedding": "embedding",
              "norm_scale": "scale", "norm_bias": "bias", "bias": "bias"},
        transpose=frozenset({"linear", "conv1d"}),
    )
    spec = encoder_decoder_spec(ours(("bert", "gpt2", 48, {})))
    w = init_weights(spec, seed=0, randomize_all=True)
    backend = to_backend(w, spec, layout)
    assert backend["encoder.embeddings.LayerNorm.scale"] is not None
    assert backend["enc_to_dec_proj.kernel"].shape == (48, 32)
    assert backend["decoder.transformer.h.0.attn.c_attn.kernel"].shape == (96, 32)
    assert "decoder.lm_head.kernel" not in backend  # tie target held once
    back = from_backend(backend, spec, layout)
    assert set(back) == set(w) and all(np.array_equal(back[k], w[k]) for k in w)
    with pytest.raises(KeyError, match="enc_to_dec_proj.kernel"):
        from_backend({k: v for k, v in backend.items() if k != "enc_to_dec_proj.kernel"}, spec, layout)
    with pytest.raises(ValueError, match="misses kinds"):
        Layout(leaf={"linear": "kernel"})
    assert set(KINDS) == set(layout.leaf)


def test_model_init_uses_each_parts_initializer_range():
    from encdec.init import init_model_weights

    cfg = ours(("bert", "gpt2", 48, {}))
    cfg.encoder.initializer_range, cfg.decoder.initializer_range = 0.5, 0.01
    w = init_model_weights(cfg, seed=1)
    spec = encoder_decoder_spec(cfg)
    assert set(w) == set(spec.params)
    assert 0.4 < w["encoder.embeddings.word_embeddings.weight"].std() < 0.6
    assert 0.005 < w["decoder.transformer.wte.weight"].std() < 0.015
    assert 0.005 < w["enc_to_dec_proj.weight"].std() < 0.015
    assert np.array_equal(w["encoder.pooler.dense.weight"], init_model_weights(cfg, seed=1)["encoder.pooler.dense.weight"])
    assert w["decoder.lm_head.weight"] is w["decoder.transformer.wte.weight"]
