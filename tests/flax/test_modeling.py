"""FlaxEncoderDecoderModel against transformers 4.57's Flax class (parameter tree and logits)
on the same canonical weights, for every supported pair, with padded inputs; every output and
the loss against transformers PyTorch: conformance_tests/test_forward.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict

from encdec.configuration import BertConfig, EncoderDecoderConfig, GPT2Config
from encdec_flax import FlaxEncoderDecoderModel
from encdec_flax.models.bert import position_ids_for
from tests.flax.conftest import PAIRS, bert_like, canonical_weights, hf_config, hf_pt_model, inputs, make_config

TOL = 1e-5


def build(pair, dtype=jnp.float32, std=0.02):
    cfg = make_config(pair)
    weights = canonical_weights(cfg, std=std)
    model = FlaxEncoderDecoderModel(cfg, dtype=dtype, _do_init=False)
    model.load_canonical(weights)
    return cfg, weights, model


def decoder_inputs(cfg, labels):
    shifted = np.concatenate([np.full((labels.shape[0], 1), cfg.decoder_start_token_id), labels[:, :-1]], 1)
    return np.where(shifted == -100, cfg.pad_token_id, shifted).astype(np.int32)


def maxdiff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())


@pytest.mark.parametrize("pair", [p for p in PAIRS if p != "electra2gpt2"])
def test_matches_transformers_flax(pair):
    """Same parameter tree as transformers' Flax class, same logits.  (transformers'
    Flax ELECTRA cannot run as an encoder there: it requires token_type_ids.)"""
    import transformers

    cfg, _, model = build(pair)
    ids, mask, labels = inputs(pair)
    dec = decoder_inputs(cfg, labels)
    hf = transformers.FlaxEncoderDecoderModel(hf_config(cfg), input_shape=((1, 1), (1, 1)))
    hf_tree = {k: v.shape for k, v in flatten_dict(hf.params).items()}
    assert hf_tree == {k: v.shape for k, v in flatten_dict(model.params).items()}
    kwargs = {}
    if pair == "roberta2roberta":  # transformers' Flax composite passes arange positions; PyTorch uses RoBERTa's rule
        kwargs = dict(position_ids=position_ids_for(cfg.encoder, jnp.asarray(ids), 0),
                      decoder_position_ids=position_ids_for(cfg.decoder, jnp.asarray(dec), 0))
    ref = hf(ids, mask, dec, params=model.params, **kwargs)
    assert maxdiff(model(ids, mask, dec).logits, ref.logits) < TOL


def test_params_follow_module_and_canonical_names(pair):
    cfg, weights, model = build(pair)
    ids, mask, labels = inputs(pair)
    shapes = jax.eval_shape(model.module.init, jax.random.PRNGKey(0), ids, mask, decoder_inputs(cfg, labels))
    assert {k: v.shape for k, v in flatten_dict(shapes["params"]).items()} == {k: v.shape for k, v in flatten_dict(model.params).items()}
    state = model.canonical_state()
    assert set(state) == set(weights)
    assert all(np.array_equal(state[k], weights[k]) for k in weights)


@pytest.mark.parametrize("pair", ["bert2gpt2", "roberta2roberta", "bert2bart", "projection"])
def test_cached_decode_matches_uncached(pair):
    cfg, _, model = build(pair)
    ids, mask, labels = inputs(pair)
    dec = decoder_inputs(cfg, np.where(labels == -100, 5, labels))
    enc = model.encode(ids, mask)
    full = model.decode(dec, enc, mask).logits
    cache = model.init_cache(dec.shape[0], 8, enc)
    step = model.decode(dec[:, :2], enc, mask, past_key_values=cache)  # a chunk, then one token at a time
    logits = [step.logits]
    for t in range(2, dec.shape[1]):
        step = model.decode(dec[:, t:t + 1], enc, mask, past_key_values=step.past_key_values)
        logits.append(step.logits)
    assert maxdiff(jnp.concatenate(logits, 1), full) < TOL
    assert int(step.past_key_values["index"]) == dec.shape[1]


def test_tie_encoder_decoder_shares_weights():
    cfg = make_config("bert2bert")
    cfg.tie_encoder_decoder = True
    weights = canonical_weights(cfg)
    model = FlaxEncoderDecoderModel(cfg, _do_init=False)
    model.load_canonical(weights)
    assert "embeddings" not in model.params["decoder"]["bert"]  # held once, under the encoder
    ids, mask, labels = inputs("bert2bert")
    out = model(ids, mask, labels=labels)
    with torch.no_grad():
        ref = hf_pt_model(cfg, weights)(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                                        labels=torch.tensor(labels, dtype=torch.long))
    assert maxdiff(out.logits, ref.logits) < TOL
    state = model.canonical_state()
    name = "encoder.layer.1.output.dense.weight"
    np.testing.assert_array_equal(state[f"decoder.bert.{name}"], state[f"encoder.{name}"])


def test_jit_and_grad():
    cfg, _, model = build("bert2gpt2")
    ids, mask, labels = inputs("bert2gpt2")
    eager = model(ids, mask, labels=labels)
    jitted = jax.jit(model.__call__)(ids, mask, labels=labels)
    assert maxdiff(jitted.logits, eager.logits) < TOL

    def loss_fn(params):
        return model(ids, mask, labels=labels, params=params).loss

    loss, grads = jax.value_and_grad(loss_fn)(model.params)
    assert abs(float(loss) - float(eager.loss)) < TOL
    norms = [float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(grads)]
    assert all(np.isfinite(norms)) and max(norms) > 0
    assert float(jnp.abs(grads["enc_to_dec_proj" if "enc_to_dec_proj" in grads else "encoder"]["embeddings"]["word_embeddings"]["embedding"]).max()) > 0


def test_dropout_only_in_training():
    _, _, model = build("bert2bart")
    ids, mask, labels = inputs("bert2bart")
    base = model(ids, mask, labels=labels).logits
    assert maxdiff(model(ids, mask, labels=labels).logits, base) == 0
    trained = model(ids, mask, labels=labels, train=True, dropout_rng=jax.random.PRNGKey(1)).logits
    assert maxdiff(trained, base) > 1e-3
    with pytest.raises(ValueError, match="dropout_rng"):
        model(ids, mask, labels=labels, train=True)


def test_bfloat16_close_to_float32():
    _, _, model = build("bert2gpt2")
    _, _, half = build("bert2gpt2", dtype=jnp.bfloat16)
    ids, mask, labels = inputs("bert2gpt2")
    ref = model(ids, mask, labels=labels)
    # bf16 params and compute: 8 mantissa bits (~3e-3 relative) through 4 layers -> 5e-2 on logits of size ~1
    out = half(ids, mask, labels=labels, params=half.to_bf16(half.params))
    assert out.logits.dtype == jnp.bfloat16
    assert maxdiff(out.logits, ref.logits) < 5e-2
    assert abs(float(out.loss) - float(ref.loss)) < 5e-2
    back = half.to_fp32(half.to_bf16(half.params))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(back))


def test_config_errors():
    enc, dec = bert_like(BertConfig), GPT2Config(vocab_size=99, n_embd=32, n_layer=1, n_head=4)
    with pytest.raises(TypeError, match="EncoderDecoderConfig"):
        FlaxEncoderDecoderModel(enc)
    with pytest.raises(ValueError, match="add_cross_attention"):
        FlaxEncoderDecoderModel(EncoderDecoderConfig(encoder=enc, decoder=dec))
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(bert_like(BertConfig, hidden=48), GPT2Config(
        vocab_size=99, n_embd=32, n_layer=1, n_head=4, cross_attention_hidden_size=32))
    with pytest.raises(ValueError, match="cross_attention_hidden_size"):
        FlaxEncoderDecoderModel(cfg)
    with pytest.raises(NotImplementedError, match="position_embedding_type"):
        FlaxEncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(
            bert_like(BertConfig, position_embedding_type="rotary"), bert_like(BertConfig)))
    cfg = make_config("bert2gpt2")
    model = FlaxEncoderDecoderModel(cfg, _do_init=False)
    bad = canonical_weights(cfg)
    bad.pop("decoder.transformer.ln_f.weight")
    with pytest.raises(ValueError, match="ln_f"):
        model.load_canonical(bad)


def test_portable_init_is_seeded():
    cfg = make_config("bert2bert")
    a, b, c = (FlaxEncoderDecoderModel(cfg, seed=s).canonical_state() for s in (0, 0, 1))
    name = "decoder.bert.encoder.layer.0.crossattention.self.query.weight"
    assert np.array_equal(a[name], b[name]) and not np.array_equal(a[name], c[name])
