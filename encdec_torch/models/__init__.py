"""Torch part models, registered with the core registry on import."""
from __future__ import annotations

from encdec.registry import register
from encdec_torch.models.bart import BartForCausalLM
from encdec_torch.models.bert import BertLMHeadModel, BertModel
from encdec_torch.models.electra import ElectraModel
from encdec_torch.models.gpt2 import GPT2LMHeadModel
from encdec_torch.models.roberta import RobertaForCausalLM, RobertaModel

register("torch", "bert", encoder=BertModel, decoder=BertLMHeadModel)
register("torch", "roberta", encoder=RobertaModel, decoder=RobertaForCausalLM)
register("torch", "electra", encoder=ElectraModel)
register("torch", "gpt2", decoder=GPT2LMHeadModel)
register("torch", "bart", decoder=BartForCausalLM)

__all__ = [
    "BartForCausalLM",
    "BertLMHeadModel",
    "BertModel",
    "ElectraModel",
    "GPT2LMHeadModel",
    "RobertaForCausalLM",
    "RobertaModel",
]
