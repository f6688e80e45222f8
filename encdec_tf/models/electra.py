"""ELECTRA encoder (``ElectraModel``): BERT embeddings of ``embedding_size``, projected to
``hidden_size`` when the sizes differ, then the BERT layer stack; no pooler."""
from __future__ import annotations

from typing import Any, Mapping

import keras

from encdec.outputs import BaseModelOutputWithPooling
from encdec.specs import encoder_spec
from encdec_tf.models.bert import BertEmbeddings, BertStack, check_bert_options
from encdec_tf.models.common import TFPartMixin, Dense, ParamStore, as_int, padding_bias


class TFElectraModel(TFPartMixin, keras.layers.Layer):
    def __init__(self, config: Any, tied: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_bert_options(config)
        self.config = config
        self.store = ParamStore(self, encoder_spec(config), tied)
        self.embeddings = BertEmbeddings(self.store, "embeddings", config)
        self.project = Dense(self.store, "embeddings_project") if self.store.has("embeddings_project.weight") else None
        self.stack = BertStack(self.store, "encoder", config)
        self.store.check_complete()
        self.built = True

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
             output_attentions=False, output_hidden_states=False, training=False):
        input_ids, token_type_ids, position_ids = as_int(input_ids), as_int(token_type_ids), as_int(position_ids)
        h = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, 0, training)
        if self.project is not None:
            h = self.project(h)
        h, extra = self.stack(h, padding_bias(attention_mask), output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states, training=training)
        return BaseModelOutputWithPooling(last_hidden_state=h, hidden_states=extra["hidden_states"], attentions=extra["attentions"])
