"""BertGeneration, XLM-RoBERTa and CamemBERT in the core: configs against transformers 4.57,
the paper's composite layout (shared weights) and part checkpoints in either role, the
RoBERTa aliases through specs, registry, part checkpoints and tf_model.h5 naming."""
import types

import numpy as np
import pytest

from encdec.configuration import (AutoConfig, BertGenerationConfig, CamembertConfig, EncoderDecoderConfig,
                                  XLMRobertaConfig)
from encdec.init import init_model_weights
from encdec.pretrained import load_part, load_pretrained, save_pretrained
from encdec.registry import family
from encdec.specs import decoder_spec, encoder_spec

from .tiny import part_kwargs


@pytest.fixture(scope="module")
def T():
    return pytest.importorskip("transformers")


def _state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _tiny_hf(T, cls, config_cls, **kw):
    import torch

    torch.manual_seed(0)
    return cls(config_cls(**kw)).eval()


def test_configs_match_transformers(T):
    for ours, theirs in ((BertGenerationConfig(), T.BertGenerationConfig()), (XLMRobertaConfig(), T.XLMRobertaConfig()),
                         (CamembertConfig(), T.CamembertConfig())):
        hf = theirs.to_dict()
        assert ours.model_type == hf["model_type"]
        for key, value in ours.to_dict().items():
            if key in hf:
                assert hf[key] == value, (ours.model_type, key)
        missing = {k for k in hf if k not in ours.to_dict()} - {"transformers_version", "output_attentions"}
        assert not {"vocab_size", "hidden_act", "layer_norm_eps", "position_embedding_type"} & missing
    assert "type_vocab_size" not in BertGenerationConfig().to_dict()  # no token types in BertGeneration
    assert AutoConfig.for_model("xlm-roberta").pad_token_id == 1 and family("camembert") == "roberta"


def test_bert_generation_has_no_token_types_pooler_or_transform():
    config = BertGenerationConfig(**part_kwargs("bert-generation"), is_decoder=True, add_cross_attention=True)
    names = set(decoder_spec(config).params)
    assert not any("token_type" in n or "pooler" in n or "transform" in n for n in names)
    assert {"lm_head.decoder.weight", "lm_head.bias", "lm_head.decoder.bias"} <= names
    assert not any("pooler" in n for n in encoder_spec(BertGenerationConfig(**part_kwargs("bert-generation"))).params)
    with pytest.raises(NotImplementedError, match="cross_attention_hidden_size=48"):
        decoder_spec(BertGenerationConfig(**part_kwargs("bert-generation"), is_decoder=True, add_cross_attention=True,
                                          cross_attention_hidden_size=48))
    with pytest.raises(ValueError, match=r"'t5' is not supported as an encoder; supported: .*bert-generation, .*camembert"):
        encoder_spec(types.SimpleNamespace(model_type="t5"))


@pytest.mark.parametrize("shared", [True, False])
def test_paper_composite_checkpoint_round_trip(T, tmp_path, shared):
    """transformers' EncoderDecoderModel of BertGeneration parts (the *_shared* checkpoints use
    tie_encoder_decoder) loads with every weight and is written back in a form it reads."""
    kw = part_kwargs("bert-generation")
    hc = T.EncoderDecoderConfig.from_encoder_decoder_configs(T.BertGenerationConfig(**kw), T.BertGenerationConfig(**kw),
                                                             tie_encoder_decoder=shared)
    import torch

    torch.manual_seed(0)
    hf = T.EncoderDecoderModel(config=hc).eval()
    hf.save_pretrained(tmp_path / "hf")
    config, weights, _, _ = load_pretrained(tmp_path / "hf")
    assert config.tie_encoder_decoder is shared and config.decoder.model_type == "bert-generation"
    ref = _state(hf)
    assert set(weights) == set(ref) and all(np.array_equal(weights[k], ref[k]) for k in ref)
    save_pretrained(tmp_path / "ours", config, weights)
    again = T.EncoderDecoderModel.from_pretrained(tmp_path / "ours").eval()
    assert all(np.array_equal(v, ref[k]) for k, v in _state(again).items())


def test_bert_generation_part_checkpoints_in_both_roles(T, tmp_path):
    kw = part_kwargs("bert-generation")
    enc_hf = _tiny_hf(T, T.BertGenerationEncoder, T.BertGenerationConfig, **kw)
    enc_hf.save_pretrained(tmp_path / "enc")
    enc = load_part(tmp_path / "enc", role="encoder")
    assert enc.initialized == [] and enc.unexpected == []
    assert all(np.array_equal(enc.weights[k], v) for k, v in _state(enc_hf).items())
    dec = load_part(tmp_path / "enc", role="decoder")  # an encoder checkpoint as decoder: bert. prefix added
    assert dec.unexpected == []
    assert set(dec.initialized) == {"lm_head.bias", "lm_head.decoder.bias"} | {n for n in dec.weights if ".crossattention." in n}
    np.testing.assert_array_equal(dec.weights["bert.encoder.layer.1.output.dense.weight"],
                                  _state(enc_hf)["encoder.layer.1.output.dense.weight"])
    np.testing.assert_array_equal(dec.weights["lm_head.decoder.weight"], _state(enc_hf)["embeddings.word_embeddings.weight"])

    dec_hf = _tiny_hf(T, T.BertGenerationDecoder, T.BertGenerationConfig, **kw, is_decoder=True, add_cross_attention=True)
    dec_hf.save_pretrained(tmp_path / "dec")
    dec = load_part(tmp_path / "dec", role="decoder")
    assert dec.initialized == [] and dec.unexpected == []
    assert all(np.array_equal(dec.weights[k], v) for k, v in _state(dec_hf).items())
    enc = load_part(tmp_path / "dec", role="encoder")  # a decoder checkpoint as encoder: bert. stripped, head dropped
    assert enc.initialized == []
    assert enc.config.is_decoder is False and enc.config.add_cross_attention is False
    # transformers saves the tied lm_head.decoder.{weight,bias} once, as embeddings / lm_head.bias
    assert set(enc.unexpected) == {"lm_head.bias"} | {k for k in _state(dec_hf) if ".crossattention." in k}
    np.testing.assert_array_equal(enc.weights["embeddings.position_embeddings.weight"],
                                  _state(dec_hf)["bert.embeddings.position_embeddings.weight"])


def test_roberta_alias_part_checkpoints(T, tmp_path):
    kw = part_kwargs("roberta")
    causal = _tiny_hf(T, T.XLMRobertaForCausalLM, T.XLMRobertaConfig, **kw, is_decoder=True)
    causal.save_pretrained(tmp_path / "xlmr")
    enc = load_part(tmp_path / "xlmr", role="encoder")  # roberta. stripped (the base prefix, not the model type)
    assert set(enc.unexpected) == {k for k in _state(causal) if k.startswith("lm_head.")} - {
        "lm_head.decoder.weight", "lm_head.decoder.bias"}  # tied: saved once
    assert enc.initialized == ["pooler.dense.weight", "pooler.dense.bias"]
    assert enc.config.model_type == "xlm-roberta"
    base = _tiny_hf(T, T.CamembertModel, T.CamembertConfig, **kw)
    base.save_pretrained(tmp_path / "camembert")
    dec = load_part(tmp_path / "camembert", role="decoder")
    np.testing.assert_array_equal(dec.weights["roberta.embeddings.word_embeddings.weight"],
                                  _state(base)["embeddings.word_embeddings.weight"])


def test_tf_h5(tmp_path):
    from encdec.checkpoint import read_weight_file

    config = EncoderDecoderConfig.from_encoder_decoder_configs(XLMRobertaConfig(**part_kwargs("roberta")),
                                                               CamembertConfig(**part_kwargs("roberta")))
    weights = init_model_weights(config)
    save_pretrained(tmp_path / "x", config, weights, format="tf-h5")  # transformers' TF naming of RoBERTa
    import h5py

    with h5py.File(tmp_path / "x" / "tf_model.h5") as f:
        assert any("/encoder/roberta/embeddings/" in n.decode() for n in f["encoder"].attrs["weight_names"])
    back = read_weight_file(str(tmp_path / "x" / "tf_model.h5"))
    assert all(np.array_equal(back[k], weights[k]) for k in back)

    bg = BertGenerationConfig(**part_kwargs("bert-generation"))
    config = EncoderDecoderConfig.from_encoder_decoder_configs(bg, BertGenerationConfig(**bg.to_dict()))
    with pytest.raises(NotImplementedError, match="bert-generation encoder: transformers has no TF model"):
        save_pretrained(tmp_path / "y", config, init_model_weights(config), format="tf-h5")


@pytest.mark.parametrize("model_type", ["bert", "roberta", "bert-generation"])
def test_relative_position_specs_match_transformers(T, model_type):
    """relative_key(_query): a ``distance_embedding`` per self-attention (not cross-attention);
    the absolute table stays in the state dict."""
    from encdec.configuration import config_class_for
    from encdec.specs import encoder_decoder_spec

    kw = dict(part_kwargs(model_type), max_position_embeddings=20, position_embedding_type="relative_key_query")
    ours = EncoderDecoderConfig.from_encoder_decoder_configs(config_class_for(model_type)(**kw),
                                                             config_class_for(model_type)(**kw))
    hf = T.EncoderDecoderModel(config=T.EncoderDecoderConfig.from_dict(ours.to_dict()))
    spec = encoder_decoder_spec(ours)
    assert {p.name: p.shape for p in spec} == {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    assert spec["decoder.bert.encoder.layer.1.attention.self.distance_embedding.weight" if model_type != "roberta" else
                "decoder.roberta.encoder.layer.1.attention.self.distance_embedding.weight"].shape == (39, 8)


def test_gpt2_attention_scale_follows_transformers_eager():
    from encdec.configuration import GPT2Config
    from encdec.specs.gpt2 import attention_scale

    base = dict(n_embd=32, n_head=4)  # head_dim 8
    assert attention_scale(GPT2Config(**base), 3) == pytest.approx(8 ** -0.5)
    assert attention_scale(GPT2Config(**base, scale_attn_weights=False), 3) == 1.0
    assert attention_scale(GPT2Config(**base, scale_attn_by_inverse_layer_idx=True), 3) == pytest.approx(8 ** -0.5 / 4)
    assert attention_scale(GPT2Config(**base, scale_attn_weights=False, scale_attn_by_inverse_layer_idx=True,
                                      reorder_and_upcast_attn=True), 1) == 0.5
