"""Tiny pairs, shared weights and the transformers oracle for the torch backend tests."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from encdec.configuration import EncoderDecoderConfig, config_class_for
from encdec.init import init_weights
from encdec.specs import encoder_decoder_spec
from encdec_torch import EncoderDecoderModel

VOCAB = 99
START, PAD_GPT2, EOS = 2, 0, 3


def part_kwargs(model_type: str, hidden: int = 32) -> dict[str, Any]:
    """Hidden 32 (or ``hidden``), 2 layers, vocab 99, dropout off."""
    if model_type == "gpt2":
        return dict(vocab_size=VOCAB, n_embd=hidden, n_layer=2, n_head=4, n_positions=64,
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    if model_type == "bart":
        return dict(vocab_size=VOCAB, d_model=hidden, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=37,
                    encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=37, max_position_embeddings=64,
                    dropout=0.0, scale_embedding=True)
    extra = {"embedding_size": 16} if model_type == "electra" else {}
    return dict(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **extra)


#: id -> (encoder type, decoder type, encoder hidden, composite extras)
PAIRS = {
    "bert2bert": ("bert", "bert", 32, {}),
    "bert2gpt2": ("bert", "gpt2", 32, {}),
    "roberta2roberta": ("roberta", "roberta", 32, {}),
    "electra2gpt2": ("electra", "gpt2", 32, {}),
    "bert2bart": ("bert", "bart", 32, {}),
    "bert48-gpt2-proj": ("bert", "gpt2", 48, {}),
}


def make_config(pair: str, **extra: Any) -> EncoderDecoderConfig:
    enc_type, dec_type, hidden, pair_extra = PAIRS[pair]
    enc = config_class_for(enc_type)(**part_kwargs(enc_type, hidden))
    dec = config_class_for(dec_type)(**part_kwargs(dec_type))
    pad = dec.pad_token_id if dec.pad_token_id is not None else PAD_GPT2
    ids = dict(decoder_start_token_id=START, pad_token_id=pad, eos_token_id=EOS)
    return EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, **{**ids, **pair_extra, **extra})


def hf_model(config: EncoderDecoderConfig, weights: dict[str, np.ndarray], attn: str | None = None):
    """transformers' model with ``weights``; ``attn="eager"`` where attention weights are
    compared (its SDPA GPT-2 and BART return ``None`` for them)."""
    import transformers

    hf_config = transformers.EncoderDecoderConfig.from_dict(json.loads(config.to_json_string()))
    if attn is not None:
        for part in (hf_config, hf_config.encoder, hf_config.decoder):
            part._attn_implementation = attn
    model = transformers.EncoderDecoderModel(config=hf_config)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()}, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def build_pair(pair: str, seed: int = 0, attn: str | None = None, **extra: Any):
    """(config, weights, ours, transformers') holding the same random weights."""
    config = make_config(pair, **extra)
    weights = init_weights(encoder_decoder_spec(config), seed=seed, randomize_all=True)
    ours = EncoderDecoderModel(config).eval()
    ours.load_canonical(weights)
    return config, weights, ours, hf_model(config, weights, attn)


def inputs(config: EncoderDecoderConfig, batch: int = 3, src: int = 7, tgt: int = 5, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random ids with right padding in both encoder and decoder masks (row 0 unpadded)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (batch, src), generator=g)
    dec = torch.randint(4, VOCAB, (batch, tgt), generator=g)
    dec[:, 0] = START
    mask = torch.ones(batch, src, dtype=torch.long)
    dmask = torch.ones(batch, tgt, dtype=torch.long)
    for row in range(1, batch):
        mask[row, src - row:] = 0
        dmask[row, tgt - row:] = 0
    pad = config.pad_token_id
    ids = ids.masked_fill(mask == 0, config.encoder.pad_token_id if config.encoder.pad_token_id is not None else pad)
    return dict(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask)


def max_diff(a: Any, b: Any) -> float:
    """Max |a - b| over (nested tuples of) tensors of equal structure."""
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b), (len(a), len(b))
        return max([max_diff(x, y) for x, y in zip(a, b)], default=0.0)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.detach().double() - b.detach().double()).abs().max())
