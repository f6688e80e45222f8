"""ELECTRA encoder (``ElectraModel``) in flax.linen: BERT layers under embeddings of
``embedding_size``, projected to ``hidden_size`` by ``embeddings_project`` when the two
differ.  No pooler.  Used as an encoder only (as in transformers' encoder-decoder)."""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import flax.linen as nn

from encdec.specs.bert import check_bert_like
from encdec_flax.models.bert import BertEmbeddings, BertEncoder, position_ids_for
from encdec_flax.models.layers import dense, self_attention_mask


class ElectraModel(nn.Module):
    config: Any
    dtype: Any = jnp.float32

    def setup(self) -> None:
        c = self.config
        check_bert_like(c)
        if c.is_decoder:
            raise NotImplementedError("electra is supported as an encoder only")
        self.embeddings = BertEmbeddings(c, c.embedding_size, self.dtype)
        if c.embedding_size != c.hidden_size:
            self.embeddings_project = dense(c.hidden_size, self.dtype)
        self.encoder = BertEncoder(c, self.dtype)

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        deterministic: bool = True,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple:
        """Returns ``(last_hidden_state, hidden_states, attentions)``."""
        batch, length = input_ids.shape
        if position_ids is None:
            position_ids = position_ids_for(self.config, input_ids, 0)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        hidden = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
        if self.config.embedding_size != self.config.hidden_size:
            hidden = self.embeddings_project(hidden)
        mask = self_attention_mask(batch, length, attention_mask, None, causal=False)
        out = self.encoder(hidden, mask, None, None, None, 0, deterministic, output_attentions, output_hidden_states)
        return out[:3]
