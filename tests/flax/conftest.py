"""Shared fixtures: tiny encoder-decoder pairs with canonical weights, and the
transformers 4.57 oracles (PyTorch and Flax) loaded with the same weights."""
import numpy as np
import pytest

from encdec.configuration import BartConfig, BertConfig, ElectraConfig, EncoderDecoderConfig, GPT2Config, RobertaConfig
from encdec.init import init_weights
from encdec.specs import encoder_decoder_spec

VOCAB = 99


def bert_like(cls, hidden=32, **kw):
    return cls(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
               max_position_embeddings=64, hidden_act="gelu", **kw)


def gpt2(**kw):
    return GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2, **kw)


def bart(**kw):
    return BartConfig(vocab_size=VOCAB, d_model=32, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=37,
                      max_position_embeddings=64, forced_eos_token_id=None, **kw)


PAIRS = {
    "bert2bert": lambda: (bert_like(BertConfig), bert_like(BertConfig)),
    "bert2gpt2": lambda: (bert_like(BertConfig), gpt2()),
    "roberta2roberta": lambda: (bert_like(RobertaConfig), bert_like(RobertaConfig)),
    "electra2gpt2": lambda: (bert_like(ElectraConfig, embedding_size=24), gpt2()),
    "bert2bart": lambda: (bert_like(BertConfig), bart()),
    "projection": lambda: (bert_like(BertConfig, hidden=48), bert_like(BertConfig, hidden=32)),
}


def make_config(pair: str) -> EncoderDecoderConfig:
    enc, dec = PAIRS[pair]()
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    cfg.decoder_start_token_id = 3
    cfg.pad_token_id = 1 if pair in ("roberta2roberta", "bert2bart") else 0
    cfg.eos_token_id = 2
    return cfg


def canonical_weights(cfg: EncoderDecoderConfig, seed: int = 0, std: float = 0.02) -> dict:
    return init_weights(encoder_decoder_spec(cfg), seed, std=std, randomize_all=True)


def hf_config(cfg: EncoderDecoderConfig):
    import transformers

    parts = []
    for part in (cfg.encoder, cfg.decoder):
        d = part.to_dict()
        parts.append(transformers.AutoConfig.for_model(d.pop("model_type"), **d))
    hf = transformers.EncoderDecoderConfig.from_encoder_decoder_configs(*parts)
    for k in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "tie_encoder_decoder"):
        setattr(hf, k, getattr(cfg, k))
    return hf


def hf_pt_model(cfg: EncoderDecoderConfig, weights: dict):
    import torch
    import transformers

    # eager attention: transformers' SDPA paths return no attention weights
    hf = hf_config(cfg)
    for part in (hf, hf.encoder, hf.decoder):
        part._attn_implementation = "eager"
    model = transformers.EncoderDecoderModel(config=hf).eval()
    missing, unexpected = model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()}, strict=False)
    assert not unexpected and not [m for m in missing if not m.endswith("position_ids")], (missing, unexpected)
    return model


def inputs(pair: str, batch: int = 2, src: int = 7, tgt: int = 5, seed: int = 0):
    """Source ids with padding on row 1, labels with -100 padding on row 1."""
    cfg = make_config(pair)
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, VOCAB, (batch, src)).astype(np.int32)
    mask = np.ones((batch, src), np.int32)
    mask[1, src - 2:] = 0
    ids[1, src - 2:] = cfg.pad_token_id
    labels = rng.integers(4, VOCAB, (batch, tgt)).astype(np.int32)
    labels[1, tgt - 2:] = -100
    return ids, mask, labels


@pytest.fixture(params=list(PAIRS))
def pair(request):
    return request.param
