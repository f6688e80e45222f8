"""ProphetNet and RemBERT in the core: configs and buckets against transformers 4.57, refused
options, tf_model.h5 naming, and part checkpoints written by transformers mapped onto the
decoder / encoder specs (or refused in the wrong role)."""
import numpy as np
import pytest

from encdec.checkpoint import read_weight_file
from encdec.configuration import AutoConfig, EncoderDecoderConfig, ProphetNetConfig, RemBertConfig
from encdec.pretrained import load_part, save_pretrained
from encdec.specs import decoder_spec, encoder_decoder_spec
from encdec.specs.prophetnet import max_decoder_length, relative_buckets

from .tiny import part_kwargs


@pytest.fixture(scope="module")
def T():
    return pytest.importorskip("transformers")


def test_config_defaults_match_transformers(T):
    for ours, theirs in ((ProphetNetConfig(), T.ProphetNetConfig()), (RemBertConfig(), T.RemBertConfig())):
        hf = theirs.to_dict()
        for key, value in ours.to_dict().items():
            if key in hf:
                assert hf[key] == value, (ours.model_type, key)
    # transformers' RemBertConfig never ties the output embedding, whatever the input says
    assert RemBertConfig(tie_word_embeddings=True).tie_word_embeddings is False
    assert AutoConfig.for_model("prophetnet", is_decoder=True, num_decoder_layers=3).num_hidden_layers == 3


def test_relative_buckets_match_transformers(T):
    """Same float32 steps as transformers, so bucket edges agree exactly (exact and log ranges)."""
    import torch
    from transformers.models.prophetnet.modeling_prophetnet import compute_relative_buckets

    inverse = np.arange(-3, 3000)
    for buckets, distance in ((32, 128), (6, 12), (33, 127), (2, 2), (64, 1000)):
        ref = compute_relative_buckets(buckets, distance, torch.from_numpy(-inverse), False).numpy()
        np.testing.assert_array_equal(relative_buckets(buckets, distance, inverse), ref, err_msg=f"{buckets}/{distance}")


@pytest.mark.parametrize("change, error, match", [
    ({"ngram": 0}, ValueError, "ngram=0 must be at least 1"),  # refused by the config itself
    ({"pad_token_id": None}, ValueError, "pad_token_id must be an int"),
    ({"pad_token_id": 64}, ValueError, "pad_token_id must be an int"),
    ({"num_buckets": 1}, ValueError, "num_buckets=1 with relative_max_distance"),
    ({"num_buckets": 32, "relative_max_distance": 16}, ValueError, "relative_max_distance > num_buckets // 2"),
    ({"num_decoder_attention_heads": 5}, ValueError, "num_decoder_attention_heads"),
    ({"cross_attention_hidden_size": 48}, NotImplementedError, "cross_attention_hidden_size=48"),
])
def test_prophetnet_refusals_name_the_attribute(change, error, match):
    with pytest.raises(error, match=match):
        decoder_spec(ProphetNetConfig(**{**part_kwargs("prophetnet"), "is_decoder": True, **change}))


def test_prophetnet_length_limit():
    config = ProphetNetConfig(**part_kwargs("prophetnet"), pad_token_id=3)
    assert max_decoder_length(config) == 64 - 2 - 3  # predict positions reach pad + 1 + length


def test_rembert_refusals():
    with pytest.raises(NotImplementedError, match="cross_attention_hidden_size=48"):
        decoder_spec(RemBertConfig(**part_kwargs("rembert"), is_decoder=True, add_cross_attention=True,
                                   cross_attention_hidden_size=48))
    with pytest.raises(ValueError, match="needs is_decoder=True"):
        decoder_spec(RemBertConfig(**part_kwargs("rembert"), add_cross_attention=True))


def test_tf_h5_refused_for_prophetnet(tmp_path):
    from encdec.configuration import BertConfig
    from encdec.init import init_model_weights

    config = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**part_kwargs("bert")),
                                                               ProphetNetConfig(**part_kwargs("prophetnet")))
    with pytest.raises(NotImplementedError, match="prophetnet decoder: transformers has no TF model"):
        save_pretrained(tmp_path / "x", config, init_model_weights(config), format="tf-h5")
    assert not (tmp_path / "x").exists()  # nothing half-written


def _tiny_hf(T, cls, config_cls, **kw):
    import torch

    torch.manual_seed(0)
    return cls(config_cls(**kw)).eval()


def _state(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def test_prophetnet_part_checkpoints_map_onto_the_decoder(T, tmp_path):
    kw = part_kwargs("prophetnet")
    causal = _tiny_hf(T, T.ProphetNetForCausalLM, T.ProphetNetConfig, **kw)
    causal.save_pretrained(tmp_path / "causal")
    part = load_part(tmp_path / "causal", role="decoder")
    assert part.initialized == [] and part.unexpected == []
    reference = _state(causal)
    assert set(part.weights) == set(reference)
    assert all(np.array_equal(part.weights[k], reference[k]) for k in reference)

    # the decoder of a ProphetNetForConditionalGeneration / ProphetNetModel checkpoint, as transformers maps it
    for cls in (T.ProphetNetForConditionalGeneration, T.ProphetNetModel):
        full = _tiny_hf(T, cls, T.ProphetNetConfig, **kw)
        full.save_pretrained(tmp_path / cls.__name__)
        part = load_part(tmp_path / cls.__name__, role="decoder")
        state = _state(full)
        prefix = "prophetnet." if cls is T.ProphetNetForConditionalGeneration else ""
        assert part.initialized == [] and part.unexpected and all(".encoder." in f".{k}" for k in part.unexpected)
        np.testing.assert_array_equal(part.weights["prophetnet.decoder.layers.1.self_attn.relative_pos_embeddings.weight"],
                                      state[f"{prefix}decoder.layers.1.self_attn.relative_pos_embeddings.weight"])
        np.testing.assert_array_equal(part.weights["lm_head.weight"], state[f"{prefix}word_embeddings.weight"])

    with pytest.raises(ValueError, match="'prophetnet' is not supported as an encoder"):
        load_part(tmp_path / "causal", role="encoder")


def test_rembert_part_checkpoints_in_both_roles(T, tmp_path):
    kw = part_kwargs("rembert")
    base = _tiny_hf(T, T.RemBertModel, T.RemBertConfig, **kw)
    base.save_pretrained(tmp_path / "base")
    enc = load_part(tmp_path / "base", role="encoder")
    assert enc.initialized == [] and enc.unexpected == []
    assert all(np.array_equal(enc.weights[k], v) for k, v in _state(base).items())

    dec = load_part(tmp_path / "base", role="decoder")  # a base model as decoder: head and cross-attention are new
    assert "pooler.dense.weight" in dec.unexpected
    assert "cls.predictions.decoder.weight" in dec.initialized
    assert any(".crossattention." in n for n in dec.initialized)
    np.testing.assert_array_equal(dec.weights["rembert.encoder.embedding_hidden_mapping_in.weight"],
                                  _state(base)["encoder.embedding_hidden_mapping_in.weight"])

    causal = _tiny_hf(T, T.RemBertForCausalLM, T.RemBertConfig, **kw, is_decoder=True, add_cross_attention=True)
    causal.save_pretrained(tmp_path / "causal")
    dec = load_part(tmp_path / "causal", role="decoder")
    assert dec.initialized == [] and dec.unexpected == []
    enc = load_part(tmp_path / "causal", role="encoder")  # the LM head is dropped, the base model kept
    assert set(enc.unexpected) == {k for k in _state(causal) if k.startswith("cls.") or ".crossattention." in k}
    assert enc.config.is_decoder is False and enc.config.add_cross_attention is False
    assert "pooler.dense.weight" in enc.initialized


@pytest.mark.oracle_subprocess
def test_rembert_tf_h5_names_equal_transformers(T, tmp_path):
    """Our tf_model.h5 of rembert2rembert holds transformers' TF names, layouts and values
    (the output embedding ``decoder/weight`` kept [vocab, output_embedding_size])."""
    import os
    import subprocess
    import sys

    from encdec.pretrained import load_pretrained

    config = EncoderDecoderConfig.from_encoder_decoder_configs(RemBertConfig(**part_kwargs("rembert")),
                                                               RemBertConfig(**part_kwargs("rembert")))
    hf = T.EncoderDecoderModel(config=T.EncoderDecoderConfig.from_dict(config.to_dict()))
    hf.save_pretrained(tmp_path / "pt", safe_serialization=False)
    script = ("import sys, transformers; transformers.TFEncoderDecoderModel.from_pretrained(sys.argv[1], from_pt=True)"
              ".save_pretrained(sys.argv[2])")
    env = {k: v for k, v in os.environ.items() if k not in ("USE_TF", "USE_TORCH", "KERAS_BACKEND")}
    env.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "pt"), str(tmp_path / "tf")], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config, weights, _, _ = load_pretrained(tmp_path / "pt")
    save_pretrained(tmp_path / "ours", config, weights, format="tf-h5")

    import h5py

    def text(value):
        return value.decode() if isinstance(value, bytes) else str(value)

    def entries(path):
        with h5py.File(path) as f:
            return {(text(layer), text(name)): np.asarray(f[text(layer)][text(name)]) for layer in f.attrs["layer_names"]
                    for name in f[text(layer)].attrs["weight_names"]}

    ours, theirs = entries(tmp_path / "ours" / "tf_model.h5"), entries(tmp_path / "tf" / "tf_model.h5")
    assert set(ours) == set(theirs)
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    back = read_weight_file(tmp_path / "tf" / "tf_model.h5")
    spec = encoder_decoder_spec(config)
    assert set(back) == {p.name for p in spec.untied}
    assert all(np.array_equal(back[k], weights[k]) for k in back)
