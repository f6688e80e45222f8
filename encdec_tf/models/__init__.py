"""TF part models, registered with the core registry under backend ``"tf"``."""
from encdec.registry import register
from encdec_tf.models.bart import TFBartForCausalLM
from encdec_tf.models.bert import TFBertLMHeadModel, TFBertModel
from encdec_tf.models.bert_generation import TFBertGenerationDecoder, TFBertGenerationEncoder
from encdec_tf.models.electra import TFElectraModel
from encdec_tf.models.gpt2 import TFGPT2LMHeadModel
from encdec_tf.models.prophetnet import TFProphetNetForCausalLM
from encdec_tf.models.rembert import TFRemBertForCausalLM, TFRemBertModel

register("tf", "bert", encoder=TFBertModel, decoder=TFBertLMHeadModel)
register("tf", "roberta", encoder=TFBertModel, decoder=TFBertLMHeadModel)
register("tf", "electra", encoder=TFElectraModel)
register("tf", "gpt2", decoder=TFGPT2LMHeadModel)
register("tf", "bart", decoder=TFBartForCausalLM)
register("tf", "prophetnet", decoder=TFProphetNetForCausalLM)
register("tf", "rembert", encoder=TFRemBertModel, decoder=TFRemBertForCausalLM)
register("tf", "bert-generation", encoder=TFBertGenerationEncoder, decoder=TFBertGenerationDecoder)

__all__ = ["TFBartForCausalLM", "TFBertGenerationDecoder", "TFBertGenerationEncoder", "TFBertLMHeadModel", "TFBertModel", "TFElectraModel", "TFGPT2LMHeadModel",
           "TFProphetNetForCausalLM", "TFRemBertForCausalLM", "TFRemBertModel"]
