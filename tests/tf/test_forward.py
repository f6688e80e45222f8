"""Forward pass against transformers 4.57 (PyTorch) on the same canonical weights."""
import numpy as np
import pytest
import tensorflow as tf
import torch

from .helpers import PAIRS, inputs, make_pair, pair_id

TOL = 1e-5


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_logits_hidden_states_attentions_loss(pair):
    ours, hf, _ = make_pair(pair)
    feed, labels = inputs(ours.config.pad_token_id)
    out = ours(**feed, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        ref = hf(**{k: torch.tensor(v) for k, v in feed.items()}, output_hidden_states=True, output_attentions=True)
    assert _max_diff(out.logits, ref.logits) < TOL
    assert _max_diff(out.encoder_last_hidden_state, ref.encoder_last_hidden_state) < TOL
    for name in ("decoder_hidden_states", "encoder_hidden_states", "decoder_attentions", "cross_attentions", "encoder_attentions"):
        ours_t, ref_t = getattr(out, name), getattr(ref, name)
        assert len(ours_t) == len(ref_t), name
        for a, b in zip(ours_t, ref_t):
            assert _max_diff(a, b) < TOL, name

    # labels only: decoder inputs and mask derived from the labels, scalar masked-mean loss
    out = ours(input_ids=feed["input_ids"], attention_mask=feed["attention_mask"], labels=labels)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(feed["input_ids"]), attention_mask=torch.tensor(feed["attention_mask"]),
                 labels=torch.tensor(labels))
    assert out.loss.shape == ()
    assert abs(float(out.loss) - float(ref.loss)) < TOL
    assert _max_diff(out.logits, ref.logits) < TOL


@pytest.mark.parametrize("pair", [PAIRS[1], PAIRS[2]], ids=pair_id)
def test_cached_decoding_matches_full_pass(pair):
    ours, _, _ = make_pair(pair, hf=False)
    feed, _ = inputs(ours.config.pad_token_id)
    full = ours(input_ids=feed["input_ids"], attention_mask=feed["attention_mask"],
                decoder_input_ids=feed["decoder_input_ids"]).logits
    enc = ours.encoder(input_ids=feed["input_ids"], attention_mask=feed["attention_mask"])
    past, steps = None, []
    for t in range(feed["decoder_input_ids"].shape[1]):
        out = ours(attention_mask=feed["attention_mask"], encoder_outputs=enc, past_key_values=past,
                   decoder_input_ids=feed["decoder_input_ids"][:, t:t + 1], use_cache=True)
        past = out.past_key_values
        steps.append(out.logits)
    assert _max_diff(tf.concat(steps, axis=1), full) < TOL


def test_numpy_and_tensor_inputs_under_tf_function_and_xla():
    from encdec.outputs import Seq2SeqLMOutput

    ours, _, _ = make_pair(PAIRS[1], hf=False)
    feed, labels = inputs(0)
    eager = ours(**feed, labels=labels)
    tensors = {k: tf.constant(v, tf.int32) for k, v in feed.items()}
    for compiled in (tf.function(ours), tf.function(ours, jit_compile=True)):
        out = compiled(**tensors, labels=tf.constant(labels, tf.int32), use_cache=False)
        assert isinstance(out, Seq2SeqLMOutput) and out.past_key_values is None
        assert _max_diff(out.logits, eager.logits) < TOL
        assert abs(float(out.loss) - float(eager.loss)) < TOL


def test_inputs_embeds_equal_ids():
    ours, _, _ = make_pair(PAIRS[1], hf=False)
    feed, _ = inputs(0)
    by_ids = ours(**feed).logits
    embeds = tf.gather(ours.encoder.embeddings.word.embeddings, feed["input_ids"])
    dec_embeds = tf.gather(ours.decoder.wte.embeddings, feed["decoder_input_ids"])
    by_embeds = ours(inputs_embeds=embeds, attention_mask=feed["attention_mask"], decoder_inputs_embeds=dec_embeds,
                     decoder_attention_mask=feed["decoder_attention_mask"]).logits
    assert _max_diff(by_ids, by_embeds) < TOL


def test_routing_extra_encoder_kwargs_and_unknown_names():
    ours, hf, _ = make_pair(PAIRS[0])
    feed, _ = inputs(0)
    tt = np.zeros_like(feed["input_ids"])
    tt[:, 4:] = 1
    pos = np.tile(np.arange(feed["input_ids"].shape[1])[::-1], (feed["input_ids"].shape[0], 1))
    out = ours(**feed, token_type_ids=tt, position_ids=pos)
    with torch.no_grad():
        ref = hf(**{k: torch.tensor(v) for k, v in feed.items()}, token_type_ids=torch.tensor(tt), position_ids=torch.tensor(pos))
    assert _max_diff(out.logits, ref.logits) < TOL
    with pytest.raises(TypeError, match="decoder_"):
        ours(**feed, bogus_argument=1)


def test_construction_errors():
    from encdec_tf import TFEncoderDecoderModel
    from encdec_tf.models import TFBertLMHeadModel, TFBertModel

    from .helpers import make_config

    with pytest.raises(ValueError, match="either `config` or both"):
        TFEncoderDecoderModel()
    with pytest.raises(TypeError, match="EncoderDecoderConfig"):
        TFEncoderDecoderModel(config=make_config(PAIRS[0]).encoder)
    cfg = make_config(PAIRS[0])
    with pytest.raises(ValueError, match="LM head"):
        TFEncoderDecoderModel(encoder=TFBertLMHeadModel(cfg.decoder), decoder=TFBertLMHeadModel(cfg.decoder))
    plain = make_config(PAIRS[0]).decoder
    plain.add_cross_attention = False
    with pytest.raises(ValueError, match="cannot attend"):
        TFEncoderDecoderModel(encoder=TFBertModel(cfg.encoder), decoder=TFBertLMHeadModel(plain))
    cfg = make_config(PAIRS[5])
    cfg.decoder.cross_attention_hidden_size = 40
    with pytest.raises(ValueError, match="cross_attention_hidden_size"):
        TFEncoderDecoderModel(cfg)


def test_parts_share_config_objects_and_projection_exists():
    ours, _, weights = make_pair(PAIRS[5], hf=False)
    assert ours.config.encoder is ours.encoder.config and ours.config.decoder is ours.decoder.config
    assert ours.enc_to_dec_proj is not None
    state = ours.canonical_state()
    assert state.keys() == weights.keys()
    assert all(np.array_equal(state[k], weights[k]) for k in weights)
