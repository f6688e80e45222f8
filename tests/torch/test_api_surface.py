"""transformers 4.57's API surface around the composite (issue 12), against transformers as oracle:
part models as HF part checkpoints, transformers configs / generation configs accepted,
legacy generation keys of config.json, output flags from the config, PreTrainedModel
conveniences and clear errors for unknown keywords."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from encdec import BertConfig, EncoderDecoderConfig, GenerationConfig  # noqa: E402
from encdec_torch import EncoderDecoderModel  # noqa: E402
from encdec_torch.models import BertLMHeadModel, BertModel, GPT2LMHeadModel  # noqa: E402
from tests.torch.helpers import part_kwargs  # noqa: E402

IDS = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 1, 1]])
MASK = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
DEC = torch.tensor([[2, 20, 21, 22], [2, 23, 24, 25]])


@pytest.fixture(scope="module")
def hf_parts(tmp_path_factory):
    """transformers BertModel and GPT2LMHeadModel checkpoints (tiny)."""
    root = tmp_path_factory.mktemp("hf_parts")
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(**part_kwargs("bert"))).eval()
    bert.save_pretrained(root / "bert")
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(**part_kwargs("gpt2"))).eval()
    gpt2.save_pretrained(root / "gpt2")
    return root, bert, gpt2


def test_part_from_hf_and_back(hf_parts, tmp_path):
    root, bert, _ = hf_parts
    ours = BertModel.from_pretrained(root / "bert")
    diff = (ours(input_ids=IDS, attention_mask=MASK).last_hidden_state - bert(IDS, attention_mask=MASK).last_hidden_state).abs().max()
    assert diff < 1e-5
    assert ours.num_parameters() == bert.num_parameters()
    assert ours.num_parameters(exclude_embeddings=True) == bert.num_parameters(exclude_embeddings=True)
    assert ours.base_model_prefix == bert.base_model_prefix == "bert" and ours.main_input_name == "input_ids"
    assert ours.get_input_embeddings().weight.shape == bert.get_input_embeddings().weight.shape
    assert ours.name_or_path == str(root / "bert")
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.AutoModel.from_pretrained(tmp_path / "ours").eval()
    assert type(again).__name__ == "BertModel"
    assert (again(IDS).last_hidden_state - bert(IDS).last_hidden_state).abs().max() < 1e-6


def test_decoder_part_warns_and_round_trips(hf_parts, tmp_path, caplog):
    root, _, _ = hf_parts
    with caplog.at_level(logging.WARNING):
        dec, info = GPT2LMHeadModel.from_pretrained(root / "gpt2", output_loading_info=True)
    assert any("newly initialized" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    assert "transformer.h.0.crossattention.c_attn.weight" in info["missing_keys"]
    assert dec.base_model_prefix == "transformer"
    dec.save_pretrained(tmp_path / "dec", safe_serialization=False)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dec").eval()
    assert hf.config.add_cross_attention and type(hf).__name__ == "GPT2LMHeadModel"
    enc = torch.randn(2, 6, 32)
    ours = dec(input_ids=DEC, encoder_hidden_states=enc).logits
    theirs = hf(input_ids=DEC, encoder_hidden_states=enc).logits
    assert (ours - theirs).abs().max() < 1e-5


def test_composite_from_built_parts_equals_transformers(hf_parts):
    root, _, _ = hf_parts
    enc = BertModel.from_pretrained(root / "bert")
    dec = GPT2LMHeadModel.from_pretrained(root / "gpt2")
    ours = EncoderDecoderModel(encoder=enc, decoder=dec).eval()
    assert ours.base_model_prefix == transformers.EncoderDecoderModel.base_model_prefix == "encoder_decoder"
    theirs = transformers.EncoderDecoderModel(encoder=transformers.BertModel.from_pretrained(root / "bert"),
                                              decoder=transformers.GPT2LMHeadModel.from_pretrained(
                                                  root / "gpt2", is_decoder=True, add_cross_attention=True))
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.canonical_state().items()}, strict=False)
    theirs.eval()
    a = ours(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DEC).logits
    b = theirs(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DEC).logits
    assert (a - b).abs().max() < 1e-5


def test_transformers_configs_accepted():
    hf = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(
        transformers.BertConfig(**part_kwargs("bert")), transformers.GPT2Config(**part_kwargs("gpt2")))
    hf.decoder_start_token_id, hf.pad_token_id = 2, 0
    model = EncoderDecoderModel(hf)
    assert isinstance(model.config, EncoderDecoderConfig) and model.config.decoder.model_type == "gpt2"
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(transformers.BertConfig(**part_kwargs("bert")),
                                                            BertConfig(**part_kwargs("bert")))
    assert isinstance(cfg.encoder, BertConfig)
    with pytest.raises(ValueError, match="config must be an EncoderDecoderConfig"):
        EncoderDecoderModel(transformers.BertConfig())
    for name in ("BertConfig", "GPT2Config", "EncoderDecoderConfig", "GenerationConfig", "BertModel", "GPT2LMHeadModel"):
        assert hasattr(__import__("encdec_torch"), name), name


@pytest.fixture(scope="module")
def bert2bert():
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**part_kwargs("bert")), BertConfig(**part_kwargs("bert")),
                                                            decoder_start_token_id=2, pad_token_id=0)
    return EncoderDecoderModel(cfg, seed=0).eval()


def test_generation_configs_from_transformers_and_legacy_keys(bert2bert, tmp_path):
    model = bert2bert
    hf_gen = transformers.GenerationConfig(max_length=7, num_beams=2, eos_token_id=3)
    out = model.generate(IDS, attention_mask=MASK, generation_config=hf_gen)
    assert out.shape[1] <= 7
    assert torch.equal(out, model.generate(IDS, attention_mask=MASK, max_length=7, num_beams=2, eos_token_id=3))
    model.generation_config = transformers.GenerationConfig(max_length=5)
    try:
        assert model.generate(IDS).shape[1] == 5
    finally:
        model.generation_config = GenerationConfig.from_model_config(model.config)
    # config.json with legacy generation keys and no generation_config.json: used as transformers 4.57 does
    model.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").unlink()
    import json

    data = json.loads((tmp_path / "config.json").read_text())
    data.update(num_beams=3, max_length=6, no_repeat_ngram_size=2, length_penalty=2.0, early_stopping=True)
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = EncoderDecoderModel.from_pretrained(tmp_path)
    hf_loaded = transformers.EncoderDecoderModel.from_pretrained(tmp_path)
    for key in ("num_beams", "max_length", "no_repeat_ngram_size", "length_penalty", "early_stopping"):
        assert getattr(loaded.generation_config, key) == getattr(hf_loaded.generation_config, key), key
    assert torch.equal(loaded.generate(IDS, attention_mask=MASK), hf_loaded.generate(IDS, attention_mask=MASK))


def test_unknown_and_unimplemented_generation_settings(bert2bert):
    with pytest.raises(TypeError, match=r"max_lenght.*did you mean `max_length`.*not a generation setting nor an encoder input"):
        bert2bert.generate(IDS, max_lenght=5)
    with pytest.raises(ValueError, match="num_beam_groups=2"):
        bert2bert.generate(IDS, num_beams=2, num_beam_groups=2)
    assert bert2bert.generate(IDS, max_length=4, use_cache=True, num_beam_groups=1).shape[1] <= 4


def test_output_flags_follow_config(bert2bert):
    # transformers' PyTorch composite: the call argument wins, else each part's own config; the
    # composite config's output_attentions / output_hidden_states switch nothing
    model = bert2bert
    out = model(input_ids=IDS, decoder_input_ids=DEC)
    assert out.encoder_attentions is None and out.decoder_hidden_states is None
    model.config.output_attentions = True
    model.config.decoder.output_hidden_states = True
    model.config.return_dict = False
    try:
        tup = model(input_ids=IDS, decoder_input_ids=DEC)
        assert isinstance(tup, tuple)
        out = model(input_ids=IDS, decoder_input_ids=DEC, return_dict=True)
        assert out.encoder_attentions is None and out.cross_attentions is None
        assert len(out.decoder_hidden_states) == 3 and out.encoder_hidden_states is None
        model.config.encoder.output_attentions = True
        out = model(input_ids=IDS, decoder_input_ids=DEC, return_dict=True)
        assert len(out.encoder_attentions) == 2 and out.cross_attentions is None
        assert model(input_ids=IDS, decoder_input_ids=DEC, return_dict=True, output_attentions=False).encoder_attentions is None
    finally:
        model.config.output_attentions = model.config.encoder.output_attentions = False
        model.config.decoder.output_hidden_states = False
        model.config.return_dict = True


def test_conveniences(bert2bert):
    model = bert2bert
    assert model.can_generate() and not BertModel.can_generate()
    hf = transformers.EncoderDecoderModel(config=transformers.EncoderDecoderConfig(**model.config.to_dict()))
    assert model.num_parameters() == hf.num_parameters()
    assert model.get_memory_footprint(return_buffers=False) == hf.get_memory_footprint(return_buffers=False)
    labels = torch.tensor([[20, 21, -100]])
    assert model.prepare_decoder_input_ids_from_labels(labels).tolist() == [[2, 20, 21]]
    model.enable_input_require_grads()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        emb = model.get_input_embeddings()(IDS)
        assert emb.requires_grad
    finally:
        model.disable_input_require_grads()
        for p in model.parameters():
            p.requires_grad_(True)


def test_from_pretrained_and_save_pretrained_keywords(bert2bert, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: calls.append(("create", repo_id)))
    monkeypatch.setattr(huggingface_hub, "upload_folder",
                        lambda **kw: calls.append(("upload", kw["repo_id"], sorted(os.listdir(kw["folder_path"])))))
    bert2bert.save_pretrained(tmp_path / "m", push_to_hub=True, repo_id="me/tiny", commit_message="x")
    assert calls[0] == ("create", "me/tiny") and "model.safetensors" in calls[1][2]
    bert2bert.push_to_hub("me/tiny2", safe_serialization=False)
    assert calls[-1][1] == "me/tiny2" and "pytorch_model.bin" in calls[-1][2]
    with pytest.raises(TypeError, match="repo_ide"):
        bert2bert.save_pretrained(tmp_path / "m", push_to_hub=True, repo_ide="typo")
    half = EncoderDecoderModel.from_pretrained(tmp_path / "m", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.name_or_path == str(tmp_path / "m")
    half.save_pretrained(tmp_path / "half")  # 4.57's dtype= no longer breaks saving
    ref = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "m", dtype=torch.bfloat16)
    assert ref.dtype == torch.bfloat16
    model, info = EncoderDecoderModel.from_pretrained(tmp_path / "m", output_loading_info=True, low_cpu_mem_usage=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    with pytest.raises(NotImplementedError, match="variant='fp16'"):
        EncoderDecoderModel.from_pretrained(tmp_path / "m", variant="fp16")
    with pytest.raises(NotImplementedError, match="ignore_mismatched_sizes"):
        EncoderDecoderModel.from_pretrained(tmp_path / "m", ignore_mismatched_sizes=True)
    with pytest.raises(FileNotFoundError):
        EncoderDecoderModel.from_pretrained(tmp_path / "m", use_safetensors=False)
    state = {k: v * 0 for k, v in bert2bert.state_dict().items()}
    bert2bert.save_pretrained(tmp_path / "zeros", state_dict=state)
    zeros = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "zeros")
    assert float(zeros.encoder.embeddings.word_embeddings.weight.abs().sum()) == 0.0


def test_tie_encoder_decoder_with_given_parts_keeps_the_decoder_side(hf_parts, tmp_path):
    root, _, _ = hf_parts
    torch.manual_seed(1)
    transformers.BertModel(transformers.BertConfig(**part_kwargs("bert"))).save_pretrained(tmp_path / "b")
    theirs = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(root / "bert", tmp_path / "b",
                                                                              tie_encoder_decoder=True).eval()
    ours = EncoderDecoderModel.from_encoder_decoder_pretrained(root / "bert", tmp_path / "b", tie_encoder_decoder=True)
    ref = theirs.state_dict()
    state = ours.canonical_state()
    for name in ("encoder.embeddings.word_embeddings.weight", "encoder.encoder.layer.1.attention.self.query.weight"):
        assert np.array_equal(state[name], ref[name].numpy()), name
    # parts passed to the constructor: the same side
    enc = BertModel.from_pretrained(root / "bert")
    dec = BertLMHeadModel.from_pretrained(tmp_path / "b")
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(enc.config, dec.config, tie_encoder_decoder=True)
    built = EncoderDecoderModel(cfg, encoder=enc, decoder=dec)
    assert torch.equal(built.encoder.embeddings.word_embeddings.weight, dec.bert.embeddings.word_embeddings.weight)
    built.load_canonical({n: ref[n].numpy() for n in built.spec.params if n in ref})
    a = built.eval()(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DEC).logits
    b = theirs(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DEC).logits
    assert (a - b).abs().max() < 1e-5


def test_part_output_flags_follow_their_config(hf_parts):
    root, bert, _ = hf_parts
    ours = BertModel.from_pretrained(root / "bert", output_hidden_states=True)
    out = ours(input_ids=IDS)
    ref = bert(IDS, output_hidden_states=True)
    assert len(out.hidden_states) == len(ref.hidden_states) == 3 and out.attentions is None
    assert ours(input_ids=IDS, output_hidden_states=False).hidden_states is None


def test_attn_implementation_as_transformers(tmp_path, bert2bert):
    # transformers 4.57: composite and parts record "sdpa" by default; a requested kernel a part
    # lacks (ProphetNet, BertGeneration, ELECTRA, RemBERT have no SDPA there) is refused
    assert bert2bert.config._attn_implementation == "sdpa" and bert2bert.encoder._supports_sdpa
    assert bert2bert.encoder.config._attn_implementation == "sdpa"
    bert2bert.save_pretrained(tmp_path)
    eager = EncoderDecoderModel.from_pretrained(tmp_path, attn_implementation="eager")
    assert {eager.config._attn_implementation, eager.encoder.config._attn_implementation,
            eager.decoder.config._attn_implementation} == {"eager"}
    assert "_attn_implementation" not in (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="flash_attention_2"):
        EncoderDecoderModel.from_pretrained(tmp_path, attn_implementation="flash_attention_2")


def test_resize_token_embeddings_on_parts_as_transformers(hf_parts, tmp_path):
    root, _, _ = hf_parts
    ours = EncoderDecoderModel.from_encoder_decoder_pretrained(root / "bert", root / "gpt2").eval()
    theirs = transformers.EncoderDecoderModel.from_encoder_decoder_pretrained(root / "bert", root / "gpt2").eval()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.canonical_state().items()}, strict=False)
    with pytest.raises(NotImplementedError, match="model.encoder.resize_token_embeddings"):
        ours.resize_token_embeddings(120)
    v_enc, v_dec = ours.config.encoder.vocab_size, ours.config.decoder.vocab_size
    for model in (ours, theirs):
        model.encoder.resize_token_embeddings(v_enc + 5)
        model.decoder.resize_token_embeddings(v_dec + 3, pad_to_multiple_of=8)
    assert ours.config.encoder.vocab_size == theirs.config.encoder.vocab_size == v_enc + 5
    assert ours.config.decoder.vocab_size == theirs.config.decoder.vocab_size == -(-(v_dec + 3) // 8) * 8
    assert ours.decoder.config is ours.config.decoder
    assert ours.decoder.lm_head.weight is ours.decoder.transformer.wte.weight  # GPT-2's tie kept
    assert ours.decoder.get_output_embeddings().weight.shape == theirs.decoder.get_output_embeddings().weight.shape
    a = ours(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DEC).logits
    b = theirs(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DEC).logits
    assert a.shape == b.shape and (a[..., :v_dec] - b[..., :v_dec]).abs().max() < 1e-5
    ours.save_pretrained(tmp_path)  # the composite's spec follows the parts: transformers loads it
    again = transformers.EncoderDecoderModel.from_pretrained(tmp_path).eval()
    assert (again(input_ids=IDS, attention_mask=MASK, decoder_input_ids=DEC).logits - a).abs().max() < 1e-5
