"""BertGeneration (Rothe et al.): ``BertGenerationEncoder`` and ``BertGenerationDecoder``.

BERT's layers over word + position embeddings (no token types, no pooler); the decoder's
head ``lm_head`` is a single output projection ``decoder`` whose bias is ``lm_head.bias``.
"""
from __future__ import annotations

import torch
from torch import nn

from encdec.specs.bert import bert_generation_decoder_spec, bert_generation_encoder_spec
from encdec_torch.models.bert import BertModel, CausalLMMixin
from encdec_torch.models.common import SpecModule


class BertGenerationEncoder(BertModel):
    _supports_sdpa = False  # as transformers 4.57

    def __init__(self, config, add_pooling_layer: bool = False) -> None:
        super().__init__(config, add_pooling_layer=False)

    @staticmethod
    def build_spec(config, add_pooling_layer: bool):
        return bert_generation_encoder_spec(config)


class BertGenerationOnlyLMHead(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = self.decoder.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(x)


class BertGenerationDecoder(CausalLMMixin, SpecModule):
    """BertGeneration decoder: ``bert`` (causal, cross-attention) + ``lm_head``."""
    _supports_sdpa = False  # as transformers 4.57

    base = "bert"

    def __init__(self, config) -> None:
        super().__init__()
        self.spec = bert_generation_decoder_spec(config)
        self.config = config
        self.bert = BertGenerationEncoder(config)
        self.lm_head = BertGenerationOnlyLMHead(config)
        if config.tie_word_embeddings:
            self.lm_head.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def lm_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(x)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder
