"""TF model guards that only matter under XLA."""
import numpy as np
import pytest


def test_too_long_input_is_refused_under_xla():
    """XLA clamps out-of-range gathers; the static length check refuses instead."""
    import tensorflow as tf
    from encdec import BertConfig, EncoderDecoderConfig
    from encdec_tf import TFEncoderDecoderModel

    small = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=8)
    cfg = EncoderDecoderConfig.from_encoder_decoder_configs(BertConfig(**small), BertConfig(**small),
                                                            decoder_start_token_id=2, pad_token_id=0)
    model = TFEncoderDecoderModel(config=cfg)
    ids = np.ones((1, 9), np.int32)
    call = tf.function(lambda i: model(input_ids=i, decoder_input_ids=i[:, :3]).logits, jit_compile=True)
    with pytest.raises(ValueError, match=r"input_ids has 9 positions, but the encoder \(bert\) embeds at most 8"):
        call(ids)
    assert call(ids[:, :8]).shape == (1, 3, 99)
