"""The core sharding rule, once for every architecture pair's spec."""
import logging
import re

import numpy as np
import pytest

from encdec import configuration as C
from encdec.sharding import (COLUMN, DATA, MODEL, REPLICATED, ROW, VOCAB, backend_axes, describe, plan_sharding,
                             sharding_plan)
from encdec.specs import BIAS, CONV1D, EMBEDDING, LINEAR, NORM_BIAS, NORM_SCALE, encoder_decoder_spec

from .tiny import PAIRS, pair_id, part_kwargs

#: sizes every tiny part gets here so that a model axis of 2 or 4 divides them.
DIVISIBLE = {"vocab_size": 100, "intermediate_size": 64, "decoder_ffn_dim": 64, "encoder_ffn_dim": 64, "n_inner": 64}
LAYER = re.compile(r"^(encoder|decoder)\..*?\.(layer|layers|h)\.(\d+)\.")


def config(pair, divisible: bool = True):
    enc, dec, hidden, extra = pair

    def part(model_type, h=32):
        kwargs = part_kwargs(model_type, h)
        if divisible:
            kwargs.update({k: v for k, v in DIVISIBLE.items() if k in kwargs or k == "vocab_size"})
        return C.config_class_for(model_type)(**kwargs)

    return C.EncoderDecoderConfig.from_encoder_decoder_configs(part(enc, hidden), part(dec), **extra)


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_megatron_pairs_for_every_architecture(pair):
    cfg = config(pair)
    spec = encoder_decoder_spec(cfg)
    for model_size in (2, 4):
        plan = sharding_plan(cfg, data_size=2, model_size=model_size)
        assert set(plan.placements) == set(spec.params)
        assert not plan.fallbacks, plan.fallbacks
        per_layer: dict[str, set[str]] = {}
        for p in plan:
            assert len(p.axes) == len(p.shape) and DATA not in p.axes  # data axis only with fsdp
            if p.model_dim is not None:
                assert p.shape[p.model_dim] % model_size == 0
                assert p.local_shape(2, model_size)[p.model_dim] * model_size == p.shape[p.model_dim]
            if p.kind in (NORM_SCALE, NORM_BIAS):
                assert p.role == REPLICATED, p
            if p.role == COLUMN and p.kind in (LINEAR, CONV1D):
                assert p.model_dim == (0 if p.kind == LINEAR else 1), p  # output features
                bias = p.name[: -len("weight")] + "bias"
                if bias in spec:
                    assert plan[bias].role == COLUMN and plan[bias].axes == (MODEL,)
            if p.role == ROW:
                assert p.model_dim == (1 if p.kind == LINEAR else 0), p  # input features
                bias = p.name[: -len("weight")] + "bias"
                if bias in spec:
                    assert plan[bias].role == REPLICATED  # added once after the reduction
            if p.kind == EMBEDDING and not re.search(r"word_embeddings|wte|embed_tokens", p.name):
                assert p.role == REPLICATED, p  # position / token-type tables
            m = LAYER.match(p.name)
            if m and p.kind in (LINEAR, CONV1D):
                per_layer.setdefault(m.group(0), set()).add(p.role)
        # every transformer layer of both parts holds column and row pairs (attention + MLP)
        assert per_layer and all({COLUMN, ROW} <= roles for roles in per_layer.values()), per_layer
        for tied, source in spec.ties.items():
            assert plan[tied].axes == plan[source].axes
        # word embeddings and the LM head split on the vocabulary by default
        heads = [p for p in plan if p.kind == LINEAR and re.search(r"(lm_head|lm_head\.decoder|predictions\.decoder)\.weight$", p.name)]
        assert heads and all(p.role == VOCAB and p.axes == (MODEL, None) for p in heads)


@pytest.mark.parametrize("pair", PAIRS[:2], ids=pair_id)
def test_hidden_split_fsdp_and_single_device(pair):
    cfg = config(pair)
    spec = encoder_decoder_spec(cfg)
    hidden = sharding_plan(cfg, 1, 2, embeddings="hidden")
    words = [p for p in hidden if p.kind == EMBEDDING and re.search(r"word_embeddings|wte", p.name)]
    assert words and all(p.axes == (None, MODEL) for p in words)
    assert all(p.role == REPLICATED for p in plan_sharding(spec, 8, 1))  # no model axis: all replicated
    fsdp = sharding_plan(cfg, data_size=2, model_size=2, fsdp=True)
    for p in fsdp:
        free = [s for s, a in zip(p.shape, p.axes) if a is None and s % 2 == 0]
        assert (DATA in p.axes) == bool(free or DATA in p.axes), p
        assert p.axes.count(DATA) <= 1 and p.axes.count(MODEL) <= 1
    # FSDP halves what each device holds again (every tiny dim of size > 1 is even here)
    full, tp, both = (plan.memory(spec)["params"] for plan in (plan_sharding(spec), sharding_plan(cfg, 2, 2), fsdp))
    assert full == 4 * spec.num_parameters() and full > tp > both
    assert both < 0.6 * tp


def test_fallback_is_logged_and_strict_raises(caplog):
    cfg = config(PAIRS[0], divisible=False)  # vocab 99, intermediate 37
    with caplog.at_level(logging.WARNING, logger="encdec.sharding"):
        plan = sharding_plan(cfg, 1, 2)
    p = plan["encoder.encoder.layer.0.intermediate.dense.weight"]
    assert p.role == REPLICATED and p.axes == (None, None) and "37" in p.note
    # its row partner falls back too: the pair stays consistent
    assert plan["encoder.encoder.layer.0.output.dense.weight"].role == REPLICATED
    assert plan["encoder.encoder.layer.0.attention.self.query.weight"].role == COLUMN
    assert any("encoder.embeddings.word_embeddings.weight (99, 32)" in r.getMessage() and "99" in r.getMessage()
               for r in caplog.records)
    assert "fallback: encoder.encoder.layer.0.intermediate.dense.weight" in describe(plan)
    with pytest.raises(ValueError, match=r"encoder\.embeddings\.word_embeddings\.weight \(99, 32\).*size 99.*model axis size 2"):
        sharding_plan(cfg, 1, 2, strict=True)
    # heads: 4 heads over a model axis of 8 (hidden 32 divides, heads do not)
    with pytest.raises(ValueError, match=r"attention\.self\.query\.weight .*heads \(4\).*model axis size 8"):
        sharding_plan(config(PAIRS[0]), 1, 8, strict=True, embeddings=None)
    for bad, match in (({"model_size": 0}, "model_size"), ({"embeddings": "rows"}, "embeddings")):
        with pytest.raises(ValueError, match=match):
            sharding_plan(cfg, **bad)


def test_backend_axes_flip_transposed_kinds():
    plan = sharding_plan(config(("bert", "gpt2", 32, {})), 1, 2)
    q = plan["encoder.encoder.layer.0.attention.self.query.weight"]  # Linear [out, in]: column -> dim 0
    c = plan["decoder.transformer.h.0.attn.c_attn.weight"]  # Conv1D [in, out]: column -> dim 1
    assert q.axes == (MODEL, None) and c.axes == (None, MODEL)
    # a Flax/Keras kernel is [in, out] for both kinds
    assert backend_axes(q, {LINEAR, CONV1D}) == (None, MODEL)
    assert backend_axes(c, {LINEAR, CONV1D}) == (MODEL, None)
    assert backend_axes(plan["decoder.transformer.h.0.attn.c_attn.bias"], {LINEAR, CONV1D}) == (MODEL,)
    assert plan["decoder.transformer.h.0.attn.c_attn.bias"].kind == BIAS


def test_memory_arithmetic_bert2bert_large():
    """L-24 bert2bert (H=1024, 16 heads, vocab 30522): parameter count as in the paper's
    scale, and per-device bytes under data-parallel, tensor-parallel and FSDP layouts."""
    big = dict(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    cfg = C.EncoderDecoderConfig.from_encoder_decoder_configs(C.BertConfig(**big), C.BertConfig(**big))
    spec = encoder_decoder_spec(cfg)
    n = spec.num_parameters()
    assert 7.0e8 < n < 8.5e8
    dp = plan_sharding(spec, 8, 1).memory(spec)
    assert dp == {"params": 4 * n, "grads": 4 * n, "optimizer": 8 * n}
    tp = sharding_plan(cfg, 1, 8).memory(spec)
    fsdp = sharding_plan(cfg, 8, 1, fsdp=True).memory(spec)
    # 30522 is not a multiple of 8: the vocabulary-split tables fall back (and say so); split on hidden, none do
    assert [f.split(" ")[0] for f in sharding_plan(cfg, 1, 8).fallbacks] == [
        "encoder.embeddings.word_embeddings.weight", "decoder.bert.embeddings.word_embeddings.weight",
        "decoder.cls.predictions.bias"]
    assert not sharding_plan(cfg, 1, 8, embeddings="hidden").fallbacks
    assert tp["params"] < 0.2 * dp["params"]
    assert abs(fsdp["params"] - dp["params"] / 8) < 0.01 * dp["params"]
    assert np.isclose(sum(fsdp.values()), 16 * n / 8, rtol=0.01)
