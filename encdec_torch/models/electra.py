"""ELECTRA: ``ElectraModel`` — BERT layers over embeddings of ``embedding_size``, projected
to ``hidden_size`` by ``embeddings_project`` when the two differ; no pooler."""
from __future__ import annotations

import torch
from torch import nn

from encdec.specs.bert import electra_model_spec
from encdec_torch.models.bert import BertModel


class ElectraModel(BertModel):
    _supports_sdpa = False  # as transformers 4.57

    def __init__(self, config) -> None:
        super().__init__(config, add_pooling_layer=False)
        if config.embedding_size != config.hidden_size:
            self.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)

    @staticmethod
    def build_spec(config, add_pooling_layer: bool):
        if config.is_decoder or config.add_cross_attention:
            raise NotImplementedError("electra is supported as an encoder only (is_decoder/add_cross_attention must be False)")
        return electra_model_spec(config)

    @staticmethod
    def embedding_dim(config) -> int:
        return config.embedding_size

    def embed(self, input_ids, token_type_ids, position_ids, inputs_embeds, past: int) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, past)
        return self.embeddings_project(x) if hasattr(self, "embeddings_project") else x
