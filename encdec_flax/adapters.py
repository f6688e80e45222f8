"""Adapters for the Flax backend: bottleneck (``SeqBnConfig``) and LoRA (``LoRAConfig``).

Configs, parameter names, init, files and the public methods come from :mod:`encdec.adapters`
(:class:`~encdec.adapters.AdapterMethods`); this module supplies the hooks and the math.

Adapter parameters live in ``model.params`` at their canonical host paths (the canonical name
split on ``.``; bottleneck matrices as ``kernel`` [in, out], e.g.
``params["encoder"]["encoder"]["layer"]["0"]["output"]["adapters"][NAME]["adapter_down"]["0"]["kernel"]``;
LoRA factors as ``...["query"]["loras"][NAME]["lora_A"]`` [r, in]), so they are ordinary leaves
for ``jax.grad`` and optax.  No host module declares them: the active adapter runs through a
:func:`flax.linen.intercept_methods` interceptor that the model's ``encode`` / ``decode`` /
``init_cache`` install (:func:`adapter_scope`) and that reads them from the host's
``variables``.  With no active adapter nothing is intercepted: outputs equal the base model's
bit for bit.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
from flax.traverse_util import flatten_dict, unflatten_dict

from encdec.adapters import (
    AdapterConfig,
    AdapterMethods,
    AdapterSite,
    adapter_backend_names,
    bottleneck_compose,
    expand_lora_b,
)
from encdec_flax.models.layers import FLAX_LAYOUT, Residual, activation

TRAINABLE, FROZEN = "trainable", "frozen"


@dataclass(frozen=True, eq=False)
class ActiveAdapter:
    """The adapter a :class:`~encdec_flax.modeling_encoder_decoder.FlaxEncoderDecoderModule`
    runs (a static module field): its name, config and sites by host module path."""

    name: str
    config: AdapterConfig
    sites: Mapping[str, AdapterSite]

    @classmethod
    def of(cls, name: str, config: AdapterConfig, sites: list[AdapterSite]) -> "ActiveAdapter":
        return cls(name, config, {s.host: s for s in sites})


def _dropout(module: nn.Module, x: jnp.ndarray, rate: float, deterministic: bool) -> jnp.ndarray:
    if deterministic or rate == 0.0:
        return x
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _interceptor(active: ActiveAdapter, deterministic: bool) -> Callable:
    config, name = active.config, active.name

    def weights(module: nn.Module, group: str) -> Any:
        params = module.variables.get("params", {})
        if name not in params.get(group, {}):
            raise ValueError(f"adapter {name!r} is active but the params given lack its weights at "
                             f"{'.'.join((*module.path, group, name))}; pass params that hold the model's adapter "
                             "leaves (model.params, or a pytree derived from it)")
        return params[group][name]

    def lora(module: nn.Module, site: AdapterSite, out: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
        """``out + (dropout(x) A^T B^T) * alpha / r`` at a linear (or GPT-2 Conv1D) host; B
        expanded by the core at a fused q/k/v host (GPT-2 ``c_attn``)."""
        w = weights(module, "loras")
        a = w["lora_A"].astype(out.dtype)
        b = expand_lora_b(site, w["lora_B"].astype(out.dtype), lambda c: jnp.asarray(c, out.dtype), jnp.reshape)
        x = _dropout(module, x, config.dropout, deterministic).astype(out.dtype)
        return out + (x @ a.T @ b.T) * config.scaling

    def bottleneck(module: nn.Module, args: tuple) -> jnp.ndarray:
        """A BERT ``BertSelfOutput`` host ``(hidden, residual, deterministic)`` (its dense,
        dropout and LayerNorm) or a :class:`Residual` host ``(h, residual[, norm])``."""
        if isinstance(module, Residual):  # GPT-2 (no norm) or BART (its post-LN LayerNorm)
            h, residual = args[:2]
            layer_norm = args[2] if len(args) > 2 else None
        else:
            hidden, residual = args[0], args[1]
            h = module.dropout(module.dense(hidden), deterministic=deterministic)
            layer_norm = module.LayerNorm
        w = weights(module, "adapters")
        down, up = w["adapter_down"]["0"], w["adapter_up"]
        act = activation(config.non_linearity.lower(), "SeqBnConfig.non_linearity")

        def adapter(x: jnp.ndarray) -> jnp.ndarray:
            x = act(x @ down["kernel"].astype(x.dtype) + down["bias"].astype(x.dtype))
            x = (x @ up["kernel"].astype(x.dtype) + up["bias"].astype(x.dtype)) * config.scaling
            return _dropout(module, x, config.dropout, deterministic)

        return bottleneck_compose(config, h, residual, layer_norm, adapter)

    def intercept(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
        site = active.sites.get(".".join(context.module.path)) if context.method_name == "__call__" else None
        if site is None:
            return next_fun(*args, **kwargs)
        if site.method == "lora":
            return lora(context.module, site, next_fun(*args, **kwargs), args[0])
        return bottleneck(context.module, args)

    return intercept


def adapter_scope(active: Optional[ActiveAdapter], deterministic: bool) -> ContextManager:
    """Run ``active`` (an adapter, or ``None``: nothing) in the module calls inside this context."""
    if active is None:
        return contextlib.nullcontext()
    return nn.intercept_methods(_interceptor(active, deterministic))


Path = tuple[str, ...]


class FlaxAdapterMixin(AdapterMethods):
    """The core's adapter API on ``FlaxEncoderDecoderModel``: adapter leaves live in ``params``;
    activating rebuilds ``self.module`` with the :class:`ActiveAdapter` (and drops compiled
    ``generate`` programs).  ``train_adapter(name)`` makes :meth:`adapter_param_labels` label
    that adapter's leaves ``"trainable"`` and the rest ``"frozen"`` for ``optax.multi_transform``."""

    params: dict
    module: nn.Module
    spec: Any

    @staticmethod
    def _adapter_paths(sites: list[AdapterSite]) -> dict[str, tuple[Path, bool]]:
        """``{canonical name: (params path, transposed)}``."""
        return {n: (tuple(b.split(".")), t) for n, (b, t) in adapter_backend_names(sites, FLAX_LAYOUT).items()}

    def _adapter_leaves(self) -> dict[Path, Any]:
        """Every adapter's leaves of ``params``, by path (kept when the base weights are reloaded)."""
        flat = flatten_dict(self.params)
        paths = [path for name in self.adapter_configs for path, _ in self._adapter_paths(self._sites_of(name)).values()]
        return {path: flat[path] for path in paths}

    def _build_adapter(self, name: str, config: AdapterConfig, sites: list[AdapterSite]) -> None:
        flat = flatten_dict(self.params)
        shapes = {p.name: p.shape for s in sites for p in s.params}
        for canonical, (path, transposed) in self._adapter_paths(sites).items():
            shape = shapes[canonical][::-1] if transposed else shapes[canonical]
            flat[path] = jnp.zeros(shape, jnp.float32)
        self.params = unflatten_dict(flat)

    def _remove_adapter(self, name: str, sites: list[AdapterSite]) -> None:
        flat = flatten_dict(self.params)
        for path, _ in self._adapter_paths(sites).values():
            del flat[path]
        self.params = unflatten_dict(flat)
        if self.__dict__.get("_encdec_trained") == name:
            del self.__dict__["_encdec_trained"]

    def _read_paths(self, paths: Mapping[str, tuple[Path, bool]]) -> dict[str, np.ndarray]:
        """``{canonical name: array}`` (canonical layout) of the leaves at ``{name: (path, transposed)}``."""
        flat = flatten_dict(self.params)
        out = {}
        for canonical, (path, transposed) in paths.items():
            arr = np.array(flat[path])  # a writable copy
            out[canonical] = arr.T if transposed else arr
        return out

    def _write_paths(self, paths: Mapping[str, tuple[Path, bool]], weights: Mapping[str, np.ndarray]) -> None:
        """Set the leaves at ``paths`` from canonical ``weights`` (each leaf keeps its dtype)."""
        flat = flatten_dict(self.params)
        for canonical, (path, transposed) in paths.items():
            arr = np.asarray(weights[canonical])
            flat[path] = jnp.asarray(arr.T if transposed else arr, dtype=flat[path].dtype)
        self.params = unflatten_dict(flat)

    def _read_adapter(self, sites: list[AdapterSite]) -> dict[str, np.ndarray]:
        return self._read_paths(self._adapter_paths(sites))

    def _write_adapter(self, sites: list[AdapterSite], weights: Mapping[str, np.ndarray]) -> None:
        self._write_paths(self._adapter_paths(sites), weights)

    def _activate_adapter(self, name: Optional[str], config: Optional[AdapterConfig], sites: list[AdapterSite]) -> None:
        active = None if name is None else ActiveAdapter.of(name, config, sites)
        self.module = self.module.clone(adapter=active)
        self.__dict__.pop("_generate_programs", None)  # compiled with the previous module

    def _freeze_all_but(self, name: str, sites: list[AdapterSite]) -> None:
        self.__dict__["_encdec_trained"] = name

    def _base_paths(self, names: Iterable[str]) -> dict[str, tuple[Path, bool]]:
        """``{canonical name: (params path, transposed)}`` of base weights under FLAX_LAYOUT."""
        kinds = {n: self.spec[n].kind for n in names}
        return {n: (tuple(FLAX_LAYOUT.backend_name(n, k).split(".")), k in FLAX_LAYOUT.transpose) for n, k in kinds.items()}

    def _read_base(self, names: list[str]) -> dict[str, np.ndarray]:
        return self._read_paths(self._base_paths(names))

    def _write_base(self, weights: Mapping[str, np.ndarray]) -> None:
        self._write_paths(self._base_paths(weights), weights)

    def adapter_param_labels(self, params: Any = None) -> dict:
        """A pytree shaped like ``params`` (default ``self.params``) labelling the leaves of the
        adapter set by :meth:`train_adapter` ``"trainable"`` and every other leaf ``"frozen"``::

            tx = optax.multi_transform({"trainable": optax.adam(1e-3), "frozen": optax.set_to_zero()},
                                       model.adapter_param_labels)
        """
        name = self.__dict__.get("_encdec_trained")
        if name is None:
            raise ValueError("adapter_param_labels: no adapter is being trained; call train_adapter(name) first")
        own = {path for path, _ in self._adapter_paths(self._sites_of(name)).values()}
        flat = flatten_dict(self.params if params is None else params)
        missing = sorted(own - set(flat))
        if missing:
            raise ValueError(f"adapter_param_labels: params lack adapter {name!r}'s leaves, e.g. {'.'.join(missing[0])!r}")
        return unflatten_dict({path: TRAINABLE if path in own else FROZEN for path in flat})
