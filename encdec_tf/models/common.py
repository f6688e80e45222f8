"""Building blocks shared by the TF part models: the parameter store (canonical path ->
Keras variable), dense / embedding / layer-norm modules, masks, attention with a KV cache.

Every part model is a ``keras.layers.Layer`` that owns all of its variables; the small
modules below are plain Python objects holding references to those variables, named by
their canonical module path so that :mod:`encdec.layout` maps them generically.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from typing import Any, Mapping

import keras
import numpy as np
import tensorflow as tf

from encdec.checkpoint import aligned_empty
from encdec.activations import check_activation, check_backend_table
from encdec.hub import HubModelMixin
from encdec.layout import Layout
from encdec.specs import CONV1D, EMBEDDING, LINEAR, NORM_BIAS, NORM_SCALE, BIAS, ModelSpec

logger = logging.getLogger(__name__)

#: How Keras lays out each parameter kind: kernels are [in, out] (PyTorch linear weights
#: transposed; GPT-2 Conv1D weights are already [in, out]).
TF_LAYOUT = Layout(
    leaf={LINEAR: "kernel", CONV1D: "kernel", EMBEDDING: "embeddings", NORM_SCALE: "gamma", NORM_BIAS: "beta", BIAS: "bias"},
    transpose=frozenset({LINEAR}),
)

#: Additive bias for masked attention scores (transformers uses the dtype's minimum).
MASK_MIN = float(np.finfo(np.float32).min)


#: ``{store scope: {backend name: array}}`` that stores created inside :func:`initial_values` start from.
_INITIAL: contextvars.ContextVar = contextvars.ContextVar("encdec_tf_initial_values", default=None)


@contextlib.contextmanager
def initial_values(values: Mapping[str, Mapping[str, np.ndarray]]):
    """Within, a :class:`ParamStore` of scope ``s`` (a part's layer name, ``""`` for the
    composite) creates each variable holding ``values[s][backend name]`` instead of zeros,
    so a checkpoint load copies each weight once (no zero fill, no second assignment).
    Yields the set of ``(scope, name)`` pairs used, for the caller's completeness check."""
    used: set[tuple[str, str]] = set()
    token = _INITIAL.set((values, used))
    try:
        yield used
    finally:
        _INITIAL.reset(token)


def variable_value(value: Any, dtype: Any, name: str = "", shape: tuple | None = None) -> tf.Tensor:
    """``value`` (numpy) as a tensor of ``dtype``, copied once.  A transposed view (as
    :func:`encdec.layout.to_backend` lays out kernels) is converted in its contiguous layout
    and transposed by TF, multi-threaded, instead of by numpy's strided single-thread copy.
    ``shape``: the variable's, checked with an error naming ``name``."""
    value = np.asarray(value)
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {value.shape}, the model expects {tuple(shape)}")
    if value.ndim == 2 and not value.flags.c_contiguous and value.T.flags.c_contiguous:
        t = tf.transpose(owned_tensor(value.T))
    else:
        t = owned_tensor(value)
    return t if t.dtype == dtype else tf.cast(t, dtype)


def reshape_variable(var: keras.Variable, value: tf.Tensor) -> None:
    """Give ``var`` a value of another shape, keeping the variable object (the modules, the
    ties and a composite's variable map hold it).  Keras has no public call for this: its TF
    variable records the shape and wraps a fixed-shape ``tf.Variable``, both replaced here."""
    var._shape = tuple(value.shape)
    var._initialize(value)


#: Byte alignment TF needs to use host memory as a tensor without copying it (Eigen's).
TENSOR_ALIGNMENT = 64


def owned_tensor(value: np.ndarray) -> tf.Tensor:
    """A tensor holding a copy of ``value``, made in one pass.  ``tf.convert_to_tensor`` copies
    a numpy array twice (an explicit copy, then again into aligned memory unless that copy
    happens to be 64-byte aligned); here numpy copies once into aligned memory the tensor
    then owns (handed over by DLPack, which TF accepts only aligned)."""
    if value.dtype.kind not in "fiu" or value.size == 0:  # DLPack-less dtypes; nothing to copy
        return tf.convert_to_tensor(value)
    out = aligned_empty(value.shape, value.dtype, TENSOR_ALIGNMENT)
    np.copyto(out, value)
    return tf.experimental.dlpack.from_dlpack(out.__dlpack__())


def part_role_name(cls: Any) -> str:
    from encdec.pretrained import part_role

    return part_role(cls)


def unpack_tf_inputs(args: tuple, kwargs: dict, where: str) -> dict:
    """Call arguments as keywords, the way transformers' TF models take them: a dict (or
    ``ModelOutput``-like mapping) as the first positional argument is unpacked, another first
    positional argument is the main input (``input_ids``), and a ``kwargs=`` dict is dropped
    with a WARNING naming its keys (transformers drops it without one)."""
    kwargs = dict(kwargs)
    if args:
        first, rest = args[0], args[1:]
        if rest:
            raise TypeError(f"{where} takes its inputs as keywords (or one dict / the input ids positionally), "
                            f"got {len(args)} positional arguments")
        if isinstance(first, Mapping):
            clash = set(first) & set(kwargs)
            if clash:
                raise TypeError(f"{where} got {', '.join(sorted(clash))} both in the input dict and as keywords")
            kwargs.update(first)
        else:
            if "input_ids" in kwargs:
                raise TypeError(f"{where} got input_ids both positionally and as a keyword")
            kwargs["input_ids"] = first
    dropped = kwargs.pop("kwargs", None)
    if dropped:
        names = ", ".join(sorted(dropped)) if isinstance(dropped, Mapping) else type(dropped).__name__
        logger.warning("%s ignores the `kwargs=` argument (%s), as transformers' TF models do; pass inputs as "
                       "keywords instead", where, names)
    return kwargs


class TFPartMixin(HubModelMixin):
    """transformers' ``TFPreTrainedModel`` surface of a part layer (``config``, ``store``):
    it saves and loads as the HF checkpoint of its class (``TFBertModel`` -> ``BertModel``'s
    names, ``model.safetensors``), which transformers' TF and PyTorch classes both read."""

    main_input_name = "input_ids"

    @property
    def config(self) -> Any:
        return self._config

    @config.setter
    def config(self, value: Any) -> None:
        """Ours kept as is (shared with a composite's config), transformers' converted through its dict."""
        from encdec.configuration import as_config

        self._config = as_config(value, f"{type(self).__name__} config")

    def build_in_name_scope(self) -> None:
        """transformers' explicit build: a no-op, every variable exists after construction."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """transformers' TF calling convention: a dict of inputs as the first argument is
        unpacked; a ``kwargs=`` dict is dropped (with a warning, as transformers drops it
        silently); ``output_attentions`` / ``output_hidden_states`` / ``return_dict`` not given
        come from the part's config (``return_dict=False`` gives the output's tuple)."""
        kwargs = unpack_tf_inputs(args, kwargs, type(self).__name__)
        for name in ("output_attentions", "output_hidden_states"):
            if kwargs.get(name) is None:
                kwargs[name] = bool(getattr(self.config, name, False))
        return_dict = kwargs.pop("return_dict", None)
        out = super().__call__(**kwargs)
        if return_dict is None:
            return_dict = getattr(self.config, "use_return_dict", True)
        return out if return_dict else out.to_tuple()

    @property
    def dummy_inputs(self) -> dict[str, tf.Tensor]:
        """transformers' ``dummy_inputs``: a small batch of ids (and encoder states for a
        decoder with cross-attention) to build or smoke-test the part."""
        ids = tf.constant(np.array([[7, 6, 0, 0, 1], [1, 2, 3, 0, 0], [0, 0, 0, 4, 5]]) % self.config.vocab_size,
                          tf.int32)
        dummies = {"input_ids": ids}
        if getattr(self.config, "add_cross_attention", False):
            width = getattr(self.config, "cross_attention_hidden_size", None) or self.config.hidden_size
            dummies["encoder_hidden_states"] = tf.ones((3, 5, width))
        return dummies

    @property
    def base_model_prefix(self) -> str:
        from encdec.pretrained import base_model_prefix, part_role

        return base_model_prefix(self.config, part_role(type(self)))

    def canonical_state(self) -> dict[str, np.ndarray]:
        from encdec.layout import from_backend

        return from_backend({k: v.numpy() for k, v in self.store.variables.items()}, self.store.spec, TF_LAYOUT)

    def load_canonical(self, weights: Mapping[str, np.ndarray]) -> None:
        from encdec.checkpoint import match_state
        from encdec.layout import to_backend

        weights, _ = match_state(weights, self.store.spec)
        owned_elsewhere = {TF_LAYOUT.backend_name(n, self.store.spec[n].kind) for n in self.store.tied}
        for key, value in to_backend(weights, self.store.spec, TF_LAYOUT).items():
            if key in owned_elsewhere:  # tied to another part's variable (tie_encoder_decoder): its owner loads it
                continue
            var = self.store.variables[key]
            var.assign(variable_value(value, var.dtype, key, tuple(var.shape)))

    def resize_token_embeddings(self, new_num_tokens: Any = None, pad_to_multiple_of: Any = None,
                                mean_resizing: bool = True) -> keras.Variable:
        """transformers' PyTorch ``resize_token_embeddings`` for a TF part (transformers' TF
        parts resize without ``mean_resizing``): the input embeddings, an untied LM head and its
        bias get the new row count (kept rows copied, new ones from :mod:`encdec.resize`); ties
        stay, as every variable keeps its identity and only its value changes shape;
        ``config.vocab_size`` (the composite's sub-config when the part is inside one) and the
        spec follow.  Returns the input embedding variable."""
        from encdec.pretrained import part_role
        from encdec.layout import to_backend
        from encdec.resize import new_vocab_size, resize_canonical
        from encdec.specs import decoder_spec, encoder_spec

        if new_num_tokens is None and pad_to_multiple_of is None:
            return self.get_input_embeddings()
        size = new_vocab_size(self.config.vocab_size, new_num_tokens, pad_to_multiple_of)
        weights, old_spec = self.canonical_state(), self.store.spec
        seed = int(tf.random.uniform((), 0, 2**31 - 1, dtype=tf.int64))  # TF's global generator (tf.random.set_seed)
        self.config.vocab_size = size
        new_spec = (decoder_spec if part_role(type(self)) == "decoder" else encoder_spec)(self.config)
        resized = resize_canonical(weights, old_spec, new_spec, mean_resizing, float(self.config.initializer_range), seed)
        changed = {p.name for p in new_spec.untied if tuple(old_spec[p.name].shape) != tuple(p.shape)}
        backend = to_backend(resized, new_spec, TF_LAYOUT)
        for name in changed:
            var = self.store.get(name)  # the variable itself, also when it is another part's (tie_encoder_decoder)
            reshape_variable(var, variable_value(backend[TF_LAYOUT.backend_name(name, new_spec[name].kind)], var.dtype))
        self.store.spec = new_spec
        return self.get_input_embeddings()

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        if only_trainable and not self.trainable:
            return 0
        return self.store.spec.num_parameters(exclude_embeddings=exclude_embeddings)

    def get_input_embeddings(self) -> keras.Variable:
        from encdec.pretrained import input_embedding_name

        return self.store.get(input_embedding_name(self.store.spec))

    def save_pretrained(self, save_directory: Any, saved_model: bool = False, push_to_hub: bool = False,
                        max_shard_size: Any = "5GB", safe_serialization: bool = True, **kwargs: Any) -> list[str]:
        from encdec.hub import push_folder
        from encdec.pretrained import save_part, split_save_kwargs

        is_main, push = split_save_kwargs({**kwargs, "saved_model": saved_model})
        if not is_main:
            return []
        fmt = "safetensors" if safe_serialization else "pt-bin"
        written = save_part(save_directory, self.config, self.canonical_state(), self.store.spec, type(self).__name__,
                            fmt, max_shard_size)
        if push_to_hub:
            push_folder(save_directory, **push)
        return written

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, config: Any = None, **kwargs: Any) -> Any:
        """Any HF checkpoint of this part (PyTorch, safetensors, TF or Flax files); ``from_pt``
        accepted; config fields may be overridden by keyword."""
        from encdec.pretrained import load_part_for_class, loading_info

        if model_args:
            raise TypeError("from_pretrained takes no positional arguments besides the name or path")
        part, options = load_part_for_class(cls, pretrained_model_name_or_path, config, **kwargs)
        model = cls(part.config, name=part_role_name(cls))
        model.load_canonical(part.weights)
        return (model, loading_info(part)) if options.get("output_loading_info") else model


class ParamStore:
    """Creates the variables of one part on ``owner`` from the part's spec.

    ``tied`` maps part-relative canonical names to variables owned elsewhere (e.g. the
    encoder's under ``tie_encoder_decoder``); spec ties inside the part share the source.
    ``variables`` is ``{backend name: variable}`` for the variables this part owns;
    ``hosts`` is ``{canonical module path: module}`` of the modules that can hold an adapter.
    ``scope`` (default: the owner's layer name) selects this store's :func:`initial_values`.
    """

    def __init__(self, owner: keras.layers.Layer, spec: ModelSpec, tied: Mapping[str, Any] | None = None,
                 scope: str | None = None) -> None:
        self.owner = owner
        self.spec = spec
        self.tied = dict(tied or {})
        self.variables: dict[str, keras.Variable] = {}
        self.hosts: dict[str, Any] = {}
        self.scope = owner.name if scope is None else scope

    def get(self, name: str) -> keras.Variable:
        if name in self.tied:
            return self.tied[name]
        if name in self.spec.ties:
            return self.get(self.spec.ties[name])
        if name not in self.spec:
            raise KeyError(f"{type(self.owner).__name__}: parameter {name!r} is not in the spec")
        p = self.spec[name]
        key = TF_LAYOUT.backend_name(name, p.kind)
        if key not in self.variables:
            shape = p.shape[::-1] if p.kind in TF_LAYOUT.transpose else p.shape
            dtype = getattr(self.owner, "variable_dtype", None) or "float32"  # the owner's dtype policy
            initializer: Any = "zeros"
            pending = _INITIAL.get()
            if pending is not None and key in pending[0].get(self.scope, {}):
                value = pending[0][self.scope][key]
                pending[1].add((self.scope, key))
                initializer = lambda shape, dtype: variable_value(value, dtype, key, shape)  # noqa: E731
            self.variables[key] = self.owner.add_weight(shape=shape, initializer=initializer, dtype=dtype, name=key)
        return self.variables[key]

    def add_host(self, prefix: str, module: Any) -> None:
        """Register ``module`` (with an ``adapter`` slot) under its canonical path ``prefix``."""
        if prefix in self.hosts:
            raise RuntimeError(f"{type(self.owner).__name__}: two modules at {prefix!r}")
        self.hosts[prefix] = module

    def is_tied(self, name: str) -> bool:
        """True when ``name`` shares another parameter's variable."""
        return name in self.spec.ties or name in self.tied

    def has(self, name: str) -> bool:
        return name in self.spec

    def check_complete(self) -> None:
        """Every parameter of the spec has a variable (guards the model code)."""
        made = set(self.variables) | {TF_LAYOUT.backend_name(n, self.spec[n].kind) for n in self.tied}
        missing = [p.name for p in self.spec.untied if TF_LAYOUT.backend_name(p.name, p.kind) not in made]
        if missing:
            raise RuntimeError(f"{type(self.owner).__name__} built no variable for {missing}")


class Dense:
    """``x @ kernel + bias`` for a linear or Conv1D parameter pair at ``prefix``; ``adapter``
    (a LoRA from :mod:`encdec_tf.adapters`, or ``None``) adds ``adapter(x, training)``."""

    def __init__(self, store: ParamStore, prefix: str) -> None:
        self.kernel = store.get(f"{prefix}.weight")
        self.bias = store.get(f"{prefix}.bias") if store.has(f"{prefix}.bias") else None
        self.adapter: Any = None
        store.add_host(prefix, self)

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        lead = dims(x)[:-1]
        y = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), self.kernel)
        if self.bias is not None:
            y = y + self.bias
        y = tf.reshape(y, lead + [self.kernel.shape[-1]])
        return y if self.adapter is None else y + self.adapter(x, training)


class Residual:
    """The end of a sub-layer: ``h + residual``, then ``norm`` if given (BERT's post-LN
    ``...attention.output`` / ``...output``; GPT-2's ``attention_adapters`` / ``output_adapters``
    have none).  ``adapter`` (a bottleneck from :mod:`encdec_tf.adapters`, or ``None``) replaces
    the sum as :func:`encdec.adapters.bottleneck_compose` places it."""

    def __init__(self, store: ParamStore, prefix: str, norm: LayerNorm | None = None) -> None:
        self.norm = norm
        self.adapter: Any = None
        store.add_host(prefix, self)

    def __call__(self, h: tf.Tensor, residual: tf.Tensor, training: bool = False) -> tf.Tensor:
        if self.adapter is not None:
            return self.adapter(h, residual, self.norm, training)
        return h + residual if self.norm is None else self.norm(h + residual)


class LayerNorm:
    def __init__(self, store: ParamStore, prefix: str, eps: float) -> None:
        self.gamma = store.get(f"{prefix}.weight")
        self.beta = store.get(f"{prefix}.bias")
        self.eps = eps

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """Statistics in float32 whatever the weights' dtype (bf16 sums lose too much)."""
        dtype, x = x.dtype, tf.cast(x, tf.float32)
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        var = tf.reduce_mean(tf.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) * tf.math.rsqrt(var + self.eps) * tf.cast(self.gamma, tf.float32) + tf.cast(self.beta, tf.float32)
        return tf.cast(y, dtype)


class Embedding:
    def __init__(self, store: ParamStore, name: str) -> None:
        self.embeddings = store.get(f"{name}.weight")

    def __call__(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.embeddings, ids)


def _gelu_tanh(x: tf.Tensor) -> tf.Tensor:
    return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3.0))))


def _gelu(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.gelu(x, approximate=False)


#: encdec.activations' names -> TF functions (the formulas are listed there).
ACTIVATIONS = {
    "gelu": _gelu,
    "gelu_python": _gelu,
    "gelu_10": lambda x: tf.clip_by_value(_gelu(x), -10.0, 10.0),
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "gelu_fast": lambda x: 0.5 * x * (1.0 + tf.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "quick_gelu": lambda x: x * tf.sigmoid(1.702 * x),
    "laplace": lambda x: 0.5 * (1.0 + tf.math.erf((x - 0.707107) / (0.282095 * math.sqrt(2.0)))),
    "leaky_relu": lambda x: tf.nn.leaky_relu(x, alpha=0.01),
    "linear": tf.identity,
    "mish": lambda x: x * tf.tanh(tf.nn.softplus(x)),
    "relu": tf.nn.relu,
    "relu2": lambda x: tf.square(tf.nn.relu(x)),
    "relu6": tf.nn.relu6,
    "sigmoid": tf.sigmoid,
    "silu": tf.nn.silu,
    "swish": tf.nn.silu,
    "tanh": tf.tanh,
}
check_backend_table(ACTIVATIONS, "tf")


def activation(name: str, where: str = "activation"):
    """The activation function named by an HF config (``hidden_act`` / ``activation_function``)."""
    return ACTIVATIONS[check_activation(name, where)]


def dropout(x: tf.Tensor, rate: float, training: bool) -> tf.Tensor:
    return tf.nn.dropout(x, rate=rate) if training and rate > 0 else x


def host_values(x: Any) -> np.ndarray | None:
    """Values for the core input validator: eager tensors and host arrays are read (ids,
    masks; embeddings are checked for NaN/inf); symbolic tensors (inside ``tf.function``)
    are not (``None``)."""
    if isinstance(x, (tf.Tensor, tf.Variable)):
        if not tf.executing_eagerly():
            return None
        try:
            return x.numpy()
        except (AttributeError, TypeError):  # symbolic after all
            return None
    return np.asarray(x)


def as_int(x: Any) -> tf.Tensor | None:
    return None if x is None else tf.cast(tf.convert_to_tensor(x), tf.int32)


def padding_bias(mask: tf.Tensor | None) -> tf.Tensor | None:
    """[batch, keys] 1/0 mask -> additive bias [batch, 1, 1, keys]."""
    if mask is None:
        return None
    mask = tf.cast(mask, tf.float32)
    return ((1.0 - mask) * MASK_MIN)[:, None, None, :]


def causal_bias(attention_mask: tf.Tensor | None, batch: tf.Tensor, length: tf.Tensor, past: tf.Tensor, keys: tf.Tensor) -> tf.Tensor:
    """Decoder self-attention bias [batch, 1, length, keys]: query ``i`` sits at position
    ``past + i`` and sees keys at positions ``<=`` its own that ``attention_mask`` keeps."""
    q_pos = past + tf.range(length)
    allowed = tf.range(keys)[None, :] <= q_pos[:, None]
    allowed = tf.broadcast_to(allowed[None, None], tf.stack([batch, 1, length, keys]))
    if attention_mask is not None:
        allowed = tf.logical_and(allowed, tf.cast(attention_mask, tf.bool)[:, None, None, :])
    return tf.where(allowed, 0.0, MASK_MIN)


def decoder_self_bias(attention_mask: Any, batch: tf.Tensor, length: tf.Tensor, past_key_values: Any, cache_index: Any) -> tuple[Any, tf.Tensor]:
    """(position offset, causal self-attention bias) for a decoder call.

    Without a cache the offset is 0; with a growing cache it is the cached length; with
    a static cache (``cache_index`` given) it is ``cache_index`` and the keys span the
    whole buffer (unwritten slots lie in the future, so the causal mask hides them).
    """
    if past_key_values is None:
        past, keys = 0, length
    elif cache_index is not None:
        past, keys = tf.cast(cache_index, tf.int32), tf.shape(past_key_values[0][0])[2]
    else:
        past = tf.shape(past_key_values[0][0])[2]
        keys = past + length
    return past, causal_bias(attention_mask, batch, length, past, keys)


def split_past(past: Any) -> tuple[Any, Any]:
    """A layer's cache ``(k, v[, cross_k, cross_v])`` -> (self-attention past, cross past)."""
    if past is None:
        return None, None
    return tuple(past[:2]), (tuple(past[2:4]) if len(past) >= 4 else None)


def run_layers(layers, h, bias, enc=None, enc_bias=None, past=None, cache_index=None, output_attentions=False,
               output_hidden_states=False, training=False, final=None) -> tuple[tf.Tensor, dict[str, Any]]:
    """Run a stack of layers ``layer(h, bias, enc, enc_bias, past, cache_index, training)
    -> (h, present, probs, cross_probs)``; ``final`` (e.g. GPT-2's ``ln_f``) is applied
    before the last hidden state is recorded, as transformers does."""
    hidden, attentions, cross, presents = [], [], [], []
    for i, layer in enumerate(layers):
        if output_hidden_states:
            hidden.append(h)
        h, present, probs, cross_probs = layer(h, bias, enc, enc_bias, None if past is None else past[i], cache_index, training)
        presents.append(present)
        attentions.append(probs)
        cross.append(cross_probs)
    if final is not None:
        h = final(h)
    if output_hidden_states:
        hidden.append(h)
    return h, {
        "past_key_values": tuple(presents),
        "hidden_states": tuple(hidden) if output_hidden_states else None,
        "attentions": tuple(attentions) if output_attentions else None,
        "cross_attentions": tuple(cross) if output_attentions and cross and cross[0] is not None else None,
    }


def project(h: tf.Tensor, weight: Any, transpose: bool, bias: Any = None) -> tf.Tensor:
    """[batch, len, hidden] -> [batch, len, vocab] through a kernel [hidden, vocab] or a
    tied embedding table [vocab, hidden] (``transpose``); float32 logits whatever the
    weights' dtype (losses and generation's scores are float32)."""
    flat = tf.matmul(tf.reshape(h, [-1, h.shape[-1]]), weight, transpose_b=transpose)
    if bias is not None:
        flat = flat + bias
    vocab = weight.shape[0] if transpose else weight.shape[1]
    return tf.reshape(tf.cast(flat, tf.float32), dims(h)[:-1] + [vocab])


def dims(x: tf.Tensor) -> list:
    """``x``'s dimensions: Python ints where the static shape knows them (always when eager
    or traced for XLA with concrete inputs), scalar tensors elsewhere.  Reshapes built from
    them trace to one constant instead of a shape / slice / pack chain: fewer ops to run
    eagerly, to trace and to compile."""
    static = x.shape.as_list()
    if all(d is not None for d in static):
        return static
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(static)]


def split_heads(x: tf.Tensor, heads: int) -> tf.Tensor:
    """[batch, len, heads*dim] -> [batch, heads, len, dim]."""
    batch, length, width = dims(x)
    return tf.transpose(tf.reshape(x, [batch, length, heads, width // heads]), [0, 2, 1, 3])


def merge_heads(x: tf.Tensor) -> tf.Tensor:
    batch, heads, length, dim = dims(x)
    return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [batch, length, heads * dim])


def update_cache(
    past: tuple[tf.Tensor, tf.Tensor] | None, k: tf.Tensor, v: tf.Tensor, cache_index: tf.Tensor | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Keys/values to attend over, which are also the new cache.

    Without ``cache_index`` the cache grows by concatenation; with it, ``past`` is a
    static buffer [batch, heads, max_len, dim] and the new entries are written at
    ``cache_index`` (shape-static, so a compiled decode loop keeps one program).
    """
    if past is None:
        return k, v
    pk, pv = past
    if cache_index is None:
        return tf.concat([pk, k], axis=2), tf.concat([pv, v], axis=2)
    return write_at(pk, k, cache_index), write_at(pv, v, cache_index)


def write_at(buffer: tf.Tensor, new: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """``buffer[:, :, index:index + n] = new`` for a cache [batch, heads, max_len, dim] and
    ``new`` [batch, heads, n, dim]: one select over the buffer, which XLA fuses and writes in
    place of the loop-carried buffer (TF has no public dynamic-update-slice outside XLA; the
    one-hot product this replaces multiplied and added the whole buffer)."""
    offset = tf.range(tf.shape(buffer)[2]) - tf.cast(index, tf.int32)  # [max_len]
    count = tf.shape(new)[2]
    inside = tf.logical_and(offset >= 0, offset < count)[:, None]  # [max_len, 1]
    if new.shape[2] != 1:  # a prompt: entry i of ``new`` goes to slot index + i
        new = tf.gather(new, tf.clip_by_value(offset, 0, count - 1), axis=2)
    return tf.where(inside, new, buffer)


def attention_kv(key: Dense, value: Dense, h: tf.Tensor, states: Any, past: Any, cache_index: Any, heads: int, cross: bool,
                 training: bool = False):
    """Keys and values of one attention: cross-attention projects the encoder states once
    (a cache holds them afterwards); self-attention extends the cache."""
    if cross and past is not None:
        return past
    src = states if cross else h
    k, v = split_heads(key(src, training), heads), split_heads(value(src, training), heads)
    return (k, v) if cross else update_cache(past, k, v, cache_index)


def attend(
    q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, bias: tf.Tensor | None, rate: float, training: bool, scale: float | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Scaled dot-product attention over [batch, heads, len, dim]; returns (context, probs).
    Scores, masks and softmax are float32 whatever the weights' dtype (the float32 mask
    minimum does not exist in bf16/fp16); the context is in ``v``'s dtype."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = tf.cast(tf.matmul(q, k, transpose_b=True), tf.float32) * scale
    if bias is not None:
        scores = scores + bias
    probs = tf.nn.softmax(scores, axis=-1)
    return tf.matmul(tf.cast(dropout(probs, rate, training), v.dtype), v), probs
