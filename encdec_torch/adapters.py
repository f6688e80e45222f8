"""Adapters for the PyTorch backend: bottleneck (``SeqBnConfig``) and LoRA (``LoRAConfig``).

Configs, parameter names, init and files come from :mod:`encdec.adapters`; this module only
holds the torch math.  ``init(model)`` gives an :class:`~encdec_torch.EncoderDecoderModel` the
AdapterHub-style methods (``add_adapter``, ``set_active_adapters``, ``train_adapter``,
``delete_adapter``, ``merge_adapter``, ``save_adapter``, ``load_adapter``).  Parameters live
under AdapterHub's state-dict names, e.g. ``...layer.0.output.adapters.NAME.adapter_up.weight``.
With no active adapter every output equals the base model's bit for bit.
"""
from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from encdec.adapters import (
    AdapterConfig,
    AdapterSite,
    LoRAConfig,
    SeqBnConfig,
    adapter_sites,
    check_adapter_weights,
    init_adapter_weights,
    load_adapter_files,
    save_adapter_files,
)
from encdec_torch.models.common import activation, tensor_to_numpy


class Bottleneck(nn.Module):
    """One sequential bottleneck adapter; names follow AdapterHub (``adapter_down.0``, ``adapter_up``)."""

    def __init__(self, config: SeqBnConfig, site: AdapterSite) -> None:
        super().__init__()
        down, hidden = site.params[0].shape
        self.config = config
        self.adapter_down = nn.Sequential(nn.Linear(hidden, down))
        self.adapter_up = nn.Linear(down, hidden)
        self.act = activation(config.non_linearity.lower(), "SeqBnConfig: non_linearity")
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, h: torch.Tensor, residual: torch.Tensor, layer_norm: Optional[nn.Module]) -> torch.Tensor:
        """``layer_norm``: the host's LayerNorm, or ``None`` at a GPT-2 site (plain residual sum)."""
        c = self.config
        norm = layer_norm if layer_norm is not None else (lambda t: t)
        res = h
        if c.original_ln_before:
            h = h + residual
            if c.residual_before_ln == "post_add":
                res = h
            h = norm(h)
        if c.residual_before_ln is False:
            res = h
        out = self.dropout(self.adapter_up(self.act(self.adapter_down(h))) * c.scaling) + res
        return norm(out + residual) if c.original_ln_after else out


class BottleneckSlot(nn.ModuleDict):
    """The adapters of one host block (set as ``host.adapters``); runs the active one."""

    active: Optional[str] = None

    def forward(self, h: torch.Tensor, residual: torch.Tensor, layer_norm: Optional[nn.Module]) -> torch.Tensor:
        if self.active is None or self.active not in self:
            return h + residual if layer_norm is None else layer_norm(h + residual)
        return self[self.active](h, residual, layer_norm)


class BottleneckHolder(nn.Module):
    """A GPT-2 block's ``attention_adapters`` / ``output_adapters``: holds the slot ``adapters``
    (AdapterHub's names) and computes ``residual + out`` through it."""

    def __init__(self) -> None:
        super().__init__()
        self.adapters = BottleneckSlot()

    def forward(self, h: torch.Tensor, residual: torch.Tensor, layer_norm: None) -> torch.Tensor:
        return self.adapters(h, residual, layer_norm)


class LoRA(nn.Module):
    """``lora_A`` [r, in], ``lora_B`` [out, r]; adds ``(dropout(x) A^T B^T) * alpha / r``."""

    def __init__(self, config: LoRAConfig, site: AdapterSite) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(torch.zeros(site.params[0].shape))
        self.lora_B = nn.Parameter(torch.zeros(site.params[1].shape))
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout)

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scaling


class LoRASlot(nn.ModuleDict):
    """The LoRAs of one linear layer (set as ``linear.loras``); a forward hook adds the active one."""

    active: Optional[str] = None

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> Optional[torch.Tensor]:
        if self.active is None or self.active not in self:
            return None
        return output + self[self.active](inputs[0])


class AdapterModelMixin:
    """AdapterHub-style adapter methods for ``EncoderDecoderModel`` (see :func:`init`)."""

    def _adapter_registry(self) -> dict:
        if not hasattr(self, "_adapters"):
            self._adapters = {"configs": {}, "active": None, "hooks": {}}
        return self._adapters

    @property
    def adapter_configs(self) -> dict[str, AdapterConfig]:
        """``{name: config}`` of the adapters in this model."""
        return dict(self._adapter_registry()["configs"])

    @property
    def active_adapter(self) -> Optional[str]:
        return self._adapter_registry()["active"]

    def _config_of(self, name: str) -> AdapterConfig:
        configs = self._adapter_registry()["configs"]
        if name not in configs:
            raise KeyError(f"no adapter named {name!r}; this model has {sorted(configs)}")
        return configs[name]

    def add_adapter(self, name: str, config: AdapterConfig, seed: int = 0) -> None:
        """Add adapter ``name`` (inactive) with the core's portable init drawn from ``seed``."""
        if not isinstance(config, (SeqBnConfig, LoRAConfig)):
            raise TypeError(f"add_adapter: config must be a SeqBnConfig or LoRAConfig, got {type(config).__name__}")
        state = self._adapter_registry()
        if name in state["configs"]:
            raise ValueError(f"add_adapter: an adapter named {name!r} already exists")
        sites = adapter_sites(self.config, name, config)
        param = next(self.parameters())
        for site in sites:
            if site.method == "bottleneck":
                parent, _, attr = site.host.rpartition(".")
                if getattr(self.get_submodule(parent), attr) is None:  # a GPT-2 block's empty slot
                    setattr(self.get_submodule(parent), attr, BottleneckHolder())
                host = self.get_submodule(site.host)
                if getattr(host, "adapters", None) is None:
                    host.adapters = BottleneckSlot()
                host.adapters[name] = Bottleneck(config, site).to(param.device, param.dtype)
            else:
                host = self.get_submodule(site.host)
                if getattr(host, "loras", None) is None:
                    host.loras = LoRASlot()
                    state["hooks"][site.host] = host.register_forward_hook(host.loras.hook)
                host.loras[name] = LoRA(config, site).to(param.device, param.dtype)
        state["configs"][name] = config
        self._load_adapter_weights(name, init_adapter_weights(sites, config, seed))
        self._set_slots_active(state["active"])

    def _slots(self, name: Optional[str] = None):
        """Every adapter slot of the model, or only those holding ``name``."""
        for module in self.modules():
            if isinstance(module, (BottleneckSlot, LoRASlot)) and (name is None or name in module):
                yield module

    def _set_slots_active(self, name: Optional[str]) -> None:
        for slot in self._slots():
            slot.active = name

    def set_active_adapters(self, name: Optional[str]) -> None:
        """Run adapter ``name`` in every forward, or none (``None``: the base model, bit for bit)."""
        if name is not None:
            self._config_of(name)
        self._adapter_registry()["active"] = name
        self._set_slots_active(name)

    def adapter_state(self, name: str) -> dict[str, np.ndarray]:
        """``{canonical name: array}`` of adapter ``name``."""
        config = self._config_of(name)
        params = dict(self.named_parameters())
        return {p.name: tensor_to_numpy(params[p.name]) for s in adapter_sites(self.config, name, config) for p in s.params}

    def _load_adapter_weights(self, name: str, weights: dict[str, np.ndarray]) -> None:
        sites = adapter_sites(self.config, name, self._config_of(name))
        check_adapter_weights(sites, weights, f"adapter {name!r}")
        params = dict(self.named_parameters())
        with torch.no_grad():
            for key, arr in weights.items():
                params[key].copy_(torch.from_numpy(np.ascontiguousarray(arr)).to(params[key].dtype))

    def train_adapter(self, name: str) -> None:
        """Activate adapter ``name`` and make it the only trainable part (``requires_grad``)."""
        self.set_active_adapters(name)
        own = set(self.adapter_state(name))
        for key, p in self.named_parameters():
            p.requires_grad_(key in own)

    def delete_adapter(self, name: str) -> None:
        """Remove adapter ``name`` (and its parameters); deactivates it if it was active."""
        self._config_of(name)
        state = self._adapter_registry()
        for host_name, module in list(self.named_modules()):
            for attr in ("adapters", "loras"):
                slot = getattr(module, attr, None)
                if isinstance(slot, (BottleneckSlot, LoRASlot)) and name in slot:
                    del slot[name]
                    if not len(slot):
                        setattr(module, attr, None)
                        if attr == "loras":
                            state["hooks"].pop(host_name).remove()
                        if isinstance(module, BottleneckHolder):
                            parent, _, holder = host_name.rpartition(".")
                            setattr(self.get_submodule(parent), holder, None)
        del state["configs"][name]
        if state["active"] == name:
            self.set_active_adapters(None)

    def merge_adapter(self, name: str) -> None:
        """Fold LoRA ``name`` into the base weights (``W += B A * alpha / r``) and remove it;
        outputs equal those with the adapter active (up to float rounding)."""
        if not isinstance(self._config_of(name), LoRAConfig):
            raise ValueError(f"merge_adapter: {name!r} is a bottleneck adapter; only LoRA adapters can be merged")
        with torch.no_grad():
            for site in adapter_sites(self.config, name, self._config_of(name)):
                module = self.get_submodule(site.host)
                delta = module.loras[name].delta()
                module.weight += delta.t() if site.host_transposed else delta
        self.delete_adapter(name)

    def save_adapter(self, save_directory: Union[str, os.PathLike], name: str) -> None:
        """Write ``adapter_config.json`` + ``adapter_model.safetensors`` (canonical names)."""
        save_adapter_files(save_directory, name, self._config_of(name), self.adapter_state(name))

    def load_adapter(self, directory: Union[str, os.PathLike], set_active: bool = False) -> str:
        """Load an adapter saved by any encdec backend or by AdapterHub (``pytorch_adapter.bin``);
        an adapter of the same name must be absent or have the same config.  Returns its name."""
        name, config, weights = load_adapter_files(directory)
        existing = self._adapter_registry()["configs"].get(name)
        if existing is None:
            self.add_adapter(name, config)
        elif existing != config:
            raise ValueError(f"load_adapter: {os.fspath(directory)!r} holds adapter {name!r} with config {config}, "
                             f"but this model's {name!r} has {existing}")
        self._load_adapter_weights(name, weights)
        if set_active:
            self.set_active_adapters(name)
        return name


_ADAPTER_CLASSES: dict[type, type] = {}


def init(model: nn.Module) -> nn.Module:
    """Give ``model`` (an encdec_torch ``EncoderDecoderModel``) the adapter methods, in place,
    as AdapterHub's ``adapters.init(model)`` does; returns the model."""
    cls = type(model)
    if not isinstance(model, AdapterModelMixin):
        if cls not in _ADAPTER_CLASSES:
            _ADAPTER_CLASSES[cls] = type(f"{cls.__name__}WithAdapters", (AdapterModelMixin, cls), {})
        model.__class__ = _ADAPTER_CLASSES[cls]
    return model
