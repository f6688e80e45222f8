"""Tiny model pairs with identical canonical weights in encdec_tf and transformers (PyTorch)."""
from __future__ import annotations

import numpy as np

from encdec import configuration as C
from encdec.init import init_weights
from encdec.specs import encoder_decoder_spec
from tests.core.tiny import PAIRS, pair_id, part_kwargs

__all__ = ["PAIRS", "pair_id", "make_config", "make_pair", "hf_model", "inputs"]

PAD = {"roberta": 1}
START = 2


def make_config(pair) -> C.EncoderDecoderConfig:
    enc, dec, hidden, extra = pair
    e = C.config_class_for(enc)(**part_kwargs(enc, hidden))
    d = C.config_class_for(dec)(**part_kwargs(dec))
    return C.EncoderDecoderConfig.from_encoder_decoder_configs(
        e, d, decoder_start_token_id=START, pad_token_id=PAD.get(dec, 0), **extra)


def hf_model(config: C.EncoderDecoderConfig, weights: dict, attn: str = "eager"):
    """transformers' model; ``attn="eager"`` so that it returns attention probabilities."""
    import torch
    import transformers

    hc = transformers.EncoderDecoderConfig.from_dict(config.to_dict())
    for c in (hc, hc.encoder, hc.decoder):
        c._attn_implementation = attn
    model = transformers.EncoderDecoderModel(config=hc).eval()
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    return model


def make_pair(pair, seed: int = 0, hf: bool = True):
    """(ours, transformers model or None, canonical weights) with randomized weights."""
    from encdec_tf import TFEncoderDecoderModel

    config = make_config(pair)
    weights = init_weights(encoder_decoder_spec(config), seed, randomize_all=True)
    ours = TFEncoderDecoderModel(config)
    ours.load_canonical(weights)
    return ours, (hf_model(make_config(pair), weights) if hf else None), weights


def inputs(pad: int, seed: int = 0, batch: int = 3, src: int = 9, tgt: int = 6):
    """Encoder ids with right- and left-padded rows, decoder ids with a right-padded row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 99, (batch, src))
    mask = np.ones((batch, src), np.int64)
    mask[1, -3:] = 0
    mask[2, :2] = 0
    ids[mask == 0] = pad
    dec = rng.integers(3, 99, (batch, tgt))
    dmask = np.ones((batch, tgt), np.int64)
    dmask[1, -2:] = 0
    dec[dmask == 0] = pad
    labels = rng.integers(3, 99, (batch, tgt))
    labels[0, -2:] = -100
    return dict(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, decoder_attention_mask=dmask), labels
