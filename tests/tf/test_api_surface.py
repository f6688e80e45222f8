"""transformers 4.57's surface in the TF backend (issue 12): TF part layers as HF part
checkpoints, transformers configs / generation configs accepted, config output flags,
typos in generate refused.  transformers' PyTorch classes are the oracle (in process)."""
from __future__ import annotations

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from encdec_tf import BertConfig, EncoderDecoderConfig, GenerationConfig, TFEncoderDecoderModel  # noqa: E402
from encdec_tf import TFBertLMHeadModel, TFBertModel, TFGPT2LMHeadModel  # noqa: E402

KW = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
          max_position_embeddings=64)
IDS = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 1, 1]])
MASK = np.array([[1] * 6, [1, 1, 1, 1, 0, 0]])
DEC = np.array([[2, 20, 21, 22], [2, 23, 24, 25]])


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_tf_parts")
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(**KW)).eval()
    bert.save_pretrained(root / "bert")
    return root, bert


def test_part_layers_are_hf_part_checkpoints(hf_bert, tmp_path):
    root, bert = hf_bert
    ours = TFBertModel.from_pretrained(root / "bert", from_pt=True)
    theirs = bert(torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state.detach().numpy()
    assert np.abs(np.asarray(ours(input_ids=IDS, attention_mask=MASK).last_hidden_state) - theirs).max() < 1e-5
    assert ours.num_parameters() == bert.num_parameters()
    assert ours.num_parameters(exclude_embeddings=True) == bert.num_parameters(exclude_embeddings=True)
    assert ours.base_model_prefix == "bert" and ours.main_input_name == "input_ids"
    assert tuple(ours.get_input_embeddings().shape) == (99, 32)
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.AutoModel.from_pretrained(tmp_path / "ours").eval()
    assert (again(torch.tensor(IDS)).last_hidden_state - bert(torch.tensor(IDS)).last_hidden_state).abs().max() < 1e-6
    dec, info = TFBertLMHeadModel.from_pretrained(root / "bert", output_loading_info=True)
    assert "pooler.dense.weight" in info["unexpected_keys"] and info["missing_keys"]
    assert dec.config.is_decoder and dec.config.add_cross_attention


def test_composite_from_built_parts_and_transformers_configs(hf_bert):
    root, _ = hf_bert
    enc = TFBertModel.from_pretrained(root / "bert")
    dec = TFBertLMHeadModel.from_pretrained(root / "bert")
    model = TFEncoderDecoderModel(encoder=enc, decoder=dec)
    theirs = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(root / "bert", root / "bert").eval()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in model.canonical_state().items()}, strict=False)
    ours = np.asarray(model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DEC).logits)
    ref = theirs(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                 decoder_input_ids=torch.tensor(DEC)).logits.detach().numpy()
    assert np.abs(ours - ref).max() < 1e-5
    hf_cfg = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(transformers.BertConfig(**KW),
                                                                           transformers.BertConfig(**KW))
    hf_cfg.decoder_start_token_id, hf_cfg.pad_token_id = 2, 0
    built = TFEncoderDecoderModel(hf_cfg)
    assert isinstance(built.config, EncoderDecoderConfig) and isinstance(built.config.encoder, BertConfig)


@pytest.fixture(scope="module")
def bert2bert():
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**KW), BertConfig(**KW),
                                                            decoder_start_token_id=2, pad_token_id=0)
    return TFEncoderDecoderModel(cfg, seed=0)


def test_output_flags_from_config(bert2bert):
    model = bert2bert
    assert model(input_ids=IDS, decoder_input_ids=DEC).encoder_attentions is None
    # transformers' TF composite: argument, else each part's own config (the composite's flags switch nothing)
    model.config.output_hidden_states = True
    model.config.return_dict = False
    try:
        assert isinstance(model(input_ids=IDS, decoder_input_ids=DEC), tuple)
        out = model(input_ids=IDS, decoder_input_ids=DEC, return_dict=True)
        assert out.encoder_hidden_states is None and out.decoder_hidden_states is None
        model.config.encoder.output_hidden_states = model.config.decoder.output_hidden_states = True
        out = model(input_ids=IDS, decoder_input_ids=DEC, return_dict=True)
        assert len(out.encoder_hidden_states) == 3 and len(out.decoder_hidden_states) == 3
    finally:
        model.config.output_hidden_states = False
        model.config.encoder.output_hidden_states = model.config.decoder.output_hidden_states = False
        model.config.return_dict = True


def test_generate_takes_transformers_generation_config_and_refuses_typos(bert2bert):
    # (the XLA decode loop itself is compiled in test_generation.py; these checks run before it)
    model = bert2bert
    with pytest.raises(TypeError, match="did you mean `max_length`"):
        model.generate(IDS, generation_config=transformers.GenerationConfig(max_length=5), max_lenght=5)
    with pytest.raises(ValueError, match="num_beam_groups=2"):
        model.generate(IDS, generation_config=transformers.GenerationConfig(num_beams=2, num_beam_groups=2,
                                                                            diversity_penalty=0.5))
    assert isinstance(model.generation_config, GenerationConfig)


def test_part_takes_transformers_tf_calling_convention(hf_bert, caplog):
    # as transformers' TF parts: a dict of inputs as first argument, the output flags and
    # return_dict from the part's config when not given, dummy_inputs, a `kwargs=` dict dropped
    root, bert = hf_bert
    ours = TFBertModel.from_pretrained(root / "bert", output_hidden_states=True, return_dict=False)
    out = ours({"input_ids": IDS, "attention_mask": MASK})
    ref = bert(torch.tensor(IDS), attention_mask=torch.tensor(MASK), output_hidden_states=True, return_dict=False)
    assert isinstance(out, tuple) and len(out) == len(ref) == 3
    assert np.abs(np.asarray(out[2][-1]) - ref[2][-1].detach().numpy()).max() < 1e-5
    assert ours(IDS, output_hidden_states=False, return_dict=True).hidden_states is None
    with caplog.at_level("WARNING"):
        assert ours(input_ids=IDS, kwargs={"labels": IDS}, return_dict=True).last_hidden_state.shape == (2, 6, 32)
    assert "ignores the `kwargs=` argument (labels)" in caplog.text
    dec = TFBertLMHeadModel.from_pretrained(root / "bert")
    assert dec(dec.dummy_inputs).logits.shape == (3, 5, 99)


def test_tie_encoder_decoder_with_given_parts_keeps_the_decoder_side(hf_bert, tmp_path):
    root, _ = hf_bert
    torch.manual_seed(1)
    transformers.BertModel(transformers.BertConfig(**KW)).save_pretrained(tmp_path / "b")
    theirs = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(root / "bert", tmp_path / "b",
                                                                              tie_encoder_decoder=True).eval()
    enc, dec = TFBertModel.from_pretrained(root / "bert"), TFBertLMHeadModel.from_pretrained(tmp_path / "b")
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(enc.config, dec.config, tie_encoder_decoder=True)
    model = TFEncoderDecoderModel(cfg, encoder=enc, decoder=dec)
    ref = {k: v.numpy() for k, v in theirs.state_dict().items()}
    state = model.canonical_state()
    for name in ("encoder.embeddings.word_embeddings.weight", "encoder.encoder.layer.1.attention.self.query.weight"):
        assert np.array_equal(state[name], ref[name]), name
    model.load_canonical({p.name: ref[p.name] for p in model.spec.untied})  # the heads transformers drew at random
    ours = np.asarray(model(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DEC).logits)
    theirs_logits = theirs(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                           decoder_input_ids=torch.tensor(DEC)).logits.detach().numpy()
    assert np.abs(ours - theirs_logits).max() < 1e-5


def test_composite_shares_part_configs_and_takes_a_dict_of_inputs(caplog):
    # transformers' TFEncoderDecoderModel(encoder=, decoder=): the decoder's config is switched to
    # is_decoder + add_cross_attention and the parts use the composite's sub-configs (transformers'
    # configs converted); one dict of inputs as the first argument, as Keras / transformers call it
    gpt2 = TFGPT2LMHeadModel(transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4,
                                                     add_cross_attention=True), name="decoder")
    assert type(gpt2.config).__module__.startswith("encdec.")  # transformers' config converted on construction
    model = TFEncoderDecoderModel(encoder=TFBertModel(transformers.BertConfig(**KW), name="encoder"), decoder=gpt2)
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
    assert model.decoder.config is model.config.decoder and model.encoder.config is model.config.encoder
    assert TFEncoderDecoderModel.base_model_prefix == "encoder_decoder"
    model.build_in_name_scope()  # transformers' explicit build: ours is built on construction
    model.encoder.build_in_name_scope()
    inputs = {"input_ids": IDS, "attention_mask": MASK, "decoder_input_ids": DEC}
    assert np.array_equal(np.asarray(model(inputs).logits), np.asarray(model(**inputs).logits))
    with pytest.raises(TypeError, match="attention_mask both in the input dict and as keywords"):
        model(inputs, attention_mask=MASK)
    cfg = EncoderDecoderConfig.from_dict(model.config.to_dict())
    cfg.encoder.output_hidden_states = True
    with caplog.at_level("WARNING"):  # a given config wins over the parts' own, as in transformers
        again = TFEncoderDecoderModel(cfg, encoder=model.encoder, decoder=model.decoder)
    assert "Config of the encoder: TFBertModel is overwritten" in caplog.text and again.encoder.config is cfg.encoder


@pytest.mark.parametrize("part", ["bert_decoder", "gpt2_decoder", "bert_encoder"])
def test_part_resize_token_embeddings_as_the_torch_backend(part, tmp_path):
    # same weights, same resize in the PyTorch backend: logits agree (fp32, 1e-5) and the new
    # rows (matrices and biases) are the old rows' mean (mean_resizing=True, the default)
    import encdec_torch

    if part == "gpt2_decoder":
        cfg = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, add_cross_attention=True)
        ours, theirs = TFGPT2LMHeadModel(cfg), encdec_torch.GPT2LMHeadModel(cfg)
    elif part == "bert_decoder":
        cfg = transformers.BertConfig(**KW, is_decoder=True, add_cross_attention=True)
        ours, theirs = TFBertLMHeadModel(cfg), encdec_torch.BertLMHeadModel(cfg)
    else:
        ours, theirs = TFBertModel(transformers.BertConfig(**KW)), encdec_torch.BertModel(transformers.BertConfig(**KW))
    rng = np.random.default_rng(1)  # random biases too, so that their new rows' mean is not trivially 0
    weights = {k: (0.1 * rng.normal(size=v.shape)).astype("float32") for k, v in theirs.canonical_state().items()}
    theirs.load_canonical(weights)
    theirs.eval()
    ours.load_canonical(weights)
    old = ours.canonical_state()
    emb = ours.get_input_embeddings()
    assert ours.resize_token_embeddings(100, pad_to_multiple_of=8) is emb and tuple(emb.shape) == (104, 32)
    theirs.resize_token_embeddings(100, pad_to_multiple_of=8)
    assert ours.config.vocab_size == theirs.config.vocab_size == 104
    state = ours.canonical_state()
    for name, value in old.items():
        if value.shape[0] == 99:
            new = state[name]
            assert new.shape == (104,) + value.shape[1:] and np.array_equal(new[:99], value), name
            expected = np.broadcast_to(value.astype(np.float64).mean(0), new[99:].shape)
            assert np.abs(new[99:] - expected).max() < 1e-7, name
    ids = np.array([[5, 6, 103, 8], [101, 12, 13, 1]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    kw = {} if part == "bert_encoder" else {"encoder_hidden_states": np.random.default_rng(0).normal(size=(2, 3, 32))
                                              .astype("float32")}
    a = ours(input_ids=ids, attention_mask=mask, **kw, return_dict=True)[0]
    b = theirs(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
               **{k: torch.tensor(v) for k, v in kw.items()})[0].detach().numpy()
    assert a.shape == b.shape and np.abs(np.asarray(a) - b).max() < 1e-5
    if part == "gpt2_decoder":  # still tied: one variable for wte and lm_head
        assert ours.lm_head is ours.wte.embeddings and ours.get_input_embeddings() is ours.lm_head


def test_composite_follows_a_part_resize_in_generate_and_weights():
    # the compiled decode loop of the old vocabulary reads the old variables: a resize compiles anew
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**KW), BertConfig(**KW),
                                                            decoder_start_token_id=2, pad_token_id=0)
    model = TFEncoderDecoderModel(cfg, seed=0)
    kw = dict(max_new_tokens=3, eos_token_id=None)
    assert (model.generate(IDS, attention_mask=MASK, **kw).numpy() < 99).all()
    with pytest.raises(NotImplementedError, match="model.encoder.resize_token_embeddings"):
        model.resize_token_embeddings(104)
    model.decoder.resize_token_embeddings(104)
    bias = model.decoder.head.bias
    bias.assign(np.concatenate([bias.numpy()[:99], np.full(5, 100.0, "float32")]))  # the new tokens win
    assert (model.generate(IDS, attention_mask=MASK, **kw).numpy()[:, 1:] >= 99).all()
    assert model.config.decoder.vocab_size == 104 and model.canonical_state()["decoder.cls.predictions.bias"].shape == (104,)
