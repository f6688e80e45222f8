"""Torch part models, registered with the core registry on import."""
from __future__ import annotations

from encdec.registry import register
from encdec_torch.models.bart import BartForCausalLM
from encdec_torch.models.bert import BertLMHeadModel, BertModel
from encdec_torch.models.bert_generation import BertGenerationDecoder, BertGenerationEncoder
from encdec_torch.models.electra import ElectraModel
from encdec_torch.models.gpt2 import GPT2LMHeadModel
from encdec_torch.models.prophetnet import ProphetNetForCausalLM
from encdec_torch.models.rembert import RemBertForCausalLM, RemBertModel
from encdec_torch.models.roberta import RobertaForCausalLM, RobertaModel

register("torch", "bert", encoder=BertModel, decoder=BertLMHeadModel)
register("torch", "roberta", encoder=RobertaModel, decoder=RobertaForCausalLM)
register("torch", "electra", encoder=ElectraModel)
register("torch", "gpt2", decoder=GPT2LMHeadModel)
register("torch", "bart", decoder=BartForCausalLM)
register("torch", "prophetnet", decoder=ProphetNetForCausalLM)
register("torch", "rembert", encoder=RemBertModel, decoder=RemBertForCausalLM)
register("torch", "bert-generation", encoder=BertGenerationEncoder, decoder=BertGenerationDecoder)

__all__ = [
    "BartForCausalLM",
    "BertGenerationDecoder",
    "BertGenerationEncoder",
    "BertLMHeadModel",
    "BertModel",
    "ElectraModel",
    "GPT2LMHeadModel",
    "ProphetNetForCausalLM",
    "RemBertForCausalLM",
    "RemBertModel",
    "RobertaForCausalLM",
    "RobertaModel",
]
