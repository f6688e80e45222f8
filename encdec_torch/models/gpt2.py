"""GPT-2 language model with optional cross-attention (``GPT2LMHeadModel``), nanoGPT style.

Pre-LayerNorm blocks: ``x + attn(ln_1(x))``, ``x + crossattention(ln_cross_attn(x))``,
``x + mlp(ln_2(x))``; final ``ln_f``; ``lm_head`` tied to ``wte``.  Projections are GPT-2
``Conv1D`` layers (weight stored [in, out], the canonical layout).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from encdec.outputs import CausalLMOutputWithCrossAttentions
from encdec.routing import output_flags
from encdec.specs.gpt2 import attention_scale, gpt2_lm_head_spec
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


class Conv1D(nn.Module):
    """``y = x @ weight + bias`` with ``weight`` [in, out]."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx: int = 0) -> None:
        super().__init__()
        self.scale = attention_scale(config, layer_idx)
        self.n_head, self.d = config.n_head, config.n_embd
        self.c_attn = Conv1D(self.d, 3 * self.d)
        self.c_proj = Conv1D(self.d, self.d)
        self.attn_dropout = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x, mask, past, need_weights):
        q, k, v = self.c_attn(x).split(self.d, dim=2)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))
        if past is not None:
            k, v = extend_kv(past, k, v)
        dropout = self.attn_dropout if self.training else 0.0
        y, weights = attend(q, k, v, mask, causal=True, dropout=dropout, need_weights=need_weights, scale=self.scale)
        if mask is not None:  # a query with no visible key gets a zero output, as transformers' GPT-2 under SDPA
            dead = (mask <= torch.finfo(mask.dtype).min / 2).all(dim=-1).all(dim=1)  # [b, q]
            y = y.masked_fill(dead[..., None], 0.0)
        return self.resid_dropout(self.c_proj(y)), weights, (k, v)


class CrossAttention(nn.Module):
    """Queries from the decoder (``q_attn``), keys/values from the encoder (``c_attn``)."""

    def __init__(self, config, layer_idx: int = 0) -> None:
        super().__init__()
        self.scale = attention_scale(config, layer_idx)
        self.n_head, self.d = config.n_head, config.n_embd
        self.c_attn = Conv1D(config.cross_attention_hidden_size or self.d, 2 * self.d)
        self.q_attn = Conv1D(self.d, self.d)
        self.c_proj = Conv1D(self.d, self.d)
        self.attn_dropout = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def kv(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.c_attn(enc).split(self.d, dim=2)
        return split_heads(k, self.n_head), split_heads(v, self.n_head)

    def forward(self, x, enc, mask, past, need_weights):
        q = split_heads(self.q_attn(x), self.n_head)
        k, v = past if past is not None else self.kv(enc)
        dropout = self.attn_dropout if self.training else 0.0
        y, weights = attend(q, k, v, mask, dropout=dropout, need_weights=need_weights, scale=self.scale)
        return self.resid_dropout(self.c_proj(y)), weights, (k, v)


class MLP(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = Conv1D(config.n_embd, inner)
        self.c_proj = Conv1D(inner, config.n_embd)
        self.act = activation(config.activation_function, "gpt2: activation_function")
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config, layer_idx: int = 0) -> None:
        super().__init__()
        d, eps = config.n_embd, config.layer_norm_epsilon
        self.ln_1 = nn.LayerNorm(d, eps=eps)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(d, eps=eps)
        if config.add_cross_attention:
            self.crossattention = CrossAttention(config, layer_idx)
            self.ln_cross_attn = nn.LayerNorm(d, eps=eps)
        self.mlp = MLP(config)
        # bottleneck adapters after attention / MLP (encdec_torch.adapters), called as (out, residual, None)
        self.attention_adapters: Optional[nn.Module] = None
        self.output_adapters: Optional[nn.Module] = None

    def forward(self, x, mask, enc, enc_mask, past: Optional[LayerCache], need_weights: bool):
        a, self_w, (k, v) = self.attn(self.ln_1(x), mask, None if past is None else past[:2], need_weights)
        x = x + a if self.attention_adapters is None else self.attention_adapters(a, x, None)
        cross_w, ck, cv = None, None, None
        if enc is not None:
            if not hasattr(self, "crossattention"):
                raise ValueError("encoder_hidden_states given, but this GPT-2 has no cross-attention (add_cross_attention=False)")
            cross_past = None if past is None or past[2] is None else past[2:]
            a, cross_w, (ck, cv) = self.crossattention(self.ln_cross_attn(x), enc, enc_mask, cross_past, need_weights)
            x = x + a
        m = self.mlp(self.ln_2(x))
        x = x + m if self.output_adapters is None else self.output_adapters(m, x, None)
        return x, self_w, cross_w, (k, v, ck, cv)


class GPT2Model(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


class GPT2LMHeadModel(SpecModule):
    """GPT-2 decoder: ``transformer`` + ``lm_head``."""

    def __init__(self, config) -> None:
        super().__init__()
        self.spec = gpt2_lm_head_spec(config)
        self.config = config
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def cross_kv(self, encoder_hidden_states: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Per-layer cross-attention keys/values, to seed a decoding cache."""
        return tuple(block.crossattention.kv(encoder_hidden_states) for block in self.transformer.h)

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
        check_inputs(input_ids, inputs_embeds, "GPT2LMHeadModel")
        t = self.transformer
        checkpointing = t.gradient_checkpointing and self.training
        use_cache = (self.config.use_cache if use_cache is None else use_cache) and not checkpointing
        past = past_length(past_key_values)
        if inputs_embeds is None:
            inputs_embeds = t.wte(input_ids)
        b, n = inputs_embeds.shape[:2]
        if position_ids is None:  # plain positions, padding or not (as transformers 4.57's forward)
            position_ids = torch.arange(past, past + n, device=inputs_embeds.device)[None]
        x = inputs_embeds + t.wpe(position_ids)
        if token_type_ids is not None:
            x = x + t.wte(token_type_ids)
        x = t.drop(x)
        mask = causal_mask(attention_mask, b, n, past, x.dtype, x.device)
        enc_mask = padding_mask(encoder_attention_mask, x.dtype, n) if encoder_hidden_states is not None else None

        stack = run_stack(
            t.h, x, mask, encoder_hidden_states, enc_mask, past_key_values, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, checkpointing=checkpointing,
        )
        x = t.ln_f(stack.last)
        out = CausalLMOutputWithCrossAttentions(
            logits=self.lm_head(x),
            past_key_values=stack.past_key_values,
            hidden_states=with_final(stack.hidden_states, x),
            attentions=stack.attentions,
            cross_attentions=stack.cross_attentions,
        )
        return out if return_dict else out.to_tuple()
