"""PyTorch ProphetNet / RemBERT parts: what the conformance suite does not reach (part-level
outputs, training with dropout and gradient checkpointing, length limits, parts passed in)."""
import pytest
import torch

from encdec.configuration import BertConfig, EncoderDecoderConfig, ProphetNetConfig, RemBertConfig
from encdec_torch import EncoderDecoderModel, ProphetNetForCausalLM, RemBertForCausalLM, RemBertModel
from tests.core.tiny import part_kwargs


def prophetnet_config(**changes) -> ProphetNetConfig:
    return ProphetNetConfig(**{**part_kwargs("prophetnet"), "is_decoder": True, **changes})


def test_part_outputs_streams_and_tuple():
    model = ProphetNetForCausalLM(prophetnet_config(add_cross_attention=False)).eval()
    ids = torch.randint(3, 99, (2, 5))
    out = model(ids, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (2, 5, 99) and out.logits_ngram.shape == (2, 2, 5, 99)  # ngram 3: streams 1 and 2
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (2, 5, 32)
    assert out.hidden_states_ngram[0].shape == (2, 15, 32)
    assert out.attentions[0].shape == (2, 4, 5, 5) and out.ngram_attentions[0].shape == (2, 3, 4, 5, 10)
    assert torch.equal(model(ids, return_dict=False)[0], out.logits)
    # flags not given come from the config, as in transformers
    model.config.output_attentions, model.config.return_dict = True, False
    try:
        tup = model(ids)
        assert isinstance(tup, tuple) and torch.equal(tup[0], out.logits)
        assert model(ids, return_dict=True).attentions[0].shape == (2, 4, 5, 5)
    finally:
        model.config.output_attentions, model.config.return_dict = False, True


def test_cached_steps_equal_full_forward_where_transformers_layout_is_plain():
    """With one predict stream and one head, transformers' index layout of the predict bias is
    the plain one, so cached one-token steps must reproduce a full forward (masks, buckets, cache)."""
    model = ProphetNetForCausalLM(prophetnet_config(ngram=1, num_decoder_attention_heads=1, num_buckets=6,
                                                    relative_max_distance=12)).eval()
    ids, enc = torch.randint(3, 99, (2, 9)), torch.randn(2, 4, 32)
    enc_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    full = model(ids, encoder_hidden_states=enc, encoder_attention_mask=enc_mask).logits
    past, steps = None, []
    for i in range(ids.shape[1]):
        out = model(ids[:, i:i + 1], encoder_hidden_states=enc, encoder_attention_mask=enc_mask, past_key_values=past,
                    use_cache=True)
        past, steps = out.past_key_values, steps + [out.logits[:, 0]]
    torch.testing.assert_close(torch.stack(steps, 1), full, rtol=0, atol=1e-5)


def test_length_limit_is_refused_with_the_numbers():
    model = ProphetNetForCausalLM(prophetnet_config(add_cross_attention=False, pad_token_id=2)).eval()
    limit = 64 - 2 - 2
    model(torch.randint(3, 99, (1, limit)))
    with pytest.raises(ValueError, match=f"allows at most {limit} tokens"):
        model(torch.randint(3, 99, (1, limit + 1)))


def test_training_with_dropout_and_checkpointing():
    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(**part_kwargs("bert")), prophetnet_config(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1),
        decoder_start_token_id=2, pad_token_id=0)
    model = EncoderDecoderModel(config, seed=0).train()
    batch = dict(input_ids=torch.randint(3, 99, (2, 6)), labels=torch.randint(3, 99, (2, 4)))
    torch.manual_seed(1)
    plain = model(**batch).loss
    model.gradient_checkpointing_enable()
    torch.manual_seed(1)
    loss = model(**batch).loss
    loss.backward()
    torch.testing.assert_close(loss, plain)  # same dropout draws, recomputed in the backward pass
    grad = model.decoder.prophetnet.decoder.layers[0].self_attn.relative_pos_embeddings.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_rembert_parts_passed_in():
    enc = RemBertModel(RemBertConfig(**part_kwargs("rembert")))
    dec = RemBertForCausalLM(RemBertConfig(**part_kwargs("rembert"), is_decoder=True, add_cross_attention=True))
    model = EncoderDecoderModel(encoder=enc, decoder=dec).eval()
    out = model(input_ids=torch.randint(3, 99, (2, 6)), decoder_input_ids=torch.randint(3, 99, (2, 4)))
    assert out.logits.shape == (2, 4, 99)
    dec.config.output_hidden_states, dec.config.return_dict = True, False  # the part's config, not the composite's
    out = model(input_ids=torch.randint(3, 99, (2, 6)), decoder_input_ids=torch.randint(3, 99, (2, 4)))
    assert len(out.decoder_hidden_states) == 3 and out.encoder_hidden_states is None
    assert isinstance(dec(torch.randint(3, 99, (2, 4)), encoder_hidden_states=torch.zeros(2, 6, 32)), tuple)
    assert model.get_output_embeddings() is dec.cls.predictions.decoder
    assert dec.cls.predictions.decoder.weight.data_ptr() != dec.rembert.embeddings.word_embeddings.weight.data_ptr()
