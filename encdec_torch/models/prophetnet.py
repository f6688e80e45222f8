"""ProphetNet decoder (``ProphetNetForCausalLM``): a main stream and ``ngram`` predict streams.

The hidden sequence is ``[main (n) | stream 0 (n) | ... | stream ngram-1 (n)]``.  The main
stream is a causal decoder over the tokens; predict stream ``s`` at position ``i`` starts
from a learned n-gram embedding plus the next position's embedding, attends to main-stream
keys up to ``i - s`` (and always key 0) plus its own key, and never to other streams.
Self-attention adds a learned bias per relative-position bucket (:mod:`encdec.specs.prophetnet`).
The logits are the first predict stream's, as in transformers.

Facts kept from transformers 4.57 so outputs agree with it: masks are additive (a key that
is both future and padding gets ``min + min = -inf``); cross-attention weights are returned
before the softmax; over several positions, the predict streams' relative-position bias is
read through transformers' index layout (rows of ``[batch, position, stream, head]``
reinterpreted as ``[batch, stream, head, position]``), which for one position per call (as
in cached decoding) is the plain per-position bias.  The cache holds the main stream's
keys and values only.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from encdec.outputs import ProphetNetDecoderLMOutput
from encdec.specs.prophetnet import LAYER_NORM_EPS, check_length, prophetnet_causal_lm_spec, relative_bucket_table
from encdec.routing import output_flags
from encdec_torch.models.common import (
    LayerCache,
    SpecModule,
    activation,
    attend,
    check_inputs,
    extend_kv,
    padding_mask,
    past_length,
    run_stack,
    split_heads,
)


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    return F.softmax(scores, dim=-1, dtype=torch.float32).type_as(scores)


class ProphetNetAttention(nn.Module):
    """Cross-attention; ``forward`` returns (output, pre-softmax scores or None, (k, v))."""

    def __init__(self, config) -> None:
        super().__init__()
        d = config.hidden_size
        self.heads = config.num_decoder_attention_heads
        self.dropout, self.attention_dropout = config.dropout, config.attention_dropout
        self.key_proj = nn.Linear(d, d)
        self.value_proj = nn.Linear(d, d)
        self.query_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def kv(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_heads(self.key_proj(states), self.heads), split_heads(self.value_proj(states), self.heads)

    def forward(self, x, mask, kv, need_weights: bool):
        k, v = kv
        q = split_heads(self.query_proj(x), self.heads)
        drop = self.attention_dropout if self.training else 0.0
        if not need_weights:
            out, scores = attend(q, k, v, mask, dropout=drop)
        else:
            if k.shape[0] != q.shape[0]:  # beams sharing one input's keys (and mask)
                shared = q.shape[0] // k.shape[0]
                k, v = k.repeat_interleave(shared, dim=0), v.repeat_interleave(shared, dim=0)
                mask = None if mask is None else mask.repeat_interleave(shared, dim=0)
            scores = torch.matmul(q / math.sqrt(q.shape[-1]), k.transpose(-1, -2))
            if mask is not None:
                scores = scores + mask
            probs = F.dropout(F.softmax(scores, dim=-1), p=drop, training=drop > 0)
            out = torch.matmul(probs, v).transpose(1, 2).flatten(2)
        out = F.dropout(self.out_proj(out), p=self.dropout, training=self.training)
        return out, scores if need_weights else None, (k, v)


class ProphetNetNgramSelfAttention(ProphetNetAttention):
    """The same projections plus ``relative_pos_embeddings``: main- and predict-stream
    self-attention with relative-position buckets."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.ngram, self.buckets = config.ngram, config.num_buckets
        self.relative_pos_embeddings = nn.Linear(config.hidden_size, self.buckets * self.heads)

    def _streams(self, t: torch.Tensor, n: int) -> torch.Tensor:
        """[b, (1+N)n, H*D] -> [b, 1+N, H, n, D]."""
        b = t.shape[0]
        return t.view(b, 1 + self.ngram, n, self.heads, -1).permute(0, 1, 3, 2, 4)

    def forward(self, x, geometry, past: Optional[tuple[torch.Tensor, torch.Tensor]]):
        main_mask, predict_mask, main_buckets, predict_buckets = geometry
        b, total, d = x.shape
        n, H, N = total // (1 + self.ngram), self.heads, self.ngram
        q = self._streams(self.query_proj(x) / math.sqrt(d // H), n)
        k, v = self._streams(self.key_proj(x), n), self._streams(self.value_proj(x), n)
        main_k, main_v = k[:, 0], v[:, 0]
        if past is not None:
            main_k, main_v = extend_kv(past, main_k, main_v)
        drop = self.attention_dropout if self.training else 0.0
        streams = x.view(b, 1 + N, n, d)
        rel = self.relative_pos_embeddings(streams).view(b, 1 + N, n, self.buckets, H)

        # main stream: [b, H, n, K]
        main_rel = rel[:, 0].permute(0, 3, 1, 2)
        scores = torch.matmul(q[:, 0], main_k.transpose(-1, -2))
        scores = scores + torch.gather(main_rel, -1, main_buckets.expand(b, H, -1, -1))
        if main_mask is not None:
            scores = scores + main_mask
        main_probs = F.dropout(_softmax(scores), p=drop, training=drop > 0)
        main_out = torch.matmul(main_probs, main_v).transpose(1, 2).reshape(b, 1, n, d)

        # predict streams: [b, N, H, n, K + n] over (main keys | own key)
        scores = torch.cat([torch.matmul(q[:, 1:], main_k[:, None].transpose(-1, -2)),
                            torch.matmul(q[:, 1:], k[:, 1:].transpose(-1, -2))], dim=-1)
        pred_rel = rel[:, 1:].permute(0, 2, 1, 4, 3).reshape(b, N, H, n, self.buckets)  # transformers' index layout
        scores = scores + torch.gather(pred_rel, -1, predict_buckets.expand(b, N, H, -1, -1))
        if predict_mask is not None:
            scores = scores + predict_mask
        pred_probs = F.dropout(_softmax(scores), p=drop, training=drop > 0)
        values = torch.cat([main_v[:, None].expand(-1, N, -1, -1, -1), v[:, 1:]], dim=3)
        pred_out = torch.matmul(pred_probs, values).transpose(2, 3).reshape(b, N, n, d)

        out = self.out_proj(torch.cat([main_out, pred_out], dim=1)).view(b, total, d)
        out = F.dropout(out, p=self.dropout, training=self.training)
        return out, main_probs, pred_probs, (main_k, main_v)


class ProphetNetFeedForward(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        self.intermediate = nn.Linear(config.hidden_size, config.decoder_ffn_dim)
        self.output = nn.Linear(config.decoder_ffn_dim, config.hidden_size)
        self.act = activation(config.activation_function, "prophetnet: activation_function")
        self.dropout, self.activation_dropout = config.dropout, config.activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(self.act(self.intermediate(x)), p=self.activation_dropout, training=self.training)
        return F.dropout(self.output(h), p=self.dropout, training=self.training)


class ProphetNetDecoderLayer(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        d = config.hidden_size
        self.self_attn = ProphetNetNgramSelfAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        if config.add_cross_attention:
            self.cross_attn = ProphetNetAttention(config)
            self.cross_attn_layer_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.feed_forward = ProphetNetFeedForward(config)
        self.feed_forward_layer_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)

    def forward(self, x, geometry, enc, enc_mask, past: Optional[LayerCache], need_weights: bool):
        """``geometry``: (main mask, predict mask, main buckets, predict buckets) of this call;
        returns (x, (main weights, predict weights), cross scores, cache)."""
        a, main_w, pred_w, (k, v) = self.self_attn(x, geometry, None if past is None else past[:2])
        x = self.self_attn_layer_norm(x + a)
        cross_w, ck, cv = None, None, None
        if enc is not None or (past is not None and past[2] is not None):
            if not hasattr(self, "cross_attn"):
                raise ValueError("encoder_hidden_states given, but this ProphetNet decoder has no cross-attention (add_cross_attention=False)")
            kv = past[2:] if past is not None and past[2] is not None else self.cross_attn.kv(enc)
            a, cross_w, (ck, cv) = self.cross_attn(x, enc_mask, kv, need_weights)
            x = self.cross_attn_layer_norm(a + x)
        x = self.feed_forward_layer_norm(self.feed_forward(x) + x)
        return x, (main_w, pred_w), cross_w, (k, v, ck, cv)


class ProphetNetDecoder(nn.Module):
    """``prophetnet.decoder``; its ``word_embeddings`` is the wrapper's (one parameter)."""

    def __init__(self, config, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        d = config.hidden_size
        self.word_embeddings = word_embeddings
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, d, padding_idx=config.pad_token_id)
        self.ngram_embeddings = nn.Embedding(config.ngram, d)
        self.layers = nn.ModuleList(ProphetNetDecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.embeddings_layer_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)


class ProphetNetDecoderWrapper(nn.Module):
    """``prophetnet``: holds the word embeddings and ``decoder`` (HF's names)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.decoder = ProphetNetDecoder(config, self.word_embeddings)


class ProphetNetForCausalLM(SpecModule):
    """transformers' ``ProphetNetForCausalLM`` as the decoder of an encoder-decoder model."""
    _supports_sdpa = False  # as transformers 4.57

    def __init__(self, config) -> None:
        super().__init__()
        self.spec = prophetnet_causal_lm_spec(config)
        activation(config.activation_function, "prophetnet: activation_function")
        self.config = config
        self.gradient_checkpointing = False
        self.prophetnet = ProphetNetDecoderWrapper(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.prophetnet.word_embeddings.weight
        self.register_buffer("bucket_table", torch.from_numpy(relative_bucket_table(config)).long(), persistent=False)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.prophetnet.word_embeddings

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def cross_kv(self, encoder_hidden_states: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """Per-layer cross-attention keys/values, to seed a decoding cache."""
        return tuple(layer.cross_attn.kv(encoder_hidden_states) for layer in self.prophetnet.decoder.layers)

    def _geometry(self, batch: int, n: int, past: int, attention_mask: Optional[torch.Tensor], dtype: torch.dtype):
        """Additive masks and bucket indices for queries at ``past + i`` over ``past + n`` main keys."""
        device = self.bucket_table.device
        keys = past + n
        top = self.bucket_table.numel() - 1
        q = torch.arange(past, keys, device=device)[:, None]
        k = torch.arange(keys, device=device)[None, :]
        own = torch.arange(n, device=device)
        main_buckets = self.bucket_table[(q - k).clamp(0, top)]
        predict_buckets = self.bucket_table[torch.cat([(q - k + 1).clamp(0, top), (own[:, None] - own[None, :] - 1).clamp(0, top)], 1)]
        low = torch.finfo(dtype).min
        causal = torch.zeros(n, keys, dtype=dtype, device=device).masked_fill(k > q, low)
        streams = torch.arange(self.config.ngram, device=device)[:, None, None]
        seen = (k[None] <= q[None] - streams) | (k[None] == 0)
        predict = torch.cat([torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill(~seen, low),
                             torch.full((n, n), low, dtype=dtype, device=device).fill_diagonal_(0).expand(seen.shape[0], -1, -1)], -1)
        main_mask, predict_mask = causal[None, None], predict[None, :, None]
        if attention_mask is not None:
            pad = (1.0 - attention_mask[:, None, None, :keys].to(dtype)) * low
            main_mask = main_mask + pad
            predict_mask = predict_mask + torch.cat([pad, torch.zeros_like(pad[..., :n])], -1)[:, None]
        return main_mask, predict_mask, main_buckets[None, None], predict_buckets[None, None, None]

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
        past_key_values: Optional[tuple[LayerCache, ...]] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
    ):
        """``attention_mask`` covers the cached and new positions; ``past_key_values`` is per
        layer ``(main key, main value, cross key, cross value)``.  Output flags and
        ``return_dict`` not given come from the config, as in transformers."""
        output_attentions, output_hidden_states, _, _, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict)
        check_inputs(input_ids, inputs_embeds, "ProphetNetForCausalLM")
        c, dec = self.config, self.prophetnet.decoder
        checkpointing = self.gradient_checkpointing and self.training
        use_cache = (c.use_cache if use_cache is None else use_cache) and not checkpointing
        past = past_length(past_key_values)
        if inputs_embeds is None:
            inputs_embeds = dec.word_embeddings(input_ids)
        b, n = inputs_embeds.shape[:2]
        check_length(c, past + n)
        positions = c.pad_token_id + 1 + torch.arange(past, past + n, device=inputs_embeds.device)
        predict_pos = dec.position_embeddings(positions + 1)
        streams = [(dec.ngram_embeddings.weight[s - 1] + predict_pos).expand(b, n, -1) for s in range(c.ngram)]
        x = torch.cat([inputs_embeds + dec.position_embeddings(positions)] + streams, dim=1)
        x = F.dropout(dec.embeddings_layer_norm(x), p=c.dropout, training=self.training)
        geometry = self._geometry(b, n, past, attention_mask, x.dtype)
        enc_mask = padding_mask(encoder_attention_mask, x.dtype, x.shape[1])

        stack = run_stack(
            dec.layers, x, geometry, encoder_hidden_states, enc_mask, past_key_values, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, checkpointing=checkpointing,
        )
        hidden = None if stack.hidden_states is None else stack.hidden_states + (stack.last,)
        predict_logits = self.lm_head(stack.last[:, n:].view(b, c.ngram, n, -1))
        out = ProphetNetDecoderLMOutput(
            logits=predict_logits[:, 0],
            logits_ngram=predict_logits[:, 1:] if c.ngram > 1 else None,
            past_key_values=stack.past_key_values,
            hidden_states=None if hidden is None else tuple(h[:, :n] for h in hidden),
            hidden_states_ngram=None if hidden is None else tuple(h[:, n:] for h in hidden),
            attentions=None if stack.attentions is None else tuple(w[0] for w in stack.attentions),
            ngram_attentions=None if stack.attentions is None else tuple(w[1] for w in stack.attentions),
            cross_attentions=stack.cross_attentions,
        )
        return out if return_dict else out.to_tuple()
