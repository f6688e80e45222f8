"""BERT: ``BertModel`` (encoder) and ``BertLMHeadModel`` (causal decoder with cross-attention).

Post-LayerNorm transformer; module names follow the canonical (HF) parameter names so that
``state_dict()`` keys equal the spec's.  RoBERTa and ELECTRA reuse these blocks.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from encdec.outputs import BaseModelOutputWithPoolingAndCrossAttentions, CausalLMOutputWithCrossAttentions
from encdec.routing import output_flags
from encdec.specs.bert import (
    adds_absolute_positions,
    bert_lm_head_spec,
    bert_model_spec,
    has_token_types,
    relative_positions,
)
from encdec_torch.models.common import (
    LayerCache,
    SpecModule,
    activation,
    attend,
    causal_mask,
    check_inputs,
    extend_kv,
    padding_mask,
    past_length,
    run_stack,
    split_heads,
    with_final,
)


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout."""

    def __init__(self, config, dim: Optional[int] = None) -> None:
        super().__init__()
        dim = dim or config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, dim, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, dim)
        # BertGeneration has no token-type table
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, dim) if has_token_types(config) else None
        self.LayerNorm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.absolute = adds_absolute_positions(config)

    def position_ids(self, input_ids: Optional[torch.Tensor], shape: tuple[int, int], past: int, device: torch.device) -> torch.Tensor:
        return torch.arange(past, past + shape[1], device=device)[None].expand(shape)

    def forward(self, input_ids, token_type_ids, position_ids, inputs_embeds, past: int) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        shape = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = self.position_ids(input_ids, shape, past, inputs_embeds.device)
        x = inputs_embeds
        if self.token_type_embeddings is None:
            if token_type_ids is not None:
                raise ValueError("token_type_ids given, but this model has no token-type embeddings (bert-generation)")
        else:
            if token_type_ids is None:
                token_type_ids = torch.zeros(shape, dtype=torch.long, device=inputs_embeds.device)
            x = x + self.token_type_embeddings(token_type_ids)
        if self.absolute:
            x = x + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Projections of one attention block (``attention.self`` in the canonical names)."""

    def __init__(self, config, kv_dim: int, cross: bool = False) -> None:
        super().__init__()
        h = config.hidden_size
        self.heads = config.num_attention_heads
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(kv_dim, h)
        self.value = nn.Linear(kv_dim, h)
        self.dropout = config.attention_probs_dropout_prob
        self.relative = None
        if relative_positions(config) and not cross:  # transformers' cross-attention stays absolute
            self.relative = config.position_embedding_type
            self.max_positions = config.max_position_embeddings
            self.distance_embedding = nn.Embedding(2 * config.max_position_embeddings - 1, h // self.heads)

    def relative_scores(self, q: torch.Tensor, k: torch.Tensor, decoder: bool) -> torch.Tensor:
        """Learned relative-position scores ``[b, h, q, k]``, already divided by sqrt(head_dim)
        (transformers adds them before the scaling).  In an encoder query ``i`` sits at
        position ``i``; in a decoder every query sits at the last key's position (transformers
        4.57 with its cache on, its default: one query per cached step, the same rule kept
        for a full forward)."""
        n_q, n_k = q.shape[2], k.shape[2]
        if decoder:
            left = torch.full((n_q, 1), n_k - 1, device=q.device)
        else:
            left = torch.arange(n_k - n_q, n_k, device=q.device)[:, None]
        right = torch.arange(n_k, device=q.device)[None, :]
        table = self.distance_embedding(left - right + self.max_positions - 1).to(q.dtype)
        scores = torch.einsum("bhld,lrd->bhlr", q, table)
        if self.relative == "relative_key_query":
            scores = scores + torch.einsum("bhrd,lrd->bhlr", k, table)
        return scores / math.sqrt(q.shape[-1])


class BertSelfOutput(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.adapters: Optional[nn.Module] = None

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense(x))
        if self.adapters is not None:  # bottleneck adapters: encdec_torch.adapters
            return self.adapters(h, residual, self.LayerNorm)
        return self.LayerNorm(h + residual)


class BertAttention(nn.Module):
    """Self- or cross-attention plus its output projection and residual LayerNorm."""

    def __init__(self, config, kv_dim: Optional[int] = None) -> None:
        super().__init__()
        self.self = BertSelfAttention(config, kv_dim or config.hidden_size, cross=kv_dim is not None)
        self.output = BertSelfOutput(config)

    def kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[b, heads, len, head_dim]`` of ``source``."""
        att = self.self
        return split_heads(att.key(source), att.heads), split_heads(att.value(source), att.heads)

    def forward(self, x, mask, *, kv=None, past=None, causal=False, need_weights=False):
        """``kv``: encoder states (cross-attention) or ``None``; ``past``: cached (k, v) or ``None``.
        Returns (output, weights, (k, v))."""
        att = self.self
        q = split_heads(att.query(x), att.heads)
        if kv is not None and past is not None:
            k, v = past
        else:
            k, v = self.kv(x if kv is None else kv)
            if kv is None and past is not None:
                k, v = extend_kv(past, k, v)
        dropout = att.dropout if self.training else 0.0
        if att.relative is not None:
            if mask is None and causal and q.shape[2] > 1:  # the causal flag cannot carry the scores
                mask = causal_mask(None, q.shape[0], q.shape[2], 0, q.dtype, q.device, explicit=True)
            scores = att.relative_scores(q, k, decoder=causal)
            mask = scores if mask is None else mask + scores
        out, weights = attend(q, k, v, mask, causal=causal, dropout=dropout, need_weights=need_weights)
        return self.output(out, x), weights, (k, v)


class BertIntermediate(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = activation(config.hidden_act, f"{config.model_type}: hidden_act")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.adapters: Optional[nn.Module] = None

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.dense(x))
        if self.adapters is not None:  # bottleneck adapters: encdec_torch.adapters
            return self.adapters(h, residual, self.LayerNorm)
        return self.LayerNorm(h + residual)


class BertLayer(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.is_decoder = config.is_decoder
        self.attention = BertAttention(config)
        if config.is_decoder and config.add_cross_attention:
            self.crossattention = BertAttention(config, config.cross_attention_hidden_size or config.hidden_size)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x, mask, enc, enc_mask, past: Optional[LayerCache], need_weights: bool):
        x, self_w, (k, v) = self.attention(
            x, mask, past=None if past is None else past[:2], causal=self.is_decoder, need_weights=need_weights
        )
        cross_w, ck, cv = None, None, None
        if enc is not None:
            if not hasattr(self, "crossattention"):
                raise ValueError("encoder_hidden_states given, but this model has no cross-attention (add_cross_attention=False)")
            cross_past = None if past is None or past[2] is None else past[2:]
            x, cross_w, (ck, cv) = self.crossattention(x, enc_mask, kv=enc, past=cross_past, need_weights=need_weights)
        x = self.output(self.intermediate(x), x)
        return x, self_w, cross_w, (k, v, ck, cv)


class BertEncoder(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))


class BertModel(SpecModule):
    """The BERT base model; a decoder when ``config.is_decoder`` (causal, optionally cross-attending)."""

    embeddings_class = BertEmbeddings

    def __init__(self, config, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.spec = self.build_spec(config, add_pooling_layer)
        self.config = config
        self.gradient_checkpointing = False
        self.embeddings = self.embeddings_class(config, self.embedding_dim(config))
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None

    @staticmethod
    def build_spec(config, add_pooling_layer: bool):
        if config.add_cross_attention and not config.is_decoder:
            raise ValueError(f"{config.model_type}: add_cross_attention=True needs is_decoder=True")
        return bert_model_spec(config, add_pooling_layer)

    @staticmethod
    def embedding_dim(config) -> int:
        return config.hidden_size

    def embed(self, input_ids, token_type_ids, position_ids, inputs_embeds, past: int) -> torch.Tensor:
        return self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, past)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def get_output_embeddings(self) -> None:
        return None

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Optional[tuple[LayerCache, ...]] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
    ):
        # transformers' rule: the argument, else this part's config
        output_attentions, output_hidden_states, _, _, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        check_inputs(input_ids, inputs_embeds, type(self).__name__)
        decoder = self.config.is_decoder
        use_cache = decoder and (self.config.use_cache if use_cache is None else use_cache)
        checkpointing = self.gradient_checkpointing and self.training
        use_cache = use_cache and not checkpointing
        past = past_length(past_key_values)
        x = self.embed(input_ids, token_type_ids, position_ids, inputs_embeds, past)
        b, n = x.shape[:2]
        if decoder:
            mask = causal_mask(attention_mask, b, n, past, x.dtype, x.device)
        else:
            mask = padding_mask(attention_mask, x.dtype, n)
        enc_mask = None
        if encoder_hidden_states is not None:
            enc_mask = padding_mask(encoder_attention_mask, x.dtype, n)

        stack = run_stack(
            self.encoder.layer, x, mask, encoder_hidden_states, enc_mask, past_key_values, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, checkpointing=checkpointing,
        )
        x = stack.last
        out = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None else None,
            past_key_values=stack.past_key_values,
            hidden_states=with_final(stack.hidden_states, x),
            attentions=stack.attentions,
            cross_attentions=stack.cross_attentions,
        )
        return out if return_dict else out.to_tuple()


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act, f"{config.model_type}: hidden_act")
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = self.decoder.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class CausalLMMixin:
    """Shared forward of the BERT-family causal LMs: base model -> head -> logits."""

    base: str
    head: nn.Module

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Optional[tuple[LayerCache, ...]] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
    ):
        # transformers' rule: the argument, else this part's config
        output_attentions, output_hidden_states, _, _, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        out = getattr(self, self.base)(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, encoder_hidden_states,
            encoder_attention_mask, past_key_values, use_cache, output_attentions, output_hidden_states,
            return_dict=True,
        )
        result = CausalLMOutputWithCrossAttentions(
            logits=self.lm_logits(out.last_hidden_state),
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            cross_attentions=out.cross_attentions,
        )
        return result if return_dict else result.to_tuple()

    def get_input_embeddings(self) -> nn.Embedding:
        return getattr(self, self.base).get_input_embeddings()

    def cross_kv(self, encoder_hidden_states: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Per-layer cross-attention keys/values, to seed a decoding cache."""
        return tuple(layer.crossattention.kv(encoder_hidden_states) for layer in getattr(self, self.base).encoder.layer)


class BertLMHeadModel(CausalLMMixin, SpecModule):
    """BERT decoder: ``bert`` (causal, cross-attention) + ``cls.predictions`` LM head."""

    base = "bert"

    def __init__(self, config) -> None:
        super().__init__()
        self.spec = bert_lm_head_spec(config)
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        if config.tie_word_embeddings:
            self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def lm_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls.predictions(x)

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder
