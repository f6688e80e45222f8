"""EncoderDecoderModel API: construction errors, routing, labels, ties, checkpointing, dtypes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from encdec.configuration import BertConfig, EncoderDecoderConfig, GPT2Config
from encdec_torch import EncoderDecoderModel
from encdec_torch.models import BertLMHeadModel, BertModel, GPT2LMHeadModel
from tests.torch.helpers import build_pair, inputs, make_config, max_diff, part_kwargs

TOL = 1e-5


# --- construction -----------------------------------------------------------------------
def test_parts_share_the_composite_config_and_projection_follows_hidden_sizes():
    config = make_config("bert48-gpt2-proj")
    model = EncoderDecoderModel(config)
    assert model.encoder.config is config.encoder and model.decoder.config is config.decoder
    assert tuple(model.enc_to_dec_proj.weight.shape) == (32, 48)
    assert not hasattr(EncoderDecoderModel(make_config("bert2gpt2")), "enc_to_dec_proj")


def test_model_from_two_part_instances():
    enc = BertModel(BertConfig(**part_kwargs("bert")))
    dec = GPT2LMHeadModel(GPT2Config(**part_kwargs("gpt2"), is_decoder=True, add_cross_attention=True))
    model = EncoderDecoderModel(encoder=enc, decoder=dec)
    assert model.encoder is enc and model.decoder is dec
    assert model.config.encoder is enc.config and model.config.decoder is dec.config
    assert model.get_encoder() is enc and model.get_decoder() is dec
    assert model.get_input_embeddings() is enc.embeddings.word_embeddings
    assert model.get_output_embeddings() is dec.lm_head


def test_construction_errors():
    with pytest.raises(ValueError, match="either a `config` or both"):
        EncoderDecoderModel()
    with pytest.raises(ValueError, match="either a `config` or both"):
        EncoderDecoderModel(encoder=BertModel(BertConfig(**part_kwargs("bert"))))
    with pytest.raises(ValueError, match="must be an EncoderDecoderConfig"):
        EncoderDecoderModel(BertConfig(**part_kwargs("bert")))
    config = make_config("bert2gpt2")
    config.decoder.cross_attention_hidden_size = 16
    with pytest.raises(ValueError, match="cross_attention_hidden_size"):
        EncoderDecoderModel(config)
    lm_encoder = BertLMHeadModel(BertConfig(**part_kwargs("bert"), is_decoder=True))
    dec = GPT2LMHeadModel(GPT2Config(**part_kwargs("gpt2"), is_decoder=True, add_cross_attention=True))
    with pytest.raises(ValueError, match="has an LM head"):
        EncoderDecoderModel(encoder=lm_encoder, decoder=dec)
    plain = EncoderDecoderConfig(encoder=BertConfig(**part_kwargs("bert")), decoder=GPT2Config(**part_kwargs("gpt2")))
    with pytest.raises(ValueError, match="cannot take encoder hidden states"):
        EncoderDecoderModel(plain)


@pytest.mark.parametrize("pair,part,field,value", [
    ("bert2bert", "encoder", "position_embedding_type", "rotary"),
    ("bert2bert", "decoder", "hidden_act", "prelu"),
    ("bert2gpt2", "decoder", "activation_function", "xielu"),
    ("bert2bart", "decoder", "activation_function", "prelu"),
])
def test_unsupported_options_are_refused_at_construction(pair, part, field, value):
    config = make_config(pair)
    setattr(getattr(config, part), field, value)
    with pytest.raises(NotImplementedError, match=field):
        EncoderDecoderModel(config)


# --- forward ----------------------------------------------------------------------------
def test_prefixed_kwargs_are_routed_like_transformers():
    config, _, ours, hf = build_pair("bert2bert")
    x = inputs(config)
    types = torch.zeros_like(x["input_ids"])
    types[:, 3:] = 1
    dec_types = torch.zeros_like(x["decoder_input_ids"])
    dec_types[:, 2:] = 1
    with torch.no_grad():
        a = ours(**x, token_type_ids=types, decoder_token_type_ids=dec_types)
        b = hf(**x, token_type_ids=types, decoder_token_type_ids=dec_types)
        plain = ours(**x)
    assert max_diff(a.logits, b.logits) <= TOL
    assert max_diff(a.logits, plain.logits) > 1e-3  # both type ids reached their part
    with pytest.raises(TypeError, match="not_an_argument"):
        ours(**x, decoder_not_an_argument=1)
    with pytest.raises(TypeError, match="not_an_argument"):
        ours(**x, not_an_argument=1)


def test_encoder_outputs_as_object_or_tuple_and_tuple_returns():
    config, _, ours, _ = build_pair("bert2gpt2")
    x = inputs(config)
    with torch.no_grad():
        ref = ours(**x)
        enc = ours.encode(x["input_ids"], x["attention_mask"])
        rest = dict(attention_mask=x["attention_mask"], decoder_input_ids=x["decoder_input_ids"],
                    decoder_attention_mask=x["decoder_attention_mask"])
        from_obj = ours(encoder_outputs=enc, **rest)
        from_tuple = ours(encoder_outputs=(enc.last_hidden_state,), **rest)
        as_tuple = ours(**x, return_dict=False, use_cache=False)
    assert max_diff(from_obj.logits, ref.logits) == 0 and max_diff(from_tuple.logits, ref.logits) == 0
    assert isinstance(as_tuple, tuple) and max_diff(as_tuple[0], ref.logits) == 0
    assert max_diff(as_tuple[1], ref.encoder_last_hidden_state) == 0


def test_labels_build_decoder_inputs_and_mask_like_transformers():
    config, _, ours, hf = build_pair("roberta2roberta")
    x = inputs(config)
    labels = x["decoder_input_ids"][:, 1:].clone()
    labels[1, -2:] = -100
    with torch.no_grad():
        a = ours(input_ids=x["input_ids"], attention_mask=x["attention_mask"], labels=labels)
        b = hf(input_ids=x["input_ids"], attention_mask=x["attention_mask"], labels=labels)
    assert max_diff(a.logits, b.logits) <= TOL and abs(float(a.loss) - float(b.loss)) <= TOL
    shifted = ours.prepare_decoder_input_ids_from_labels(labels)
    assert shifted[:, 0].eq(config.decoder_start_token_id).all() and shifted[1, -1] == config.pad_token_id
    logits = a.logits[labels != -100]
    expected = torch.nn.functional.cross_entropy(logits, labels[labels != -100])
    assert abs(float(a.loss) - float(expected)) <= TOL


def test_labels_need_start_and_pad_ids():
    config, _, ours, _ = build_pair("bert2gpt2")
    config.decoder_start_token_id = None
    x = inputs(config)
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        ours(input_ids=x["input_ids"], labels=x["decoder_input_ids"])


def test_tie_encoder_decoder_shares_parameters_and_matches_transformers():
    config, weights, ours, hf = build_pair("bert2bert", tie_encoder_decoder=True)
    untied = EncoderDecoderModel(make_config("bert2bert"))
    n_tied = sum(p.numel() for p in ours.parameters())
    assert n_tied < sum(p.numel() for p in untied.parameters())
    assert ours.decoder.bert.embeddings.word_embeddings.weight is ours.encoder.embeddings.word_embeddings.weight
    assert ours.decoder.bert.encoder.layer[0].attention.self.query.weight is ours.encoder.encoder.layer[0].attention.self.query.weight
    assert ours.decoder.cls.predictions.decoder.weight is ours.encoder.embeddings.word_embeddings.weight
    x = inputs(config)
    with torch.no_grad():
        assert max_diff(ours(**x).logits, hf(**x).logits) <= TOL


def test_resize_token_embeddings_points_to_the_parts():
    with pytest.raises(NotImplementedError, match="model.encoder.resize_token_embeddings"):
        EncoderDecoderModel(make_config("bert2gpt2")).resize_token_embeddings(120)


def test_gradient_checkpointing_gives_the_same_gradients():
    config, weights, ours, _ = build_pair("bert2bart")
    x = inputs(config)
    labels = x["decoder_input_ids"]

    def grads(model):
        model.train()
        model.zero_grad()
        model(input_ids=x["input_ids"], attention_mask=x["attention_mask"], labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads(ours)
    ours.gradient_checkpointing_enable()
    assert ours.decoder.gradient_checkpointing and ours.encoder.gradient_checkpointing
    checkpointed = grads(ours)
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    assert max(max_diff(plain[n], checkpointed[n]) for n in plain) <= TOL


def test_canonical_state_round_trip_and_strict_loading():
    config, weights, ours, _ = build_pair("electra2gpt2")
    state = ours.canonical_state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    other = EncoderDecoderModel(config)
    other.load_canonical(state)
    x = inputs(config)
    with torch.no_grad():
        assert max_diff(other(**x).logits, ours(**x).logits) == 0
    bad = dict(state)
    bad.pop("encoder.embeddings_project.weight")
    with pytest.raises(ValueError, match="embeddings_project"):
        other.load_canonical(bad)
    bad = dict(state, **{"encoder.embeddings_project.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="shape"):
        other.load_canonical(bad)
    with pytest.raises(ValueError, match="unexpected"):
        other.load_canonical(dict(state, extra=np.zeros(1, np.float32)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_and_generate(dtype):
    config, _, ours, _ = build_pair("bert2gpt2")
    x = inputs(config)
    with torch.no_grad():
        ref = ours(**x).logits
        half = ours.to(dtype)
        out = half(**x).logits
    assert out.dtype == dtype
    # bf16 / fp16 round activations to 8 / 11 mantissa bits
    assert max_diff(out.float(), ref) < 0.1
    ids = half.generate(x["input_ids"], attention_mask=x["attention_mask"], max_new_tokens=4)
    assert ids.shape == (x["input_ids"].shape[0], 5)


@pytest.mark.parametrize("need_weights", [False, True])
def test_attention_with_keys_shared_by_consecutive_query_rows(need_weights):
    from encdec_torch.models.common import attend, padding_mask

    g = torch.Generator().manual_seed(0)
    q = torch.randn(6, 4, 2, 8, generator=g)
    k, v = torch.randn(2, 4, 5, 8, generator=g), torch.randn(2, 4, 5, 8, generator=g)
    mask2d = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    shared = attend(q, k, v, padding_mask(mask2d, q.dtype, 2), need_weights=need_weights)
    repeated = attend(q, k.repeat_interleave(3, 0), v.repeat_interleave(3, 0),
                      padding_mask(mask2d.repeat_interleave(3, 0), q.dtype, 2), need_weights=need_weights)
    assert max_diff(shared[0], repeated[0]) <= 1e-6
    if need_weights:
        assert max_diff(shared[1], repeated[1]) <= 1e-6


def test_fresh_model_uses_transformers_style_init():
    model = EncoderDecoderModel(make_config("bert2gpt2"))
    emb = model.encoder.embeddings.word_embeddings.weight
    assert abs(float(emb.std()) - 0.02) < 0.003 and float(emb[0].abs().sum()) == 0  # pad row zeroed
    assert float(model.encoder.embeddings.LayerNorm.weight.min()) == 1.0
    assert float(model.decoder.transformer.h[0].attn.c_attn.bias.abs().max()) == 0.0
