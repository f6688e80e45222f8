"""Pieces every torch part model shares: activations, masks, attention, cache, weight I/O.

Masks are additive float tensors ``[batch, 1, query, key]`` holding 0 where attention is
allowed and the dtype's most negative finite value where it is not (transformers' convention,
so fully masked rows behave the same).  A cache is a tuple over layers of
``(self_key, self_value, cross_key, cross_value)`` tensors ``[batch, heads, len, head_dim]``;
the self-attention pair grows by one step per call, the cross pair is computed once.
The self-attention pair may instead be :class:`StaticKV` buffers (preallocated, written in
place: what ``generate`` uses); layers add their step's entries with :func:`extend_kv`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from encdec.activations import check_activation, check_backend_table
from encdec.hub import HubModelMixin
from encdec.layout import TORCH_LAYOUT, from_backend, to_backend
from encdec.specs import BIAS, NORM_BIAS, NORM_SCALE, ModelSpec

LayerCache = tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _gelu_erf(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


#: encdec.activations' names -> torch functions (the formulas are listed there).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_python": _gelu_erf,
    "gelu_10": lambda x: torch.clip(F.gelu(x), -10.0, 10.0),
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_python_tanh": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "gelu_fast": lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "laplace": lambda x: 0.5 * (1.0 + torch.erf((x - 0.707107) / (0.282095 * math.sqrt(2.0)))),
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "linear": lambda x: x,
    "mish": F.mish,
    "relu": F.relu,
    "relu2": lambda x: torch.square(F.relu(x)),
    "relu6": F.relu6,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}
check_backend_table(ACTIVATIONS, "torch")


def activation(name: str, where: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called ``name``; unknown names raise ``NotImplementedError``."""
    return ACTIVATIONS[check_activation(name, where)]


def padding_mask(mask: Optional[torch.Tensor], dtype: torch.dtype, query_len: int) -> Optional[torch.Tensor]:
    """``[batch, key]`` 1/0 mask -> additive ``[batch, 1, query, key]`` (``None`` for ``None``).

    A given mask is always applied, even when it holds only ones: testing for that would read
    the mask on the host at every call (a sync, and a graph break under ``torch.compile``).
    Callers that can drop an all-ones mask once do so (``generate`` does, before its loop)."""
    if mask is None:
        return None
    blocked = (mask == 0)[:, None, None, :].expand(-1, 1, query_len, -1)
    return torch.zeros(blocked.shape, dtype=dtype, device=mask.device).masked_fill(blocked, torch.finfo(dtype).min)


def causal_mask(
    mask: Optional[torch.Tensor], batch: int, query_len: int, past_len: int, dtype: torch.dtype, device: torch.device,
    explicit: bool = False,
) -> Optional[torch.Tensor]:
    """Causal plus padding mask for self-attention over ``past_len + query_len`` keys;
    ``None`` when there is no ``mask`` and :func:`attend`'s ``causal`` flag (or, for one query,
    nothing) says the same (unless ``explicit``).  A given mask is applied as it is (see
    :func:`padding_mask`)."""
    key_len = past_len + query_len
    padded = mask is not None
    if not padded and (query_len == 1 or past_len == 0) and not explicit:
        return None
    q = torch.arange(past_len, key_len, device=device)[:, None]
    k = torch.arange(key_len, device=device)[None, :]
    allowed = (k <= q)[None, None].expand(batch, 1, query_len, key_len)
    if padded:
        allowed = allowed & (mask[:, None, None, :key_len] != 0)
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],
    *,
    causal: bool = False,
    dropout: float = 0.0,
    need_weights: bool = False,
    scale: Optional[float] = None,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Scaled dot-product attention ``[b, h, q, d]`` -> ``([b, q, h*d], weights or None)``;
    ``scale`` replaces the default ``1/sqrt(d)`` factor on the scores.

    ``causal`` applies only when ``mask`` is ``None`` (the mask already holds causality).
    With ``need_weights`` the eager path computes and returns the probabilities.  When ``k``
    holds fewer rows than ``q`` (a decoding cache whose beams share one input's cross-attention
    keys; never causal), each key row serves ``q.shape[0] // k.shape[0]`` consecutive query rows.
    """
    shared = q.shape[0] // k.shape[0]
    if shared > 1:
        b, h, n, d = q.shape
        q = q.view(k.shape[0], shared, h, n, d).transpose(1, 2).reshape(k.shape[0], h, shared * n, d)
        mask = None if mask is None else mask.repeat(1, 1, shared, 1)
        out, weights = attend(q, k, v, mask, dropout=dropout, need_weights=need_weights, scale=scale)
        if weights is not None:
            weights = weights.view(k.shape[0], h, shared, n, -1).transpose(1, 2).reshape(b, h, n, -1)
        return out.view(k.shape[0], shared, n, h * d).reshape(b, n, h * d), weights
    if need_weights:
        if scale is None:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        if mask is not None:
            scores = scores + mask
        elif causal and q.shape[-2] > 1:
            n_q, n_k = q.shape[-2], k.shape[-2]
            keep = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        weights = F.softmax(scores, dim=-1)
        weights = F.dropout(weights, p=dropout, training=dropout > 0)
        out = torch.matmul(weights, v)
    else:
        weights = None
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal and mask is None and q.shape[-2] > 1, scale=scale
        )
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d), weights


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[b, n, h*d]`` -> ``[b, h, n, d]``."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def past_length(past_key_values: Optional[tuple[LayerCache, ...]]) -> int:
    return 0 if not past_key_values else past_key_values[0][0].shape[2]


class StaticKV:
    """One layer's self-attention keys (or values) in a preallocated buffer ``data``
    ``[rows, heads, capacity, head_dim]`` whose first ``length`` positions are filled.

    A decoding step writes its new entries in place (a slice assignment, no concatenation,
    no new allocation) and attends over the filled view; ``shape`` reads as the filled
    tensor's, so :func:`past_length` works on a cache of these as on plain tensors.  Beam
    search reorders rows in place with :meth:`reorder`.  A buffer smaller than ``limit``
    grows by doubling when full (memory follows the length reached, not ``max_length``).
    """

    __slots__ = ("data", "length", "limit")

    def __init__(self, data: torch.Tensor, length: int = 0, limit: Optional[int] = None) -> None:
        self.data, self.length = data, length
        self.limit = data.shape[2] if limit is None else limit

    @classmethod
    def empty(cls, like: torch.Tensor, rows: int, capacity: int, limit: Optional[int] = None) -> "StaticKV":
        """A buffer for ``rows`` rows and ``capacity`` positions (growing up to ``limit``),
        heads/head_dim/dtype of ``like``."""
        return cls(like.new_empty(rows, like.shape[1], capacity, like.shape[3]), limit=limit)

    @property
    def shape(self) -> torch.Size:
        b, h, _, d = self.data.shape
        return torch.Size((b, h, self.length, d))

    def filled(self) -> torch.Tensor:
        return self.data[:, :, : self.length]

    def write(self, new: torch.Tensor) -> torch.Tensor:
        """Store ``new`` ``[rows, heads, n, head_dim]`` after the filled positions; return the
        filled view, ``new`` included."""
        end = self.length + new.shape[2]
        if end > self.data.shape[2]:
            if end > self.limit:
                raise ValueError(f"static KV cache full: {end} positions for a capacity of {self.limit}")
            b, h, capacity, d = self.data.shape
            grown = self.data.new_empty(b, h, min(max(end, 2 * capacity), self.limit), d)
            grown[:, :, : self.length] = self.filled()
            self.data = grown
        self.data[:, :, self.length:end] = new
        self.length = end
        return self.data[:, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Rows ``index`` of the filled part, in place (beam search following its beams)."""
        view = self.filled()
        view.copy_(view.index_select(0, index))


def extend_kv(past: Optional[tuple[Any, Any]], k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values to attend over once this step's ``k``, ``v`` follow the cached ``past``
    pair: written in place into :class:`StaticKV` buffers, else concatenated (plain tensors,
    as transformers' legacy tuple caches)."""
    if past is None:
        return k, v
    pk, pv = past[0], past[1]
    if isinstance(pk, StaticKV):
        return pk.write(k), pv.write(v)
    return torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)


def check_inputs(input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor], where: str) -> None:
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError(f"{where}: pass exactly one of `input_ids` and `inputs_embeds`")


class SpecModule(HubModelMixin, nn.Module):
    """Base of every part (and of the composite): weights exposed and loaded under the spec's
    canonical names, plus transformers' ``PreTrainedModel`` conveniences.  A part saves and
    loads as the HF checkpoint of its own class (``BertModel``, ``GPT2LMHeadModel``, ...)."""

    spec: ModelSpec
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    #: transformers' flag: the part's class there offers the SDPA kernel (our attention takes
    #: torch's SDPA kernel unless weights are returned; this flag only decides which
    #: ``attn_implementation`` may be requested, as in transformers)
    _supports_sdpa = True

    # --- transformers' PreTrainedModel conveniences ------------------------------------
    @property
    def base_model_prefix(self) -> str:
        from encdec.pretrained import base_model_prefix, part_role

        return base_model_prefix(self.config, part_role(type(self))) if hasattr(self, "spec") else ""

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (tied ones once), as transformers counts them."""
        embeddings = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)} if exclude_embeddings else set()
        return sum(p.numel() for p in self.parameters()
                   if (p.requires_grad or not only_trainable) and id(p) not in embeddings)

    def get_memory_footprint(self, return_buffers: bool = True) -> int:
        """Bytes held by parameters (and buffers)."""
        size = sum(p.nelement() * p.element_size() for p in self.parameters())
        if return_buffers:
            size += sum(b.nelement() * b.element_size() for b in self.buffers())
        return size

    def enable_input_require_grads(self) -> None:
        """Make the input embeddings' output require grad (for adapters/PEFT with frozen embeddings
        and gradient checkpointing), as transformers does with a forward hook."""
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            output.requires_grad_(True)

        self._require_grads_hook = self.get_input_embeddings().register_forward_hook(hook)

    def disable_input_require_grads(self) -> None:
        handle = getattr(self, "_require_grads_hook", None)
        if handle is not None:
            handle.remove()
            self._require_grads_hook = None

    # --- part checkpoints (the composite overrides both) --------------------------------
    def save_pretrained(self, save_directory: Any, safe_serialization: bool = True, max_shard_size: Any = "5GB",
                        state_dict: Optional[Mapping[str, Any]] = None, push_to_hub: bool = False, **kwargs: Any) -> list[str]:
        """Write this part as transformers writes its class: ``config.json`` and
        ``model.safetensors`` (``pytorch_model.bin`` with ``safe_serialization=False``) under the
        class's own state-dict names; ``state_dict`` replaces the model's weights."""
        from encdec.hub import push_folder
        from encdec.pretrained import save_part, split_save_kwargs

        is_main, push = split_save_kwargs(kwargs)
        if not is_main:
            return []
        weights = self.canonical_state() if state_dict is None else _state_dict_weights(state_dict, self.spec)
        fmt = "safetensors" if safe_serialization else "pt-bin"
        written = save_part(save_directory, self.config, weights, self.spec, type(self).__name__, fmt, max_shard_size)
        if push_to_hub:
            push_folder(save_directory, **push)
        return written

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, config: Any = None, **kwargs: Any) -> Any:
        """Load an HF checkpoint of this part class (or of one sharing its base model, e.g.
        ``BertForMaskedLM`` for ``BertModel``); ``config`` keywords override fields."""
        from encdec_torch.modeling_encoder_decoder import load_torch_part

        if model_args:
            raise TypeError("from_pretrained takes no positional arguments besides the name or path")
        return load_torch_part(cls, pretrained_model_name_or_path, config=config, **kwargs)

    def resize_token_embeddings(self, new_num_tokens: Optional[int] = None, pad_to_multiple_of: Optional[int] = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """transformers' ``resize_token_embeddings`` for a part: the input embeddings, an untied
        LM head and its bias get ``new_num_tokens`` rows (kept rows copied, new ones from
        :func:`encdec.resize.resize_rows`); ties stay (the same parameters are resized in
        place); ``config.vocab_size`` (the composite's sub-config when the part is inside one)
        and the spec follow.  Returns the input embedding module."""
        from encdec.resize import new_vocab_size, resize_rows

        embeddings = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return embeddings
        size = new_vocab_size(embeddings.weight.shape[0], new_num_tokens, pad_to_multiple_of)
        head = self.get_output_embeddings() if hasattr(self, "get_output_embeddings") else None
        targets = [embeddings.weight]
        if head is not None:
            targets += [head.weight] + ([head.bias] if getattr(head, "bias", None) is not None else [])
        resized: dict[int, int] = {}
        seed = int(torch.randint(0, 2**31 - 1, ()).item())  # torch's generator, as transformers' init
        with torch.no_grad():
            for param in targets:
                if id(param) in resized or param.shape[0] == size:
                    continue
                old_rows = int(param.shape[0])
                new = resize_rows(tensor_to_numpy(param), size, mean_resizing, float(self.config.initializer_range),
                                  seed + len(resized))
                param.data = torch.from_numpy(new).to(device=param.device, dtype=param.dtype)
                resized[id(param)] = old_rows
        embeddings.num_embeddings = size
        if head is not None and hasattr(head, "out_features"):
            head.out_features = size
        self.config.vocab_size = size
        # the spec follows: every name bound to a resized parameter gets the new row count
        by_name = dict(self.named_parameters(remove_duplicate=False))
        params = {name: type(p)(p.name, (size,) + tuple(p.shape[1:]), p.kind)
                  if name in by_name and id(by_name[name]) in resized else p for name, p in self.spec.params.items()}
        self.spec = type(self.spec)(params=params, ties=dict(self.spec.ties))
        return embeddings

    def canonical_state(self) -> dict[str, np.ndarray]:
        state = self.state_dict()
        return from_backend({p.name: tensor_to_numpy(state[p.name]) for p in self.spec.untied}, self.spec, TORCH_LAYOUT)

    def init_std(self, name: str) -> float:
        """Standard deviation of the random init of parameter ``name``."""
        return float(self.config.initializer_range)

    def init_weights(self, names: Optional[Iterable[str]] = None) -> None:
        """transformers' init from the spec kinds (all parameters, or ``names``): matrices
        ~ N(0, initializer_range), biases 0, norm scales 1, embedding padding rows 0."""
        chosen = None if names is None else set(names)
        params = dict(self.named_parameters(remove_duplicate=False))
        with torch.no_grad():
            for p in self.spec.untied:
                if chosen is not None and p.name not in chosen:
                    continue
                param = params[p.name]
                if p.kind in (BIAS, NORM_BIAS):
                    nn.init.zeros_(param)
                elif p.kind == NORM_SCALE:
                    nn.init.ones_(param)
                else:
                    nn.init.normal_(param, mean=0.0, std=self.init_std(p.name))
            for name, module in self.named_modules():
                weight = f"{name}.weight" if name else "weight"
                if isinstance(module, nn.Embedding) and module.padding_idx is not None and (chosen is None or weight in chosen):
                    module.weight[module.padding_idx].zero_()

    def load_canonical(self, weights: Mapping[str, np.ndarray], share: bool = False) -> None:
        """Load ``{canonical name: array}`` (tie targets may be omitted); ``share``: use the
        arrays' memory without copying (do not reuse them afterwards)."""
        load_into(self, self.spec, weights, share)


def _state_dict_weights(state_dict: Mapping[str, Any], spec: ModelSpec) -> dict[str, np.ndarray]:
    """A torch ``state_dict`` (names of the model) as canonical weights."""
    arrays = {k: tensor_to_numpy(v) if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in state_dict.items()}
    return from_backend({p.name: arrays[p.name] for p in spec.untied if p.name in arrays}, spec, TORCH_LAYOUT)


def tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    """Detached numpy copy; bfloat16 (no numpy dtype) is widened to float32."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy().copy()


def host_values(x: Any) -> Optional[np.ndarray]:
    """Values for the core input validator, copied to the host: ids and masks (a few
    numbers), embeddings (checked for NaN/inf; bfloat16 widened, numpy has none)."""
    if torch.is_tensor(x):
        x = x.detach()
        return (x.float() if x.dtype == torch.bfloat16 else x).cpu().numpy()
    return np.asarray(x)


_INIT_FUNCTIONS = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_")


@contextlib.contextmanager
def no_init() -> Iterator[None]:
    """Build modules without random init (their weights are loaded right after)."""
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in _INIT_FUNCTIONS:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def load_into(module: nn.Module, spec: ModelSpec, weights: Mapping[str, np.ndarray], share: bool = False) -> None:
    """Load canonical ``weights`` into ``module``'s parameters; names and shapes must match the
    spec exactly.  ``share`` lets parameters use the arrays' memory (no copy) where dtypes agree."""
    names = set(weights)
    missing = [p.name for p in spec.untied if p.name not in names]
    unexpected = sorted(names - set(spec.params))
    if missing or unexpected:
        raise ValueError(
            f"weights do not match the {type(module).__name__} spec: missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}"
        )
    params = dict(module.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, arr in to_backend(weights, spec, TORCH_LAYOUT).items():
            param = params[name]
            arr = np.asarray(arr)
            if tuple(arr.shape) != tuple(param.shape):
                raise ValueError(f"weight {name!r}: expected shape {tuple(param.shape)}, got {tuple(arr.shape)}")
            tensor = torch.from_numpy(np.ascontiguousarray(arr))
            if share and tensor.dtype == param.dtype and arr.flags.writeable:
                param.data = tensor
            else:
                param.copy_(tensor.to(param.dtype))


@dataclass
class StackOutput:
    """Result of :func:`run_stack`; ``hidden_states`` are each layer's input (callers append
    the final state), tuples are ``None`` unless requested."""

    last: torch.Tensor
    hidden_states: Optional[tuple[torch.Tensor, ...]]
    attentions: Optional[tuple[torch.Tensor, ...]]
    cross_attentions: Optional[tuple[torch.Tensor, ...]]
    past_key_values: Optional[tuple[LayerCache, ...]]


def run_stack(
    layers: nn.ModuleList,
    x: torch.Tensor,
    mask: Optional[torch.Tensor],
    enc: Optional[torch.Tensor],
    enc_mask: Optional[torch.Tensor],
    past_key_values: Optional[tuple[LayerCache, ...]],
    *,
    use_cache: bool,
    output_attentions: bool,
    output_hidden_states: bool,
    checkpointing: bool,
    layerdrop: float = 0.0,
) -> StackOutput:
    """Run the layers ``layer(x, mask, enc, enc_mask, past, need_weights) -> (x, self_w, cross_w, cache)``.

    ``checkpointing`` recomputes activations in the backward pass; ``layerdrop`` skips each
    layer with that probability (pass it in training only).
    """
    hidden, self_attn, cross_attn, cache = [], [], [], []
    for i, layer in enumerate(layers):
        hidden.append(x)
        layer_past = past_key_values[i] if past_key_values else None
        if layerdrop > 0 and torch.rand([]) < layerdrop:
            cache.append(layer_past)
            continue
        args = (x, mask, enc, enc_mask, layer_past, output_attentions)
        if checkpointing:  # kwargs set by EncoderDecoderModel.gradient_checkpointing_enable
            kwargs = getattr(layers, "gradient_checkpointing_kwargs", None) or {"use_reentrant": False}
            x, sw, cw, present = checkpoint(layer, *args, **kwargs)
        else:
            x, sw, cw, present = layer(*args)
        self_attn.append(sw)
        cross_attn.append(cw)
        cache.append(present)
    return StackOutput(
        last=x,
        hidden_states=tuple(hidden) if output_hidden_states else None,
        attentions=tuple(self_attn) if output_attentions else None,
        cross_attentions=tuple(cross_attn) if output_attentions and enc is not None else None,
        past_key_values=tuple(cache) if use_cache else None,
    )


def with_final(hidden_states: Optional[tuple[torch.Tensor, ...]], final: torch.Tensor) -> Optional[tuple[torch.Tensor, ...]]:
    return None if hidden_states is None else hidden_states + (final,)
