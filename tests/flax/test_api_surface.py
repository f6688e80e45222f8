"""transformers 4.57's surface in the Flax backend (issue 12): part objects (module +
params) as HF part checkpoints, ``from_encoder_decoder_pretrained`` with built parts and its
missing-argument error, ``tie_encoder_decoder`` keeping the decoder's side, transformers
configs accepted, output flags from the config, a given causal-LM part made a decoder, transformers'
pt<->flax converters on our models; transformers' PyTorch classes as oracle."""
from __future__ import annotations

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from encdec_flax import (  # noqa: E402
    BertConfig,
    EncoderDecoderConfig,
    FlaxBertForCausalLM,
    FlaxBertModel,
    FlaxEncoderDecoderModel,
    FlaxGPT2LMHeadModel,
    GPT2Config,
)

KW = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
          max_position_embeddings=64)
IDS = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 1, 1]])
MASK = np.array([[1] * 6, [1, 1, 1, 1, 0, 0]])
DEC = np.array([[2, 20, 21, 22], [2, 23, 24, 25]])


@pytest.fixture(scope="module")
def hf_berts(tmp_path_factory):
    """Two different transformers BertModel checkpoints."""
    root = tmp_path_factory.mktemp("hf_flax_parts")
    models = []
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        m = transformers.BertModel(transformers.BertConfig(**KW)).eval()
        m.save_pretrained(root / name)
        models.append(m)
    return root, models


def test_part_objects_are_hf_part_checkpoints(hf_berts, tmp_path):
    root, (bert, _) = hf_berts
    ours = FlaxBertModel.from_pretrained(root / "a")
    assert set(ours.params) == {"embeddings", "encoder", "pooler"}
    ref = bert(torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state.detach().numpy()
    assert np.abs(np.asarray(ours(IDS, attention_mask=MASK).last_hidden_state) - ref).max() < 1e-5
    assert ours.num_parameters() == bert.num_parameters() and ours.base_model_prefix == "bert"
    assert ours.get_input_embeddings().shape == (99, 32)
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.AutoModel.from_pretrained(tmp_path / "ours").eval()
    assert (again(torch.tensor(IDS)).last_hidden_state - bert(torch.tensor(IDS)).last_hidden_state).abs().max() < 1e-6


def test_from_encoder_decoder_pretrained_with_built_parts(hf_berts):
    root, _ = hf_berts
    enc = FlaxBertModel.from_pretrained(root / "a")
    dec = FlaxBertForCausalLM.from_pretrained(root / "b")
    model = FlaxEncoderDecoderModel.from_encoder_decoder_pretrained(encoder_model=enc, decoder_model=dec)
    state = model.canonical_state()
    assert np.array_equal(state["encoder.embeddings.word_embeddings.weight"], enc.canonical_state()["embeddings.word_embeddings.weight"])
    theirs = transformers.EncoderDecoderModel(encoder=transformers.BertModel.from_pretrained(root / "a"),
                                              decoder=transformers.BertLMHeadModel.from_pretrained(
                                                  root / "b", is_decoder=True, add_cross_attention=True)).eval()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    ref = theirs(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK), decoder_input_ids=torch.tensor(DEC)).logits
    ours = model(IDS, attention_mask=MASK, decoder_input_ids=DEC).logits
    assert np.abs(np.asarray(ours) - ref.detach().numpy()).max() < 1e-5
    with pytest.raises(ValueError, match="If `encoder_model` is not defined as an argument, a "
                                         "`encoder_pretrained_model_name_or_path` has to be defined"):
        FlaxEncoderDecoderModel.from_encoder_decoder_pretrained(decoder_pretrained_model_name_or_path=root / "b")


def test_given_causal_lm_part_becomes_a_decoder_like_transformers(caplog):
    # transformers' own tests pass FlaxGPT2LMHeadModel / FlaxBartForCausalLM parts whose config has
    # add_cross_attention=True but not is_decoder: transformers switches both on (info log)
    gpt2 = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    enc = FlaxBertModel(BertConfig(**KW))
    dec = FlaxGPT2LMHeadModel(transformers.GPT2Config(**gpt2, add_cross_attention=True), seed=1)
    model = FlaxEncoderDecoderModel.from_encoder_decoder_pretrained(encoder_model=enc, decoder_model=dec)
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
    state = model.canonical_state()
    assert all(np.array_equal(state[f"decoder.{k}"], v) for k, v in dec.canonical_state().items())
    assert model(IDS, attention_mask=MASK, decoder_input_ids=DEC).logits.shape == DEC.shape + (99,)
    # a part built without cross-attention gets it initialised, named in the WARNING
    plain = FlaxGPT2LMHeadModel(GPT2Config(**gpt2), seed=1)
    with caplog.at_level("WARNING"):
        model = FlaxEncoderDecoderModel.from_encoder_decoder_pretrained(encoder_model=enc, decoder_model=plain)
    assert "decoder.transformer.h.*.crossattention.c_attn.weight" in caplog.text
    state = model.canonical_state()
    assert all(np.array_equal(state[f"decoder.{k}"], v) for k, v in plain.canonical_state().items())


@pytest.mark.parametrize("decoder", ["bert", "gpt2-with-projection"])
def test_transformers_pt_flax_converters_on_our_models(decoder):
    """transformers' ``load_flax_weights_in_pytorch_model`` / ``convert_pytorch_state_dict_to_flax``
    (its pt-flax cross tests) give what our own canonical conversion gives (tie targets included)."""
    from flax.traverse_util import flatten_dict
    from transformers.modeling_flax_pytorch_utils import (
        convert_pytorch_state_dict_to_flax,
        load_flax_weights_in_pytorch_model,
    )

    from encdec_torch import EncoderDecoderModel

    for attr in ("base_model_prefix", "main_input_name"):
        assert getattr(FlaxEncoderDecoderModel, attr) == getattr(transformers.FlaxEncoderDecoderModel, attr)
    dec = BertConfig(**KW) if decoder == "bert" else GPT2Config(vocab_size=99, n_embd=64, n_layer=2, n_head=4)
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**KW), dec, decoder_start_token_id=2,
                                                            pad_token_id=0)
    fx = FlaxEncoderDecoderModel(cfg, seed=1)
    pt = load_flax_weights_in_pytorch_model(EncoderDecoderModel(cfg).eval(), fx.params)
    ours, loaded = fx.canonical_state(), pt.canonical_state()
    assert set(loaded) == set(ours) and max(np.abs(loaded[k] - ours[k]).max() for k in ours) <= 1e-5
    with torch.no_grad():
        ref = pt(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK), decoder_input_ids=torch.tensor(DEC)).logits
    assert np.abs(np.asarray(fx(IDS, attention_mask=MASK, decoder_input_ids=DEC).logits) - ref.numpy()).max() <= 1e-5

    other = EncoderDecoderModel(cfg).eval()  # torch's own random init
    converted = convert_pytorch_state_dict_to_flax(other.state_dict(), fx)
    direct = FlaxEncoderDecoderModel(cfg, _do_init=False)
    direct.load_canonical(other.canonical_state())
    flat, want = flatten_dict(converted), flatten_dict(direct.params)
    assert max(np.abs(np.asarray(flat[k]) - np.asarray(v)).max() for k, v in want.items()) <= 1e-5
    # the converter's extra leaves are the tie targets (LM head), which Flax reads from the embeddings
    extra = {".".join(k[:-1] + (("weight",) if k[-1] == "kernel" else k[-1:])) for k in set(flat) - set(want)}
    assert extra and extra <= set(direct.spec.ties)


def test_tie_encoder_decoder_keeps_the_decoder_side_like_transformers(hf_berts):
    root, _ = hf_berts
    theirs = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(root / "a", root / "b",
                                                                              tie_encoder_decoder=True).eval()
    ours = FlaxEncoderDecoderModel.from_encoder_decoder_pretrained(root / "a", root / "b", tie_encoder_decoder=True)
    ref_state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    state = ours.canonical_state()
    for name in ("encoder.embeddings.word_embeddings.weight", "encoder.encoder.layer.1.output.dense.weight"):
        assert np.array_equal(state[name], ref_state[name]), name
    # same weights everywhere (cross-attention and head copied from transformers' random init) -> same logits
    ours.load_canonical({n: ref_state[n] for n in ours.spec.params if n in ref_state})
    ref = theirs(input_ids=torch.tensor(IDS), decoder_input_ids=torch.tensor(DEC)).logits.detach().numpy()
    assert np.abs(np.asarray(ours(IDS, decoder_input_ids=DEC).logits) - ref).max() < 1e-5


def test_transformers_config_and_output_flags():
    hf_cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(transformers.BertConfig(**KW),
                                                                           transformers.BertConfig(**KW))
    hf_cfg.decoder_start_token_id, hf_cfg.pad_token_id = 2, 0
    model = FlaxEncoderDecoderModel(hf_cfg)
    assert isinstance(model.config, EncoderDecoderConfig) and isinstance(model.config.decoder, BertConfig)
    assert model(IDS, decoder_input_ids=DEC).encoder_attentions is None
    model.config.output_attentions = True
    assert len(model(IDS, decoder_input_ids=DEC).encoder_attentions) == 2
    assert model(IDS, decoder_input_ids=DEC, output_attentions=False).cross_attentions is None


def test_init_weights_and_conveniences():
    import jax

    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**KW), BertConfig(**KW), decoder_start_token_id=2,
                                                            pad_token_id=0)
    model = FlaxEncoderDecoderModel(cfg)
    fresh = model.init_weights(jax.random.PRNGKey(0), (1, 1))
    assert jax.tree_util.tree_structure(fresh) == jax.tree_util.tree_structure(model.params)
    kept = model.init_weights(jax.random.PRNGKey(1), (1, 1), params={"encoder": model.params["encoder"]})
    assert np.array_equal(kept["encoder"]["embeddings"]["word_embeddings"]["embedding"],
                          model.params["encoder"]["embeddings"]["word_embeddings"]["embedding"])
    hf = transformers.EncoderDecoderModel(config=transformers.EncoderDecoderConfig(**cfg.to_dict()))
    assert model.num_parameters() == hf.num_parameters()
    assert model.num_parameters(exclude_embeddings=True) == hf.num_parameters(exclude_embeddings=True)
    assert model.can_generate()


def test_part_resize_token_embeddings_as_transformers_pytorch(hf_berts, tmp_path):
    # transformers' Flax parts have no resize_token_embeddings; ours follows its PyTorch one
    root, _ = hf_berts
    ours = FlaxBertForCausalLM.from_pretrained(root / "a")
    theirs = transformers.BertLMHeadModel.from_pretrained(root / "a", is_decoder=True, add_cross_attention=True).eval()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.canonical_state().items()}, strict=False)
    assert ours.resize_token_embeddings(100, pad_to_multiple_of=8).shape == (104, 32)
    theirs.resize_token_embeddings(100, pad_to_multiple_of=8)
    assert ours.config.vocab_size == theirs.config.vocab_size == 104
    enc = np.random.default_rng(0).normal(size=(2, 3, 32)).astype("float32")
    a = np.asarray(ours(IDS, attention_mask=MASK, encoder_hidden_states=enc).logits)
    b = theirs(torch.tensor(IDS), attention_mask=torch.tensor(MASK), encoder_hidden_states=torch.tensor(enc)).logits
    b = b.detach().numpy()
    assert a.shape == b.shape and np.abs(a[..., :99] - b[..., :99]).max() < 1e-5
    ours.save_pretrained(tmp_path)
    again = transformers.BertLMHeadModel.from_pretrained(tmp_path).eval()
    c = again(torch.tensor(IDS), attention_mask=torch.tensor(MASK), encoder_hidden_states=torch.tensor(enc)).logits
    assert np.abs(c.detach().numpy() - a).max() < 1e-5
