"""RoBERTa: BERT with padding-aware position ids (``RobertaModel``, ``RobertaForCausalLM``).

Positions count only non-pad tokens and start at ``pad_token_id + 1`` (fairseq heritage);
the LM head is ``lm_head.{dense, layer_norm, decoder}`` with exact GELU.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from encdec.specs.bert import roberta_causal_lm_spec
from encdec_torch.models.bert import BertEmbeddings, BertModel, CausalLMMixin
from encdec_torch.models.common import SpecModule


class RobertaEmbeddings(BertEmbeddings):
    def __init__(self, config, dim: Optional[int] = None) -> None:
        super().__init__(config, dim)
        self.padding_idx = config.pad_token_id
        if self.padding_idx is None:
            raise ValueError("roberta: pad_token_id must be set (position ids are offset by it)")

    def position_ids(self, input_ids: Optional[torch.Tensor], shape: tuple[int, int], past: int, device: torch.device) -> torch.Tensor:
        if input_ids is None:  # embeddings given: padding cannot be seen, count from pad + 1
            start = self.padding_idx + 1
            return torch.arange(start, start + shape[1], device=device)[None].expand(shape)
        not_pad = (input_ids != self.padding_idx).long()
        return (torch.cumsum(not_pad, dim=1) + past) * not_pad + self.padding_idx


class RobertaModel(BertModel):
    embeddings_class = RobertaEmbeddings


class RobertaLMHead(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = self.decoder.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(F.gelu(self.dense(x))))


class RobertaForCausalLM(CausalLMMixin, SpecModule):
    """RoBERTa decoder: ``roberta`` (causal, cross-attention) + ``lm_head``."""

    base = "roberta"

    def __init__(self, config) -> None:
        super().__init__()
        self.spec = roberta_causal_lm_spec(config)
        self.config = config
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.lm_head = RobertaLMHead(config)
        if config.tie_word_embeddings:
            self.lm_head.decoder.weight = self.roberta.embeddings.word_embeddings.weight

    def lm_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(x)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder
