"""BART decoder with cross-attention (``BartForCausalLM``).

Post-LayerNorm decoder layers; token embeddings scaled by ``sqrt(d_model)`` when
``scale_embedding``; learned positions offset by 2; ``layernorm_embedding`` after the
embedding sum; ``lm_head`` without bias, tied to ``embed_tokens``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from encdec.outputs import CausalLMOutputWithCrossAttentions
from encdec.routing import output_flags
from encdec.specs.bart import BART_POSITION_OFFSET, bart_causal_lm_spec
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

class BartAttention(nn.Module):
    def __init__(self, d: int, heads: int, kv_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.k_proj = nn.Linear(kv_dim, d)
        self.v_proj = nn.Linear(kv_dim, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_heads(self.k_proj(source), self.heads), split_heads(self.v_proj(source), self.heads)

    def forward(self, x, mask, *, kv=None, past=None, causal=False, need_weights=False):
        q = split_heads(self.q_proj(x), self.heads)
        if kv is not None and past is not None:
            k, v = past
        else:
            k, v = self.kv(x if kv is None else kv)
            if kv is None and past is not None:
                k, v = extend_kv(past, k, v)
        dropout = self.dropout if self.training else 0.0
        out, weights = attend(q, k, v, mask, causal=causal, dropout=dropout, need_weights=need_weights)
        return self.out_proj(out), weights, (k, v)


class BartDecoderLayer(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        d, heads = config.d_model, config.decoder_attention_heads
        self.dropout, self.activation_dropout = config.dropout, config.activation_dropout
        self.self_attn = BartAttention(d, heads, d, config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        if config.add_cross_attention:
            kv_dim = config.cross_attention_hidden_size or d
            self.encoder_attn = BartAttention(d, heads, kv_dim, config.attention_dropout)
            self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, d)
        self.act = activation(config.activation_function, "bart: activation_function")
        self.final_layer_norm = nn.LayerNorm(d)
        # bottleneck adapters after self-attention / the FFN (encdec_torch.adapters), called as (out, residual, norm)
        self.attention_adapters: Optional[nn.Module] = None
        self.output_adapters: Optional[nn.Module] = None

    def _drop(self, x: torch.Tensor, p: float) -> torch.Tensor:
        return nn.functional.dropout(x, p=p, training=self.training)

    def forward(self, x, mask, enc, enc_mask, past: Optional[LayerCache], need_weights: bool):
        a, self_w, (k, v) = self.self_attn(
            x, mask, past=None if past is None else past[:2], causal=True, need_weights=need_weights
        )
        a = self._drop(a, self.dropout)
        if self.attention_adapters is None:
            x = self.self_attn_layer_norm(x + a)
        else:
            x = self.attention_adapters(a, x, self.self_attn_layer_norm)
        cross_w, ck, cv = None, None, None
        if enc is not None:
            if not hasattr(self, "encoder_attn"):
                raise ValueError("encoder_hidden_states given, but this BART decoder has no cross-attention (add_cross_attention=False)")
            cross_past = None if past is None or past[2] is None else past[2:]
            a, cross_w, (ck, cv) = self.encoder_attn(x, enc_mask, kv=enc, past=cross_past, need_weights=need_weights)
            x = self.encoder_attn_layer_norm(x + self._drop(a, self.dropout))
        h = self._drop(self.act(self.fc1(x)), self.activation_dropout)
        f = self._drop(self.fc2(h), self.dropout)
        x = self.final_layer_norm(x + f) if self.output_adapters is None else self.output_adapters(f, x, self.final_layer_norm)
        return x, self_w, cross_w, (k, v, ck, cv)


class BartDecoder(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_position_embeddings + BART_POSITION_OFFSET, config.d_model)
        self.layers = nn.ModuleList(BartDecoderLayer(config) for _ in range(config.decoder_layers))
        self.layernorm_embedding = nn.LayerNorm(config.d_model)


class BartDecoderWrapper(nn.Module):
    """Holds ``decoder`` so the canonical names read ``model.decoder.*``."""

    def __init__(self, config) -> None:
        super().__init__()
        self.decoder = BartDecoder(config)


class BartForCausalLM(SpecModule):
    def __init__(self, config) -> None:
        super().__init__()
        self.spec = bart_causal_lm_spec(config)
        self.config = config
        self.gradient_checkpointing = False
        self.model = BartDecoderWrapper(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.decoder.embed_tokens.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.decoder.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def cross_kv(self, encoder_hidden_states: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Per-layer cross-attention keys/values, to seed a decoding cache."""
        return tuple(layer.encoder_attn.kv(encoder_hidden_states) for layer in self.model.decoder.layers)

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
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
        check_inputs(input_ids, inputs_embeds, "BartForCausalLM")
        dec = self.model.decoder
        checkpointing = self.gradient_checkpointing and self.training
        use_cache = (self.config.use_cache if use_cache is None else use_cache) and not checkpointing
        past = past_length(past_key_values)
        if inputs_embeds is None:  # user-given embeddings are not scaled (as in transformers)
            inputs_embeds = dec.embed_tokens(input_ids) * dec.embed_scale
        b, n = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(past, past + n, device=inputs_embeds.device)[None]
        x = dec.layernorm_embedding(inputs_embeds + dec.embed_positions(position_ids + BART_POSITION_OFFSET))
        x = nn.functional.dropout(x, p=self.config.dropout, training=self.training)
        mask = causal_mask(attention_mask, b, n, past, x.dtype, x.device)
        enc_mask = padding_mask(encoder_attention_mask, x.dtype, n) if encoder_hidden_states is not None else None

        stack = run_stack(
            dec.layers, x, mask, encoder_hidden_states, enc_mask, past_key_values, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, checkpointing=checkpointing,
            layerdrop=self.config.decoder_layerdrop if self.training else 0.0,
        )
        out = CausalLMOutputWithCrossAttentions(
            logits=self.lm_head(stack.last),
            past_key_values=stack.past_key_values,
            hidden_states=with_final(stack.hidden_states, stack.last),
            attentions=stack.attentions,
            cross_attentions=stack.cross_attentions,
        )
        return out if return_dict else out.to_tuple()
