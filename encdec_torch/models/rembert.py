"""RemBERT: ``RemBertModel`` (encoder) and ``RemBertForCausalLM`` (decoder).

BERT layers over embeddings of ``input_embedding_size``, mapped to ``hidden_size`` by
``encoder.embedding_hidden_mapping_in`` before the first layer; the LM head
(``cls.predictions``) projects to ``output_embedding_size``, applies the activation and
LayerNorm, then its own output embedding ``decoder`` (with bias, never tied).
"""
from __future__ import annotations

import torch
from torch import nn

from encdec.specs.rembert import rembert_causal_lm_spec, rembert_model_spec
from encdec_torch.models.bert import BertModel, CausalLMMixin
from encdec_torch.models.common import SpecModule, activation


class RemBertModel(BertModel):
    _supports_sdpa = False  # as transformers 4.57

    def __init__(self, config, add_pooling_layer: bool = True) -> None:
        super().__init__(config, add_pooling_layer)
        self.encoder.embedding_hidden_mapping_in = nn.Linear(config.input_embedding_size, config.hidden_size)

    @staticmethod
    def build_spec(config, add_pooling_layer: bool):
        return rembert_model_spec(config, add_pooling_layer)

    @staticmethod
    def embedding_dim(config) -> int:
        return config.input_embedding_size

    def embed(self, input_ids, token_type_ids, position_ids, inputs_embeds, past: int) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, past)
        return self.encoder.embedding_hidden_mapping_in(x)


class RemBertLMPredictionHead(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.output_embedding_size)
        self.decoder = nn.Linear(config.output_embedding_size, config.vocab_size)
        self.act = activation(config.hidden_act, "rembert: hidden_act")
        self.LayerNorm = nn.LayerNorm(config.output_embedding_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.LayerNorm(self.act(self.dense(x))))


class RemBertOnlyMLMHead(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.predictions = RemBertLMPredictionHead(config)


class RemBertForCausalLM(CausalLMMixin, SpecModule):
    """RemBERT decoder: ``rembert`` (causal, cross-attention) + ``cls.predictions``."""
    _supports_sdpa = False  # as transformers 4.57

    base = "rembert"

    def __init__(self, config) -> None:
        super().__init__()
        self.spec = rembert_causal_lm_spec(config)
        self.config = config
        self.rembert = RemBertModel(config, add_pooling_layer=False)
        self.cls = RemBertOnlyMLMHead(config)

    def lm_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls.predictions(x)

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder
