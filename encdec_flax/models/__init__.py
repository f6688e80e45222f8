"""Flax part models, registered with the core registry under backend ``"flax"``.

Encoders are called ``(input_ids, attention_mask, token_type_ids, position_ids,
deterministic, output_attentions, output_hidden_states)`` and return
``(last_hidden_state, hidden_states, attentions, ...)``.  Decoders are called
``(input_ids, attention_mask, position_ids, encoder_hidden_states, encoder_attention_mask,
cache, deterministic, output_attentions, output_hidden_states)`` and return
``(logits, hidden_states, attentions, cross_attentions, cache)``; their ``init_cache``
method builds the static-shape cache pytree.
"""
from encdec.registry import register
from encdec_flax.models.bart import BartForCausalLM
from encdec_flax.models.bert import BertLMHeadModel, BertModel
from encdec_flax.models.bert_generation import BertGenerationDecoder, BertGenerationEncoder
from encdec_flax.models.electra import ElectraModel
from encdec_flax.models.gpt2 import GPT2LMHeadModel
from encdec_flax.models.layers import FLAX_LAYOUT
from encdec_flax.models.prophetnet import ProphetNetForCausalLM
from encdec_flax.models.rembert import RemBertForCausalLM, RemBertModel

register("flax", "bert", encoder=BertModel, decoder=BertLMHeadModel)
register("flax", "roberta", encoder=BertModel, decoder=BertLMHeadModel)
register("flax", "electra", encoder=ElectraModel)
register("flax", "gpt2", decoder=GPT2LMHeadModel)
register("flax", "bart", decoder=BartForCausalLM)
register("flax", "prophetnet", decoder=ProphetNetForCausalLM)
register("flax", "rembert", encoder=RemBertModel, decoder=RemBertForCausalLM)
register("flax", "bert-generation", encoder=BertGenerationEncoder, decoder=BertGenerationDecoder)

__all__ = ["BartForCausalLM", "BertGenerationDecoder", "BertGenerationEncoder", "BertLMHeadModel", "BertModel", "ElectraModel", "GPT2LMHeadModel", "FLAX_LAYOUT",
           "ProphetNetForCausalLM", "RemBertForCausalLM", "RemBertModel"]
