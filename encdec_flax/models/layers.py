"""Building blocks shared by the Flax part models: activations, GPT-2's Conv1D, masks,
the attention kernel and the static-shape KV cache.

Every part model names its submodules after the canonical (HF PyTorch) path, so its
parameter tree is the canonical name split on ``.`` under :data:`FLAX_LAYOUT`.
"""
from __future__ import annotations

from typing import Any

import math

import jax
import jax.scipy.special
import jax.numpy as jnp
import flax.linen as nn
import numpy as np

from encdec.checkpoint import aligned_empty
from encdec.activations import check_activation, check_backend_table
from encdec.formats.flax_msgpack import HF_FLAX_LAYOUT


def host_values(x: Any) -> np.ndarray | None:
    """Values for the core input validator: concrete arrays are read (ids, masks;
    embeddings are checked for NaN/inf); traced values (under ``jax.jit``) are not (``None``)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)

#: XLA's CPU client uses a host buffer aligned to this many bytes in place instead of copying it.
_ALIGN = 64
_TILE = 64  # rows per block of the host transposition (cache-friendly; about 2.5x numpy's strided copy)


def to_device(x: Any, dtype: Any = None) -> jax.Array:
    """A device array holding a copy of host array ``x`` (cast to ``dtype`` when given), made
    with one host pass: ``x`` is copied -- transposed views block by block, casts on the way
    -- into a fresh 64-byte-aligned buffer that ``jax.device_put`` then takes without a
    second copy (on CPU) and without compiling anything (``jnp.asarray`` compiles a convert
    per shape).  The caller's array is never aliased, so mutating it later is safe."""
    x = np.asarray(x)
    dtype = x.dtype if dtype is None else np.dtype(dtype)
    out = aligned_empty(x.shape, dtype, _ALIGN)
    if x.ndim == 2 and not x.flags.c_contiguous and x.T.flags.c_contiguous:
        source = x.T
        for i in range(0, source.shape[0], _TILE):
            out[:, i:i + _TILE] = source[i:i + _TILE].T
    else:
        out[...] = x
    return jax.device_put(out)

#: How Flax stores each parameter kind: the core's HF Flax layout (linear kernels
#: [in, out]; GPT-2 ``Conv1D`` kernels [out, in], as transformers' Flax GPT-2 keeps them),
#: so our trees equal HF Flax trees leaf for leaf.
FLAX_LAYOUT = HF_FLAX_LAYOUT

def _gelu_tanh(x):
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * jnp.power(x, 3.0))))


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


#: encdec.activations' names -> JAX functions (the formulas are listed there).
ACTIVATIONS = {
    "gelu": _gelu,
    "gelu_python": _gelu,
    "gelu_10": lambda x: jnp.clip(_gelu(x), -10.0, 10.0),
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "gelu_fast": lambda x: 0.5 * x * (1.0 + jnp.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "laplace": lambda x: 0.5 * (1.0 + jax.scipy.special.erf((x - 0.707107) / (0.282095 * math.sqrt(2.0)))),
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.01),
    "linear": lambda x: x,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "relu": jax.nn.relu,
    "relu2": lambda x: jnp.square(jax.nn.relu(x)),
    "relu6": jax.nn.relu6,
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}
check_backend_table(ACTIVATIONS, "flax")


def activation(name: str, where: str) -> Any:
    """The activation function called ``name`` (HF names); unknown names raise."""
    return ACTIVATIONS[check_activation(name, where)]


class Conv1D(nn.Module):
    """GPT-2's Conv1D: ``x @ kernel.T + bias`` with ``kernel`` stored [out, in]."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", nn.initializers.normal(0.02), (self.features, x.shape[-1]))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x = x.astype(self.dtype)
        return jnp.dot(x, kernel.astype(self.dtype).T) + bias.astype(self.dtype)


class Residual(nn.Module):
    """``residual + h``, then ``norm`` when given: a parameter-free residual sum with its own
    module path, so an adapter can attach there (GPT-2's and BART's ``attention_adapters`` /
    ``output_adapters``, see :mod:`encdec_flax.adapters`)."""

    def __call__(self, h: jnp.ndarray, residual: jnp.ndarray, norm: Any = None) -> jnp.ndarray:
        return residual + h if norm is None else norm(residual + h)


def dense(features: int, dtype: Any, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, kernel_init=nn.initializers.normal(0.02))


def layer_norm(eps: float, dtype: Any) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype)


# --- masks ------------------------------------------------------------------------------
def padding_mask(mask: jnp.ndarray | None, batch: int, length: int) -> jnp.ndarray:
    """[batch, length] 0/1 mask -> boolean [batch, 1, 1, length] (all true when None)."""
    if mask is None:
        return jnp.ones((batch, 1, 1, length), dtype=bool)
    return (mask != 0)[:, None, None, :]


def causal_mask(query_length: int, key_length: int, offset: jnp.ndarray | int = 0) -> jnp.ndarray:
    """Boolean [1, 1, q, k]: key ``j`` visible from query ``i`` when ``j <= offset + i``."""
    q = jnp.arange(query_length)[:, None] + offset
    k = jnp.arange(key_length)[None, :]
    return (k <= q)[None, None]


# --- attention --------------------------------------------------------------------------
def split_heads(x: jnp.ndarray, num_heads: int) -> jnp.ndarray:
    return x.reshape(x.shape[:-1] + (num_heads, x.shape[-1] // num_heads))


def merge_heads(x: jnp.ndarray) -> jnp.ndarray:
    return x.reshape(x.shape[:-2] + (-1,))


def attention(
    q: jnp.ndarray,
    k: jnp.ndarray,
    v: jnp.ndarray,
    mask: jnp.ndarray,
    dropout: nn.Dropout,
    deterministic: bool,
    scale: float | None = None,
    bias: jnp.ndarray | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Softmax attention over [batch, len, heads, head_dim] tensors; ``bias`` [b, h, q, k]
    (e.g. relative-position scores) is added to the scaled scores.

    Masked scores take the dtype's most negative value (as transformers does), so a row
    with no visible key degrades to uniform weights instead of NaN.  Softmax runs in
    float32 whatever the compute dtype.  Returns ``(output [b, q, h, d], weights [b, h, q, k])``.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * scale
    if bias is not None:
        scores = scores + bias.astype(jnp.float32)
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    weights = dropout(weights, deterministic=deterministic)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v), weights


def write_cache(kv: dict, cache: dict | None, index: jnp.ndarray) -> tuple[dict, dict | None]:
    """Self-attention keys/values ``kv`` ([b, q, h, d]) written at ``index`` of a static
    [b, max_len, h, d] cache; returns ``(all keys/values to attend to, new cache)``.
    Without a cache, ``kv`` is returned unchanged."""
    if cache is None:
        return kv, None
    start = (0, index, 0, 0)
    new = {name: jax.lax.dynamic_update_slice(cache[name], kv[name].astype(cache[name].dtype), start) for name in ("key", "value")}
    return new, new


def self_attention_mask(batch: int, query_length: int, attention_mask: jnp.ndarray | None, cache: dict | None, causal: bool) -> jnp.ndarray:
    """Boolean [b, 1, q, k] mask of a self-attention: key padding, and causality when
    ``causal``.  With a cache the keys are the cache's ``max_length`` slots and the
    queries sit at ``cache["index"] + i``."""
    index = 0 if cache is None else cache["index"]
    key_length = query_length if cache is None else cache["layers"][0]["self"]["key"].shape[1]
    if attention_mask is not None and attention_mask.shape[-1] != key_length:
        raise ValueError(
            f"attention_mask covers {attention_mask.shape[-1]} positions but attention runs over "
            f"{key_length} keys (with a cache, pass a mask over the cache's max_length)"
        )
    mask = padding_mask(attention_mask, batch, key_length)
    if causal:
        mask = mask & causal_mask(query_length, key_length, index)
    return mask


def empty_kv(batch: int, max_length: int, num_heads: int, head_dim: int, dtype: Any) -> dict:
    shape = (batch, max_length, num_heads, head_dim)
    return {"key": jnp.zeros(shape, dtype), "value": jnp.zeros(shape, dtype)}


# --- the layer stack, shared by every part ------------------------------------------------
def new_cache(cross_kvs: list, batch: int, max_length: int, num_heads: int, head_dim: int, dtype: Any) -> dict:
    """``{"index": 0, "layers": [{"self": empty kv, "cross": encoder kv}, ...]}``."""
    layers = [{"self": empty_kv(batch, max_length, num_heads, head_dim, dtype), "cross": kv} for kv in cross_kvs]
    return {"index": jnp.zeros((), jnp.int32), "layers": layers}


def cross_inputs(cross_kv_fn: Any, encoder_hidden_states, encoder_attention_mask, cache, batch: int) -> tuple:
    """Cross-attention keys/values (from the cache when there is one) and their mask;
    ``(None, None)`` without encoder states or cache."""
    if cache is None and encoder_hidden_states is None:
        return None, None
    kvs = cross_kv_fn(encoder_hidden_states) if cache is None else [layer["cross"] for layer in cache["layers"]]
    return kvs, padding_mask(encoder_attention_mask, batch, kvs[0]["key"].shape[1])


class LayerStack(nn.Module):
    """``<i>``-named layers run in order (``encoder.layer``, ``transformer.h``,
    ``model.decoder.layers``).  Each layer is called ``(hidden, mask, cross_mask,
    cross_kv, cache, index, deterministic)`` and returns ``(hidden, self_weights,
    cross_weights, cache)``; a layer with cross-attention has ``cross_kv(states)``."""

    layer_cls: Any
    config: Any
    num_layers: int
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.layers = [self.layer_cls(self.config, self.dtype, name=str(i)) for i in range(self.num_layers)]

    def cross_kv(self, encoder_hidden_states: jnp.ndarray) -> list:
        return [layer.cross_kv(encoder_hidden_states) for layer in self.layers]

    def __call__(self, hidden, mask, cross_mask, cross_kvs, cache, index, deterministic: bool,
                 output_attentions: bool, output_hidden_states: bool, final_norm: Any = None) -> tuple:
        """Returns ``(last_hidden, hidden_states, attentions, cross_attentions, cache)``;
        ``hidden_states`` holds each layer's input and the final output (after
        ``final_norm`` when given), as transformers does."""
        all_hidden, self_ws, cross_ws, caches = [], [], [], []
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden.append(hidden)
            layer_cache = None if cache is None else cache["layers"][i]
            cross_kv = None if cross_kvs is None else cross_kvs[i]
            hidden, self_w, cross_w, layer_cache = layer(hidden, mask, cross_mask, cross_kv, layer_cache, index, deterministic)
            self_ws.append(self_w)
            cross_ws.append(cross_w)
            caches.append(layer_cache)
        if final_norm is not None:
            hidden = final_norm(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)
        return (
            hidden,
            tuple(all_hidden) if output_hidden_states else None,
            tuple(self_ws) if output_attentions else None,
            tuple(cross_ws) if output_attentions and cross_kvs is not None else None,
            None if cache is None else {"index": index + hidden.shape[1], "layers": caches},
        )
