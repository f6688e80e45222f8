"""The core input validator (encdec.validation): each rule once, on numpy inputs."""
from __future__ import annotations

import numpy as np
import pytest

from encdec.configuration import AutoConfig
from encdec.generation import GenerationConfig, resolve_generation
from encdec.specs import max_sequence_length
from encdec.validation import InputValidationError, validate_generate_inputs, validate_inputs
from tests.core.tiny import tiny_composite as composite


@pytest.fixture(scope="module")
def config():
    return composite()


def ids(batch=2, length=5, value=3, dtype=np.int64):
    return np.full((batch, length), value, dtype)


def fails(config, match, **inputs):
    with pytest.raises(InputValidationError, match=match):
        validate_inputs(config, **inputs)


def test_valid_inputs_pass(config):
    validate_inputs(config, input_ids=ids(), attention_mask=ids(value=1), decoder_input_ids=ids(length=4),
                       decoder_attention_mask=ids(length=4, value=1), labels=np.array([[-100] * 4, [1, 2, -100, -100]]))
    validate_inputs(config, input_ids=[[1, 2, 3]], labels=[[4, 5]])  # lists are arrays too


def test_ids_outside_vocab_name_argument_value_and_limit(config):
    fails(config, r"input_ids holds 99 at \(0, 0\); ids must be in \[0, 99\) \(config.encoder.vocab_size\)",
          input_ids=ids(value=99), decoder_input_ids=ids())
    fails(config, r"decoder_input_ids holds -1", input_ids=ids(), decoder_input_ids=ids(value=-1))
    fails(config, r"input_ids holds 4294967301", input_ids=ids(value=2**32 + 5, dtype=np.uint64), decoder_input_ids=ids())


def test_float_ids_refused(config):
    fails(config, "input_ids must hold integer token ids; got dtype float32",
          input_ids=ids(dtype=np.float32), decoder_input_ids=ids())


def test_labels_allow_ignore_index_only(config):
    fails(config, r"labels holds -5 .* or -100", input_ids=ids(), labels=ids(value=-5))
    fails(config, r"labels holds 99 .*\[0, 99\)", input_ids=ids(), labels=ids(value=99))
    fails(config, r"labels has shape \(2, 3\) but decoder_input_ids has shape \(2, 4\)",
          input_ids=ids(), labels=ids(length=3), decoder_input_ids=ids(length=4))


def test_float_values_checked(config):
    """Float masks hold 0 and 1 only; embeddings are finite (NaN would reach every output)."""
    fails(config, r"attention_mask holds 0.5 at \(0, 0\)", input_ids=ids(), attention_mask=np.full((2, 5), 0.5),
          decoder_input_ids=ids())
    embeds = np.ones((2, 5, 32), np.float32)
    embeds[1, 2, 3] = np.nan
    fails(config, r"inputs_embeds holds nan at \(1, 2, 3\); it must be finite", inputs_embeds=embeds, decoder_input_ids=ids())


def test_labels_give_a_defined_loss(config):
    """All -100 makes the mean loss NaN (allowed when the loss is a sum); labels shifted into
    decoder inputs need start and pad ids inside the decoder vocabulary."""
    fails(config, "labels are all -100", input_ids=ids(), labels=ids(value=-100))
    validate_inputs(config, input_ids=ids(), labels=ids(value=-100), loss_mean=False)
    for name, value in (("decoder_start_token_id", 99), ("pad_token_id", -1)):
        bad = composite(**{name: value})
        fails(bad, rf"config.{name}={value} must be a token id in \[0, 99\)", input_ids=ids(), labels=ids())
        validate_inputs(bad, input_ids=ids(), labels=ids(), decoder_input_ids=ids())  # not shifted: unused


def test_rank_and_empty(config):
    fails(config, r"input_ids must be \[batch, length\] \(rank 2\); got shape \(5,\)",
          input_ids=np.arange(5), decoder_input_ids=ids())
    fails(config, r"input_ids has an empty batch", input_ids=ids(batch=0), decoder_input_ids=ids())
    fails(config, r"decoder_input_ids has an empty sequence", input_ids=ids(), decoder_input_ids=ids(length=0))
    fails(config, "pass decoder_input_ids", input_ids=ids())
    fails(config, "pass input_ids", decoder_input_ids=ids())


def test_batch_agreement(config):
    fails(config, "attention_mask has batch size 3 but input_ids has batch size 2",
          input_ids=ids(), attention_mask=ids(batch=3, value=1), decoder_input_ids=ids())
    fails(config, r"attention_mask has shape \(2, 4\) but input_ids has shape \(2, 5\)",
          input_ids=ids(), attention_mask=ids(length=4, value=1), decoder_input_ids=ids())
    fails(config, "decoder_input_ids has batch size 3 but input_ids has batch size 2",
          input_ids=ids(), decoder_input_ids=ids(batch=3))
    fails(config, "labels has batch size 1 but input_ids has batch size 2", input_ids=ids(), labels=ids(batch=1))



def test_embeds_width_is_the_word_embedding_width():
    """inputs_embeds replace the word embeddings: ELECTRA's embedding_size and RemBERT's
    input_embedding_size (16 here; hidden 32), as transformers takes them."""
    config = composite("electra", "rembert")
    embeds = np.zeros((2, 5, 16), np.float32)
    validate_inputs(config, inputs_embeds=embeds, decoder_inputs_embeds=embeds)
    fails(config, "inputs_embeds has width 32 but the part's word embeddings have width 16",
          inputs_embeds=np.zeros((2, 5, 32), np.float32), decoder_input_ids=ids())
    fails(config, "decoder_inputs_embeds has width 32 but the part's word embeddings have width 16",
          input_ids=ids(), decoder_inputs_embeds=np.zeros((2, 5, 32), np.float32))

def test_mask_values(config):
    fails(config, r"attention_mask holds 2 at \(0, 0\); a mask holds only 0 and 1",
          input_ids=ids(), attention_mask=ids(value=2), decoder_input_ids=ids())


def test_positions_per_architecture():
    # bert: its table; roberta: after the padding index; bart: max_position_embeddings (table has 2 more rows);
    # prophetnet: predict positions reach pad + 1 + length; gpt2: n_positions
    assert max_sequence_length(AutoConfig.for_model("bert", max_position_embeddings=40)) == 40
    assert max_sequence_length(AutoConfig.for_model("roberta", max_position_embeddings=40, pad_token_id=1)) == 38
    assert max_sequence_length(AutoConfig.for_model("bart", max_position_embeddings=40)) == 40
    assert max_sequence_length(AutoConfig.for_model("prophetnet", max_position_embeddings=40, pad_token_id=0)) == 38
    assert max_sequence_length(AutoConfig.for_model("gpt2", n_positions=40)) == 40
    config = composite("roberta", "gpt2")
    fails(config, r"input_ids has 511 positions, but the encoder \(roberta\) embeds at most 510",
          input_ids=ids(length=511), decoder_input_ids=ids())
    fails(config, r"decoder_input_ids has 2 positions after 63 cached positions, but the decoder \(gpt2\) embeds at most 64",
          input_ids=ids(), decoder_input_ids=ids(length=2), past_length=63)
    validate_inputs(config, input_ids=ids(), decoder_input_ids=ids(length=2), past_length=None)  # unknown: skipped


def test_token_type_ids_within_table(config):
    fails(config, r"token_type_ids holds 2 .*config.encoder.type_vocab_size", input_ids=ids(),
          token_type_ids=ids(value=2), decoder_input_ids=ids())


def test_generate_ids_and_length(config):
    def plan(**kw):
        return resolve_generation(config, GenerationConfig.from_model_config(config), kw)[0]

    validate_generate_inputs(config, plan(max_new_tokens=5), ids())
    for name in ("decoder_start_token_id", "pad_token_id", "forced_bos_token_id", "forced_eos_token_id"):
        with pytest.raises(InputValidationError, match=rf"{name}=99 is outside the decoder vocabulary \[0, 99\)"):
            validate_generate_inputs(config, plan(**{name: 99}), ids())
    with pytest.raises(InputValidationError, match=r"max_length=65 .* exceeds the 64 positions the decoder \(gpt2\)"):
        validate_generate_inputs(config, plan(max_length=65), ids())
    with pytest.raises(InputValidationError, match="input_ids holds 100"):
        validate_generate_inputs(config, plan(), ids(value=100))


def test_values_unknown_checks_shapes_only(config):
    """Under jit / tf.function ``host`` returns None: shapes and dtypes are still checked."""
    validate_inputs(config, input_ids=ids(value=500), decoder_input_ids=ids(), host=lambda x: None)
    fails(config, "decoder_input_ids has batch size 3", input_ids=ids(), decoder_input_ids=ids(batch=3),
          host=lambda x: None)
