"""Adapters (AdapterHub-compatible): configs, parameter spec, portable init and file I/O.

Backend-neutral (numpy only).  Two methods are supported, with the field names and defaults of
the ``adapters`` library 1.3: a sequential bottleneck adapter (:class:`SeqBnConfig`) and LoRA
(:class:`LoRAConfig`).  Parameter names equal AdapterHub's PyTorch state-dict names of an
``EncoderDecoderModel`` (e.g. ``encoder.encoder.layer.0.output.adapters.NAME.adapter_down.0.weight``,
``decoder.bert.encoder.layer.1.crossattention.self.query.loras.NAME.lora_A``), so AdapterHub's
``pytorch_adapter.bin`` maps one to one onto ours.  ``leave_out`` counts layer ids separately in
the encoder and in the decoder, as AdapterHub does.

A backend builds one module per :class:`AdapterSite` (a host module path plus the site's
parameters), computes the adapter's own layers, and leaves everything else to this module:
:func:`bottleneck_compose` (where a bottleneck adapter sits around a host's residual and
LayerNorm) and :class:`AdapterMethods` (the public API -- add, activate, train, delete, merge,
save, load -- written once over a handful of backend hooks).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, TypeVar, Union

import numpy as np

from encdec.specs import encoder_decoder_spec

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTERHUB_WEIGHTS_NAME = "pytorch_adapter.bin"
#: AdapterHub's safetensors file (``save_adapter(..., use_safetensors=True)``)
ADAPTERHUB_SAFE_WEIGHTS_NAME = "adapter.safetensors"
#: ``save_adapter(format=...)``: ours (default), AdapterHub's torch pickle, AdapterHub's safetensors
ADAPTER_FORMATS = {"safetensors": ADAPTER_WEIGHTS_NAME, "adapterhub": ADAPTERHUB_WEIGHTS_NAME,
                   "adapterhub-safetensors": ADAPTERHUB_SAFE_WEIGHTS_NAME}
NON_LINEARITIES = ("relu", "gelu", "gelu_new", "tanh", "swish", "silu")
T = TypeVar("T")


@dataclass(frozen=True)
class SeqBnConfig:
    """Sequential bottleneck adapter (Pfeiffer et al. 2020), AdapterHub's ``SeqBnConfig``.

    At a host ``h = dropout(dense(x))`` with residual ``r`` and the host's LayerNorm ``LN``:
    ``res = h`` if ``residual_before_ln is True``; if ``original_ln_before``: ``h = h + r``
    (``res = h`` for ``"post_add"``), ``h = LN(h)``; ``res = h`` if ``residual_before_ln`` is
    False; ``out = up(act(down(h))) * scaling + res``; then ``LN(out + r)`` if
    ``original_ln_after`` else ``out``.  ``mh_adapter`` places adapters after every attention
    output (self- and, in BERT decoders, cross-attention), ``output_adapter`` after the FFN
    output.  At GPT-2 sites (pre-LN) there is no ``LN`` (identity), as in AdapterHub.
    """

    mh_adapter: bool = False
    output_adapter: bool = True
    reduction_factor: Union[float, Mapping[str, float]] = 16
    non_linearity: str = "relu"
    original_ln_before: bool = True
    original_ln_after: bool = True
    ln_before: bool = False
    ln_after: bool = False
    init_weights: str = "bert"
    init_weights_seed: Optional[int] = None
    is_parallel: bool = False
    scaling: Union[float, str] = 1.0
    use_gating: bool = False
    residual_before_ln: Union[bool, str] = True
    adapter_residual_before_ln: bool = False
    inv_adapter: Optional[str] = None
    inv_adapter_reduction_factor: Optional[float] = None
    cross_adapter: bool = False
    leave_out: list[int] = field(default_factory=list)
    dropout: float = 0.0
    phm_layer: bool = False
    stochastic_depth: float = 0.0

    def __post_init__(self) -> None:
        refused = {
            "ln_before": False, "ln_after": False, "is_parallel": False, "use_gating": False,
            "adapter_residual_before_ln": False, "inv_adapter": None, "cross_adapter": False,
            "phm_layer": False, "stochastic_depth": 0.0,
        }
        _refuse(self, refused, "SeqBnConfig")
        if self.init_weights != "bert":
            raise NotImplementedError(f"SeqBnConfig: init_weights={self.init_weights!r} is not supported (only 'bert')")
        if isinstance(self.scaling, str) or isinstance(self.scaling, bool):
            raise NotImplementedError(f"SeqBnConfig: scaling={self.scaling!r} is not supported (a float is expected)")
        if not _finite_number(self.scaling):
            raise ValueError(f"SeqBnConfig: scaling must be a finite number, got {self.scaling!r}")
        if self.non_linearity.lower() not in NON_LINEARITIES:
            raise ValueError(f"SeqBnConfig: non_linearity={self.non_linearity!r}; expected one of {NON_LINEARITIES}")
        if self.residual_before_ln not in (True, False, "post_add"):
            raise ValueError(f"SeqBnConfig: residual_before_ln must be True, False or 'post_add', got {self.residual_before_ln!r}")
        if self.residual_before_ln == "post_add" and not self.original_ln_before:
            raise ValueError("SeqBnConfig: residual_before_ln='post_add' needs original_ln_before=True")
        if not (self.mh_adapter or self.output_adapter):
            raise ValueError("SeqBnConfig: at least one of mh_adapter / output_adapter must be True")
        _check_leave_out(self.leave_out, "SeqBnConfig")

    def bottleneck_size(self, hidden_size: int, layer: int) -> int:
        """Bottleneck width at ``layer``: ``int(hidden_size // reduction_factor)``, at least 1."""
        factor = self.reduction_factor
        if isinstance(factor, Mapping):
            if str(layer) in factor:
                factor = factor[str(layer)]
            elif "default" in factor:
                factor = factor["default"]
            else:
                raise ValueError(f"SeqBnConfig: reduction_factor has no entry for layer {layer} and no 'default'")
        if not _finite_number(factor) or factor <= 0:
            raise ValueError(f"SeqBnConfig: reduction_factor must be a finite number > 0, got {factor!r}")
        return max(1, int(hidden_size // factor))


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA (Hu et al. 2021), AdapterHub's ``LoRAConfig``: ``y = W x + b + (dropout(x) A^T B^T) * alpha / r``.

    ``selfattn_lora`` adapts the ``attn_matrices`` (q/k/v) of the self-attention and, in BERT,
    RoBERTa and BART decoders, of the cross-attention (GPT-2: its fused self-attention ``c_attn``
    only, as AdapterHub); ``intermediate_lora`` the FFN up projection, ``output_lora`` the FFN
    down projection.
    """

    architecture: str = "lora"
    selfattn_lora: bool = True
    intermediate_lora: bool = False
    output_lora: bool = False
    leave_out: list[int] = field(default_factory=list)
    r: int = 8
    alpha: int = 8
    dropout: float = 0.0
    attn_matrices: list[str] = field(default_factory=lambda: ["q", "v"])
    composition_mode: str = "add"
    init_weights: str = "lora"
    init_weights_seed: Optional[int] = None
    use_gating: bool = False
    use_dora: bool = False
    vera_d: Optional[float] = None
    vera_b: Optional[float] = None
    dtype: Optional[str] = None

    def __post_init__(self) -> None:
        if self.architecture != "lora":
            raise ValueError(f"LoRAConfig: architecture must be 'lora', got {self.architecture!r}")
        _refuse(self, {"composition_mode": "add", "use_gating": False, "use_dora": False, "vera_d": None,
                       "vera_b": None, "dtype": None}, "LoRAConfig")
        if self.init_weights not in ("lora", "bert"):
            raise NotImplementedError(f"LoRAConfig: init_weights={self.init_weights!r} is not supported ('lora' or 'bert')")
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"LoRAConfig: r must be a positive int, got {self.r!r}")
        if not _finite_number(self.alpha):
            raise ValueError(f"LoRAConfig: alpha must be a finite number, got {self.alpha!r}")
        bad = [m for m in self.attn_matrices if m not in ("q", "k", "v")]
        if bad:
            raise ValueError(f"LoRAConfig: attn_matrices may contain 'q', 'k', 'v', got {bad}")
        if not (self.selfattn_lora or self.intermediate_lora or self.output_lora):
            raise ValueError("LoRAConfig: at least one of selfattn_lora / intermediate_lora / output_lora must be True")
        _check_leave_out(self.leave_out, "LoRAConfig")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


AdapterConfig = Union[SeqBnConfig, LoRAConfig]


def _refuse(config: Any, allowed: Mapping[str, Any], what: str) -> None:
    for key, value in allowed.items():
        if getattr(config, key) != value:
            raise NotImplementedError(f"{what}: {key}={getattr(config, key)!r} is not supported (only {value!r})")


def _check_leave_out(leave_out: Any, what: str) -> None:
    if not all(isinstance(i, int) and i >= 0 for i in leave_out):
        raise ValueError(f"{what}: leave_out must be a list of layer ids >= 0, got {leave_out!r}")


def config_to_dict(config: AdapterConfig) -> dict[str, Any]:
    """The config as AdapterHub writes it (``architecture`` only for LoRA)."""
    return dataclasses.asdict(config)


def _finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def config_from_dict(data: Mapping[str, Any]) -> AdapterConfig:
    """Config from an AdapterHub / encdec config dict; refuses keys of methods we do not implement."""
    data = dict(data)
    architecture = data.get("architecture")
    if architecture == "lora":
        cls: type = LoRAConfig
    elif architecture in (None, "bottleneck") and "reduction_factor" in data:
        data.pop("architecture", None)
        cls = SeqBnConfig
    else:
        raise NotImplementedError(f"adapter config: architecture {architecture!r} is not supported (bottleneck or lora)")
    known = {f.name for f in dataclasses.fields(cls)}
    # AdapterHub's PHM options only matter with phm_layer=True, which SeqBnConfig refuses.
    ignored = {k for k in data if k.startswith("phm_") or k in ("factorized_phm_W", "shared_W_phm", "shared_phm_rule",
                                                                 "factorized_phm_rule", "learn_phm", "hypercomplex_nonlinearity")}
    unknown = sorted(set(data) - known - (ignored if cls is SeqBnConfig else set()))
    if unknown:
        raise NotImplementedError(f"adapter config: unsupported keys {unknown} for {cls.__name__}")
    return cls(**{k: v for k, v in data.items() if k in known})


#: AdapterHub's config identifiers we implement (``add_adapter(name, config="seq_bn")``).
CONFIG_NAMES: dict[str, Callable[[], AdapterConfig]] = {
    "seq_bn": SeqBnConfig, "pfeiffer": SeqBnConfig,
    "double_seq_bn": lambda: SeqBnConfig(mh_adapter=True, output_adapter=True, original_ln_before=False,
                                         non_linearity="swish"),
    "lora": LoRAConfig,
}
CONFIG_NAMES["houlsby"] = CONFIG_NAMES["double_seq_bn"]


def resolve_config(config: Any, where: str = "add_adapter") -> AdapterConfig:
    """A config object, an AdapterHub config dict, or one of AdapterHub's identifiers
    (``"seq_bn"``/``"pfeiffer"``, ``"double_seq_bn"``/``"houlsby"``, ``"lora"``) -> our config."""
    if isinstance(config, (SeqBnConfig, LoRAConfig)):
        return config
    if isinstance(config, str):
        if config not in CONFIG_NAMES:
            raise NotImplementedError(f"{where}: adapter config {config!r} is not supported; use one of "
                                      f"{', '.join(sorted(CONFIG_NAMES))}, a SeqBnConfig/LoRAConfig or a config dict")
        return CONFIG_NAMES[config]()
    if isinstance(config, Mapping):
        return config_from_dict(config)
    raise TypeError(f"{where}: config must be a SeqBnConfig or LoRAConfig, a config dict or a name such as 'seq_bn', "
                    f"got {type(config).__name__}")


@dataclass(frozen=True)
class AdapterParam:
    name: str  # canonical (AdapterHub state-dict) name
    shape: tuple[int, ...]
    kind: str  # "linear" [out, in], "bias", "lora_a" [r, in], "lora_b" [out, r]


@dataclass(frozen=True)
class AdapterSite:
    """One adapter module: ``host`` is the canonical path of the module it attaches to.

    method "bottleneck": host is a BERT attention-output / FFN-output block (dense, dropout,
    LayerNorm) or a GPT-2 block's ``attention_adapters`` / ``output_adapters`` slot (no LayerNorm);
    params: ``adapter_down.0.weight/bias``, ``adapter_up.weight/bias``.
    method "lora": host is a linear layer; params ``lora_A``, ``lora_B``."""

    host: str
    method: str
    prefix: str  # host + ".adapters.NAME" or host + ".loras.NAME"
    params: tuple[AdapterParam, ...]
    host_transposed: bool = False  # LoRA host weight stored [in, out] (GPT-2 conv1d): merge adds (B A)^T
    #: LoRA on a fused q/k/v projection (GPT-2 ``c_attn``): the output blocks (0 q, 1 k, 2 v) the
    #: adapter updates, one rank-r group each; ``None`` for a plain linear.  See :func:`expand_lora_b`.
    lora_blocks: Optional[tuple[int, ...]] = None


def _check_part(part_config: Any, role: str) -> None:
    supported = ("bert", "roberta", "electra") if role == "encoder" else ("bert", "roberta", "gpt2", "bart")
    if part_config.model_type not in supported:
        raise NotImplementedError(
            f"adapters: {role} model_type {part_config.model_type!r} is not supported yet ({', '.join(supported)})")


def _bottleneck_site(host: str, prefix: str, hidden: int, down: int) -> AdapterSite:
    return AdapterSite(host, "bottleneck", prefix, (
        AdapterParam(f"{prefix}.adapter_down.0.weight", (down, hidden), "linear"),
        AdapterParam(f"{prefix}.adapter_down.0.bias", (down,), "bias"),
        AdapterParam(f"{prefix}.adapter_up.weight", (hidden, down), "linear"),
        AdapterParam(f"{prefix}.adapter_up.bias", (hidden,), "bias"),
    ))


def _lora_site(host: str, name: str, r: int, d_in: int, d_out: int, host_transposed: bool = False,
               blocks: Optional[tuple[int, ...]] = None) -> AdapterSite:
    """A LoRA site; with ``blocks`` (fused q/k/v host of width ``d_out = 3 d``) A is [r n, in] and
    B [d n, r] for ``n = len(blocks)`` groups, as AdapterHub's ``LoRAMergedLinear``."""
    prefix = f"{host}.loras.{name}"
    n = 1 if blocks is None else len(blocks)
    d_b = d_out if blocks is None else d_out // 3 * n
    return AdapterSite(host, "lora", prefix, (
        AdapterParam(f"{prefix}.lora_A", (r * n, d_in), "lora_a"),
        AdapterParam(f"{prefix}.lora_B", (d_b, r), "lora_b"),
    ), host_transposed, blocks)


@functools.lru_cache(maxsize=None)
def _merged_lora_constants(blocks: tuple[int, ...], d: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(blocks)
    tile = np.tile(np.eye(r, dtype=np.float32), (1, n))  # [r, r n]: B @ tile repeats B's columns per group
    group = np.kron(np.eye(n, dtype=np.float32), np.ones((d, r), np.float32))  # [d n, r n] block diagonal
    place = np.zeros((3, n), np.float32)  # group g goes to output block blocks[g]
    place[list(blocks), range(n)] = 1.0
    return place, tile, group


def expand_lora_b(site: AdapterSite, lora_b: T, asarray: Callable[[np.ndarray], T] = np.asarray,
                  reshape: Callable[[T, tuple[int, ...]], T] = np.reshape) -> T:
    """The [out, r n] matrix ``B'`` with ``delta(x) = x A^T B'^T``: ``lora_B`` itself for a plain
    LoRA; for a fused q/k/v site, group ``g``'s rows of B (rank-r columns ``g``) placed in output
    block ``blocks[g]`` and zeros elsewhere -- AdapterHub's grouped conv1d plus padding.  Written
    with matmuls and reshapes only (the block diagonal ``(B @ tile) * group``, then a [3, n]
    placement over whole blocks), so every backend computes it the same way at a cost of
    O(d n^2 r) and gradients flow to B's entries only.  ``asarray`` turns the numpy constants into
    the backend's arrays; ``reshape(x, shape)`` is the backend's reshape."""
    if site.lora_blocks is None:
        return lora_b
    d_n, r = site.params[1].shape
    n = len(site.lora_blocks)
    d = d_n // n
    place, tile, group = (asarray(c) for c in _merged_lora_constants(site.lora_blocks, d, r))
    blocks = reshape((lora_b @ tile) * group, (n, d * r * n))  # row g: group g's block, flattened
    return reshape(place @ blocks, (3 * d, r * n))


def _gpt2_sites(part: Any, name: str, config: AdapterConfig) -> list[AdapterSite]:
    """GPT-2 decoder (pre-LN): bottleneck adapters after self-attention and after the MLP, each
    around its residual sum with no LayerNorm; LoRA on the self-attention's fused ``c_attn`` and
    the MLP's ``c_fc`` / ``c_proj``; nothing at cross-attention (as AdapterHub)."""
    if isinstance(config, LoRAConfig):
        d, inner = part.n_embd, part.n_inner or 4 * part.n_embd
        blocks = tuple(i for i, m in enumerate("qkv") if m in config.attn_matrices)
        hosts = ([("attn.c_attn", d, 3 * d, blocks)] if config.selfattn_lora and blocks else []) + (
            [("mlp.c_fc", d, inner, None)] if config.intermediate_lora else []) + (
            [("mlp.c_proj", inner, d, None)] if config.output_lora else [])
        return [_lora_site(f"decoder.transformer.h.{i}.{m}", name, config.r, d_in, d_out, True, b)
                for i in range(part.n_layer) if i not in config.leave_out for m, d_in, d_out, b in hosts]
    if config.residual_before_ln == "post_add":
        raise NotImplementedError("adapters: residual_before_ln='post_add' needs a LayerNorm at the site; GPT-2 has none")
    sites = []
    for i in range(part.n_layer):
        if i in config.leave_out:
            continue
        hosts = (["attention_adapters"] if config.mh_adapter else []) + (["output_adapters"] if config.output_adapter else [])
        for host in hosts:
            host = f"decoder.transformer.h.{i}.{host}"
            sites.append(_bottleneck_site(host, f"{host}.adapters.{name}", part.n_embd, config.bottleneck_size(part.n_embd, i)))
    return sites


def _layer_lora_sites(config: LoRAConfig, name: str, d: int, ffn: int, attentions: list[tuple[dict[str, str], int]],
                      fc_in: str, fc_out: str) -> list[AdapterSite]:
    """LoRA sites of one post-LN layer: per attention (``({"q"|"k"|"v": host}, key/value input
    width)``) the ``attn_matrices`` when ``selfattn_lora``, the FFN's up projection ``fc_in``
    (``intermediate_lora``) and down projection ``fc_out`` (``output_lora``)."""
    linears: list[tuple[str, int, int]] = []
    if config.selfattn_lora:
        for hosts, kv_in in attentions:
            linears += [(hosts[m], d if m == "q" else kv_in, d) for m in "qkv" if m in config.attn_matrices]
    if config.intermediate_lora:
        linears.append((fc_in, d, ffn))
    if config.output_lora:
        linears.append((fc_out, ffn, d))
    return [_lora_site(host, name, config.r, d_in, d_out) for host, d_in, d_out in linears]


def _bart_sites(part: Any, name: str, config: AdapterConfig) -> list[AdapterSite]:
    """BART decoder (``BartForCausalLM``, post-LN): bottleneck adapters after self-attention
    (``attention_adapters``, around ``self_attn_layer_norm``) and after the FFN
    (``output_adapters``, around ``final_layer_norm``), none at cross-attention (AdapterHub puts
    its ``cross_attention_adapters`` there only for ``cross_adapter``, which is refused); LoRA on
    q/k/v of self- and cross-attention and on ``fc1`` / ``fc2``."""
    d, ffn = part.d_model, part.decoder_ffn_dim
    kv_in = part.cross_attention_hidden_size or d
    sites = []
    for i in range(part.decoder_layers):
        if i in config.leave_out:
            continue
        layer = f"decoder.model.decoder.layers.{i}"
        if isinstance(config, SeqBnConfig):
            hosts = (["attention_adapters"] if config.mh_adapter else []) + (["output_adapters"] if config.output_adapter else [])
            sites += [_bottleneck_site(f"{layer}.{h}", f"{layer}.{h}.adapters.{name}", d, config.bottleneck_size(d, i))
                      for h in hosts]
            continue
        attns = [("self_attn", d)] + ([("encoder_attn", kv_in)] if part.add_cross_attention else [])
        sites += _layer_lora_sites(config, name, d, ffn, [({m: f"{layer}.{a}.{m}_proj" for m in "qkv"}, src)
                                                          for a, src in attns], f"{layer}.fc1", f"{layer}.fc2")
    return sites


def adapter_sites(model_config: Any, name: str, config: AdapterConfig) -> list[AdapterSite]:
    """Every adapter module of adapter ``name`` in an encoder-decoder model (``EncoderDecoderConfig``)."""
    if not name or "." in name:
        raise ValueError(f"adapter name must be a non-empty string without '.', got {name!r}")
    sites: list[AdapterSite] = []
    for role in ("encoder", "decoder"):
        part = getattr(model_config, role)
        _check_part(part, role)
        if part.model_type in ("gpt2", "bart"):
            sites += (_gpt2_sites if part.model_type == "gpt2" else _bart_sites)(part, name, config)
            continue
        # BERT-like stacks (BERT, RoBERTa, ELECTRA): the decoder's base model prefix is its model_type
        base = "encoder.encoder.layer" if role == "encoder" else f"decoder.{part.model_type}.encoder.layer"
        layers = part.num_hidden_layers
        h, ffn = part.hidden_size, part.intermediate_size
        cross = role == "decoder" and part.add_cross_attention
        kv_in = (part.cross_attention_hidden_size or h) if cross else h
        for i in range(layers):
            if i in config.leave_out:
                continue
            layer = f"{base}.{i}"
            attns = ["attention"] + (["crossattention"] if cross else [])
            if isinstance(config, SeqBnConfig):
                hosts = ([f"{layer}.{a}.output" for a in attns] if config.mh_adapter else []) + (
                    [f"{layer}.output"] if config.output_adapter else [])
                down = config.bottleneck_size(h, i)
                sites += [_bottleneck_site(host, f"{host}.adapters.{name}", h, down) for host in hosts]
            else:
                hosts = [({m: f"{layer}.{a}.self.{n}" for m, n in zip("qkv", ("query", "key", "value"))},
                          kv_in if a == "crossattention" else h) for a in attns]
                sites += _layer_lora_sites(config, name, h, ffn, hosts, f"{layer}.intermediate.dense", f"{layer}.output.dense")
    return sites


def adapter_params(sites: list[AdapterSite]) -> dict[str, tuple[int, ...]]:
    return {p.name: p.shape for s in sites for p in s.params}


def init_adapter_weights(sites: list[AdapterSite], config: AdapterConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Portable init (same seed, same weights in every backend).  Bottleneck ("bert"): matrices
    N(0, 0.02), biases 0.  LoRA ("lora"): A ~ U(+-1/sqrt(in)) (kaiming-uniform with a=sqrt(5)),
    B = 0, so a fresh LoRA changes nothing; ("bert"): A, B ~ N(0, 0.02)."""
    rng = np.random.default_rng(config.init_weights_seed if config.init_weights_seed is not None else seed)
    out: dict[str, np.ndarray] = {}
    for site in sites:
        for p in site.params:
            if p.kind == "bias" or (p.kind == "lora_b" and config.init_weights == "lora"):
                arr = np.zeros(p.shape)
            elif p.kind == "lora_a" and config.init_weights == "lora":
                bound = 1.0 / np.sqrt(p.shape[1])
                arr = rng.uniform(-bound, bound, p.shape)
            else:
                arr = rng.normal(0.0, 0.02, p.shape)
            out[p.name] = arr.astype(np.float32)
    return out


def check_adapter_weights(sites: list[AdapterSite], weights: Mapping[str, np.ndarray], where: str) -> None:
    """Names and shapes of ``weights`` must equal the sites' parameters exactly."""
    expected = adapter_params(sites)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{where}: adapter weights do not match the adapter spec: missing {missing[:6]}, unexpected {unexpected[:6]}")
    for n, shape in expected.items():
        if tuple(np.shape(weights[n])) != shape:
            raise ValueError(f"{where}: adapter weight {n!r} has shape {tuple(np.shape(weights[n]))}, expected {shape}")


def save_adapter_files(directory: Union[str, os.PathLike], name: str, config: AdapterConfig,
                       weights: Mapping[str, np.ndarray], format: str = "safetensors") -> None:
    """Write ``adapter_config.json`` (AdapterHub's layout) and the weights under AdapterHub's
    state-dict names: ``format="safetensors"`` (default) ``adapter_model.safetensors``, read by
    every encdec backend; ``"adapterhub"`` AdapterHub's ``pytorch_adapter.bin`` (a torch pickle:
    needs PyTorch installed), which ``adapters``' own ``load_adapter`` reads;
    ``"adapterhub-safetensors"`` AdapterHub's ``adapter.safetensors`` (``adapters``'
    ``load_adapter(..., use_safetensors=True)``; no PyTorch needed).  Written with the
    checkpoints' atomic folder writer: an interrupted save leaves the previous adapter whole
    (never a new config beside old weights); other files are kept."""
    from encdec.checkpoint import atomic_directory, write_bytes, write_pt_bin, write_safetensors

    if format not in ADAPTER_FORMATS:
        raise ValueError(f"save_adapter: format={format!r}; expected one of {', '.join(ADAPTER_FORMATS)}")
    adapterhub = format != "safetensors"
    # AdapterHub names the class its adapters.init makes of transformers' EncoderDecoderModel
    meta = {"config": config_to_dict(config), "name": name, "model_type": "encoder-decoder",
            "version": "encdec", "hidden_size": None, "model_name": "",
            "model_class": "EncoderDecoderModelWithAdapters" if adapterhub else "EncoderDecoderModel"}
    weights_name = ADAPTER_FORMATS[format]
    owned = (ADAPTER_CONFIG_NAME, *ADAPTER_FORMATS.values())

    def fill(tmp: str) -> list[str]:
        write_bytes(os.path.join(tmp, ADAPTER_CONFIG_NAME), [json.dumps(meta, indent=2, sort_keys=True).encode()])
        path = os.path.join(tmp, weights_name)
        if format == "adapterhub":
            write_pt_bin(path, weights)
        else:
            write_safetensors(path, weights)
        return [ADAPTER_CONFIG_NAME, weights_name]

    atomic_directory(directory, fill, lambda entry: entry in owned)


def load_adapter_files(directory: Union[str, os.PathLike]) -> tuple[str, AdapterConfig, dict[str, np.ndarray]]:
    """Read an adapter saved by any encdec backend (``adapter_model.safetensors``) or in the
    AdapterHub ``adapters`` library's layout (``adapter.safetensors``, or ``pytorch_adapter.bin``
    read with ``weights_only=True``).
    Returns ``(name, config, {canonical name: array})``.  The folder is read through one
    pinned view, so a save racing this load cannot mix two adapters' files."""
    from encdec.checkpoint import pinned_folder

    with pinned_folder(directory) as view:
        return view.run(_read_adapter_folder)


def _read_adapter_folder(directory: str) -> tuple[str, AdapterConfig, dict[str, np.ndarray]]:
    cfg_path = os.path.join(directory, ADAPTER_CONFIG_NAME)
    if not os.path.isfile(cfg_path):
        raise FileNotFoundError(f"load_adapter: no {ADAPTER_CONFIG_NAME} in {os.fspath(directory)!r}")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"load_adapter: {cfg_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or not isinstance(meta.get("name"), str):
        raise ValueError(f"load_adapter: {cfg_path} needs the keys 'config' (an object) and 'name' (a string)")
    if meta.get("model_type", "encoder-decoder") != "encoder-decoder":
        raise ValueError(f"load_adapter: {cfg_path} is for model_type {meta['model_type']!r}, expected 'encoder-decoder'")
    config = config_from_dict(meta["config"])
    st_paths = [os.path.join(directory, n) for n in (ADAPTER_WEIGHTS_NAME, ADAPTERHUB_SAFE_WEIGHTS_NAME)]
    bin_path = os.path.join(directory, ADAPTERHUB_WEIGHTS_NAME)
    from encdec.checkpoint import CheckpointError, check_finite, read_pt_bin, read_safetensors

    st_path = next((p for p in st_paths if os.path.isfile(p)), None)
    if st_path is not None:
        weights = read_safetensors(st_path)  # validated header, memory owned by this process
    elif os.path.isfile(bin_path):
        # AdapterHub's format is a torch pickle, read with weights_only=True
        weights = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in read_pt_bin(bin_path).items()}
    else:
        raise FileNotFoundError(f"load_adapter: none of {', '.join(ADAPTER_FORMATS.values())} in {os.fspath(directory)!r}")
    wrong = sorted(k for k, v in weights.items() if v.dtype.kind != "f")
    if wrong:
        raise CheckpointError(f"load_adapter: {os.fspath(directory)!r} holds non-float adapter weights: {wrong[:10]}")
    check_finite(weights, f"adapter folder {os.fspath(directory)!r}")
    return meta["name"], config, weights



def bottleneck_compose(config: SeqBnConfig, h: T, residual: T, layer_norm: Optional[Callable[[T], T]],
                       adapter: Callable[[T], T]) -> T:
    """A bottleneck adapter at its host, for any array type: ``h`` is the host's sub-layer output
    (after its dense and dropout), ``residual`` the block input, ``layer_norm`` the host's
    LayerNorm (``None`` at a pre-LN GPT-2 site) and ``adapter(x)`` the adapter's own
    ``dropout(up(act(down(x))) * scaling)``.  Placement follows AdapterHub's ``SeqBnConfig``
    (``original_ln_before``, ``residual_before_ln``, ``original_ln_after``)."""
    norm = layer_norm if layer_norm is not None else (lambda t: t)
    res = h
    if config.original_ln_before:
        h = h + residual
        if config.residual_before_ln == "post_add":
            res = h
        h = norm(h)
    if config.residual_before_ln is False:
        res = h
    out = adapter(h) + res
    return norm(out + residual) if config.original_ln_after else out


def lora_delta(site: AdapterSite, lora_a: np.ndarray, lora_b: np.ndarray, config: LoRAConfig) -> np.ndarray:
    """The LoRA update of ``site``'s host weight in canonical (PyTorch) layout: ``B A * alpha / r``,
    transposed for a GPT-2 Conv1D host (stored [in, out])."""
    b = expand_lora_b(site, np.asarray(lora_b, np.float64), lambda c: c.astype(np.float64))
    delta = (b @ np.asarray(lora_a, np.float64)) * config.scaling
    return delta.T if site.host_transposed else delta


def adapter_backend_names(sites: list[AdapterSite], layout: Any) -> dict[str, tuple[str, bool]]:
    """``{canonical name: (backend name, transposed)}`` under a backend :class:`~encdec.layout.Layout`:
    bottleneck matrices and biases follow the layout's ``linear`` / ``bias`` rules; LoRA factors keep
    AdapterHub's names and orientation (``lora_A`` [r, in], ``lora_B`` [out, r]) in every backend."""
    out = {}
    for site in sites:
        for p in site.params:
            if p.kind in ("lora_a", "lora_b"):
                out[p.name] = (p.name, False)
            else:
                out[p.name] = (layout.backend_name(p.name, p.kind), p.kind in layout.transpose and len(p.shape) == 2)
    return out


class AdapterMethods:
    """The AdapterHub-style adapter API of every backend's model, written once.

    A backend model mixes this in and implements the hooks (``_build_adapter``,
    ``_remove_adapter``, ``_read_adapter``, ``_write_adapter``, ``_activate_adapter``,
    ``_freeze_all_but``, ``_read_base``, ``_write_base``); names, configs, validation, the
    portable init, merging and files stay here, so the three backends cannot drift apart.
    Only one adapter runs at a time; with none active a model computes exactly its base model.
    """

    config: Any

    # --- backend hooks ------------------------------------------------------------------------
    def _build_adapter(self, name: str, config: AdapterConfig, sites: list[AdapterSite]) -> None:
        """Create the parameters of every site (any values; written right after)."""
        raise NotImplementedError

    def _remove_adapter(self, name: str, sites: list[AdapterSite]) -> None:
        raise NotImplementedError

    def _read_adapter(self, sites: list[AdapterSite]) -> dict[str, np.ndarray]:
        """``{canonical name: array}`` (canonical layout) of the sites' parameters."""
        raise NotImplementedError

    def _write_adapter(self, sites: list[AdapterSite], weights: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _activate_adapter(self, name: Optional[str], config: Optional[AdapterConfig],
                          sites: list[AdapterSite]) -> None:
        """Make adapter ``name`` (or none) the one every forward and ``generate`` runs."""
        raise NotImplementedError

    def _freeze_all_but(self, name: str, sites: list[AdapterSite]) -> None:
        """Make the sites' parameters the only trainable ones."""
        raise NotImplementedError

    def _read_base(self, names: list[str]) -> dict[str, np.ndarray]:
        """Canonical base weights ``names`` (canonical layout)."""
        raise NotImplementedError

    def _write_base(self, weights: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    # --- public API ---------------------------------------------------------------------------
    def _adapter_registry(self) -> dict:
        return vars(self).setdefault("_encdec_adapters", {"configs": {}, "active": None})

    @property
    def adapter_configs(self) -> dict[str, AdapterConfig]:
        """``{name: config}`` of the adapters in this model."""
        return dict(self._adapter_registry()["configs"])

    @property
    def active_adapter(self) -> Optional[str]:
        """The adapter every forward runs, or ``None``."""
        return self._adapter_registry()["active"]

    def _config_of(self, name: str) -> AdapterConfig:
        configs = self._adapter_registry()["configs"]
        if name not in configs:
            raise KeyError(f"no adapter named {name!r}; this model has {sorted(configs)}")
        return configs[name]

    def _sites_of(self, name: str) -> list[AdapterSite]:
        return adapter_sites(self.config, name, self._config_of(name))

    def _reactivate(self) -> None:
        active = self.active_adapter
        config = None if active is None else self._config_of(active)
        self._activate_adapter(active, config, [] if active is None else self._sites_of(active))

    def add_adapter(self, name: str, config: Union[AdapterConfig, str, Mapping[str, Any], None] = None, seed: int = 0,
                    set_active: bool = False) -> None:
        """Add adapter ``name`` with the core's portable init drawn from ``seed``
        (``config.init_weights_seed`` wins when set): the same seed gives the same adapter in
        every backend.  ``config``: a :class:`SeqBnConfig` / :class:`LoRAConfig`, an AdapterHub
        config dict, or AdapterHub's identifier ``"seq_bn"`` (``None``: the default), ``"double_seq_bn"``,
        ``"lora"`` (also ``"pfeiffer"``, ``"houlsby"``); ``set_active`` activates it."""
        config = resolve_config("seq_bn" if config is None else config)
        registry = self._adapter_registry()
        if name in registry["configs"]:
            raise ValueError(f"add_adapter: an adapter named {name!r} already exists")
        sites = adapter_sites(self.config, name, config)
        self._build_adapter(name, config, sites)
        registry["configs"][name] = config
        self._write_adapter(sites, init_adapter_weights(sites, config, seed))
        if set_active:
            registry["active"] = name
        self._reactivate()

    def set_active_adapters(self, name: Optional[str]) -> None:
        """Run adapter ``name`` in every forward and ``generate``, or none (``None``: the base
        model, bit for bit)."""
        if name is not None and not isinstance(name, str):
            raise TypeError(f"set_active_adapters takes one adapter name or None, got {name!r}; running several "
                            "adapters at once (AdapterHub's Stack, Parallel, Fuse) is not supported")
        if name is not None:
            self._config_of(name)
        self._adapter_registry()["active"] = name
        self._reactivate()

    def adapter_state(self, name: str) -> dict[str, np.ndarray]:
        """``{canonical name: array}`` of adapter ``name`` (AdapterHub's names and layout)."""
        return self._read_adapter(self._sites_of(name))

    def load_adapter_state(self, name: str, weights: Mapping[str, np.ndarray]) -> None:
        """Set adapter ``name``'s weights from canonical arrays (names and shapes must match)."""
        sites = self._sites_of(name)
        check_adapter_weights(sites, weights, f"adapter {name!r}")
        self._write_adapter(sites, weights)

    def train_adapter(self, name: str) -> None:
        """Activate adapter ``name`` and make its parameters the only trainable ones."""
        self.set_active_adapters(name)
        self._freeze_all_but(name, self._sites_of(name))

    def delete_adapter(self, name: str) -> None:
        """Remove adapter ``name`` and its parameters; deactivates it if it was active."""
        sites = self._sites_of(name)
        registry = self._adapter_registry()
        self._remove_adapter(name, sites)
        del registry["configs"][name]
        if registry["active"] == name:
            registry["active"] = None
        self._reactivate()

    def merge_adapter(self, name: str) -> None:
        """Fold LoRA ``name`` into the base weights (``W += B A * alpha / r``) and remove it;
        outputs equal those with the adapter active, up to float rounding."""
        config = self._config_of(name)
        if not isinstance(config, LoRAConfig):
            raise ValueError(f"merge_adapter: {name!r} is a bottleneck adapter; only LoRA adapters can be merged")
        sites = self._sites_of(name)
        ties = encoder_decoder_spec(self.config).ties
        shared = sorted({f"{s.host}.weight" for s in sites} & (set(ties) | set(ties.values())))
        if shared:
            raise NotImplementedError(f"merge_adapter: {shared[0]!r} is shared with another part (tied weights, e.g. "
                                      "tie_encoder_decoder); merging would change both, so it is refused")
        lora = self._read_adapter(sites)
        base = self._read_base([f"{s.host}.weight" for s in sites])
        for s in sites:
            key = f"{s.host}.weight"
            merged = base[key].astype(np.float64) + lora_delta(s, lora[s.params[0].name], lora[s.params[1].name], config)
            base[key] = merged.astype(base[key].dtype)
        self._write_base(base)
        self.delete_adapter(name)

    def save_adapter(self, save_directory: Union[str, os.PathLike], name: str, format: str = "safetensors") -> None:
        """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (canonical names),
        readable by every backend; ``format="adapterhub"`` writes AdapterHub's
        ``pytorch_adapter.bin`` instead (the ``adapters`` library's ``load_adapter`` reads it;
        needs PyTorch), ``"adapterhub-safetensors"`` its ``adapter.safetensors``."""
        save_adapter_files(save_directory, name, self._config_of(name), self.adapter_state(name), format=format)

    def load_adapter(self, directory: Union[str, os.PathLike], set_active: bool = False) -> str:
        """Load an adapter saved by any encdec backend or by AdapterHub (``pytorch_adapter.bin``);
        an adapter of the same name must be absent or have the same config.  Returns its name."""
        name, config, weights = load_adapter_files(directory)
        existing = self._adapter_registry()["configs"].get(name)
        if existing is not None and existing != config:
            raise ValueError(f"load_adapter: {os.fspath(directory)!r} holds adapter {name!r} with config {config}, "
                             f"but this model's {name!r} has {existing}")
        sites = adapter_sites(self.config, name, config)
        check_adapter_weights(sites, weights, os.fspath(directory))  # before adding: a bad file adds nothing
        if existing is None:
            self.add_adapter(name, config)
        self._write_adapter(sites, weights)
        if set_active:
            self.set_active_adapters(name)
        return name
