"""Adapters for the PyTorch backend: bottleneck (``SeqBnConfig``) and LoRA (``LoRAConfig``).

Configs, parameter names, init, files and the public methods come from :mod:`encdec.adapters`
(:class:`~encdec.adapters.AdapterMethods`); this module holds the torch modules and the hooks.  ``init(model)`` gives an :class:`~encdec_torch.EncoderDecoderModel` the
AdapterHub-style methods (``add_adapter``, ``set_active_adapters``, ``train_adapter``,
``delete_adapter``, ``merge_adapter``, ``save_adapter``, ``load_adapter``).  Parameters live
under AdapterHub's state-dict names, e.g. ``...layer.0.output.adapters.NAME.adapter_up.weight``.
With no active adapter every output equals the base model's bit for bit.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import torch
from torch import nn

from encdec.adapters import (AdapterConfig, AdapterMethods, AdapterSite, LoRAConfig, SeqBnConfig, bottleneck_compose,
                            expand_lora_b)
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
        return bottleneck_compose(self.config, h, residual, layer_norm, lambda x: self.dropout(
            self.adapter_up(self.act(self.adapter_down(x))) * self.config.scaling))


class BottleneckSlot(nn.ModuleDict):
    """The adapters of one host block (set as ``host.adapters``); runs the active one."""

    active: Optional[str] = None

    def forward(self, h: torch.Tensor, residual: torch.Tensor, layer_norm: Optional[nn.Module]) -> torch.Tensor:
        if self.active is None or self.active not in self:
            return h + residual if layer_norm is None else layer_norm(h + residual)
        return self[self.active](h, residual, layer_norm)


class BottleneckHolder(nn.Module):
    """A GPT-2 block's or BART decoder layer's ``attention_adapters`` / ``output_adapters``: holds
    the slot ``adapters`` (AdapterHub's names) and computes ``residual + out`` (then BART's
    LayerNorm) through it."""

    def __init__(self) -> None:
        super().__init__()
        self.adapters = BottleneckSlot()

    def forward(self, h: torch.Tensor, residual: torch.Tensor, layer_norm: Optional[nn.Module]) -> torch.Tensor:
        return self.adapters(h, residual, layer_norm)


class LoRA(nn.Module):
    """``lora_A`` [r, in], ``lora_B`` [out, r]; adds ``(dropout(x) A^T B^T) * alpha / r`` (B expanded
    by the core for a fused q/k/v host)."""

    def __init__(self, config: LoRAConfig, site: AdapterSite) -> None:
        super().__init__()
        self.site = site
        self.lora_A = nn.Parameter(torch.zeros(site.params[0].shape))
        self.lora_B = nn.Parameter(torch.zeros(site.params[1].shape))
        self.scaling = config.scaling
        self.dropout = nn.Dropout(config.dropout)
        self._constants: dict = {}  # the fused-q/k/v expansion's constants, per (id, device, dtype)

    def _constant(self, c: np.ndarray) -> torch.Tensor:
        key = (id(c), self.lora_B.device, self.lora_B.dtype)  # the core caches c: its id is stable
        if key not in self._constants:
            self._constants[key] = torch.from_numpy(c).to(self.lora_B.device, self.lora_B.dtype)
        return self._constants[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = expand_lora_b(self.site, self.lora_B, self._constant, torch.reshape)
        return (self.dropout(x) @ self.lora_A.t() @ b.t()) * self.scaling


class LoRASlot(nn.ModuleDict):
    """The LoRAs of one linear layer (set as ``linear.loras``); a forward hook adds the active one."""

    active: Optional[str] = None

    def hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> Optional[torch.Tensor]:
        if self.active is None or self.active not in self:
            return None
        return output + self[self.active](inputs[0])


class AdapterModelMixin(AdapterMethods):
    """The core's adapter API (:class:`encdec.adapters.AdapterMethods`) on ``EncoderDecoderModel``:
    adapter modules live under AdapterHub's state-dict names, so ``named_parameters`` shows them."""

    def _lora_hooks(self) -> dict:
        return vars(self).setdefault("_encdec_lora_hooks", {})

    def _build_adapter(self, name: str, config: AdapterConfig, sites: list[AdapterSite]) -> None:
        param = next(self.parameters())
        for site in sites:
            if site.method == "bottleneck":
                parent, _, attr = site.host.rpartition(".")
                if getattr(self.get_submodule(parent), attr) is None:  # a GPT-2 / BART layer's empty slot
                    setattr(self.get_submodule(parent), attr, BottleneckHolder())
                host = self.get_submodule(site.host)
                if getattr(host, "adapters", None) is None:
                    host.adapters = BottleneckSlot()
                host.adapters[name] = Bottleneck(config, site).to(param.device, param.dtype).train(self.training)
            else:
                host = self.get_submodule(site.host)
                if getattr(host, "loras", None) is None:
                    host.loras = LoRASlot()
                    self._lora_hooks()[site.host] = host.register_forward_hook(host.loras.hook)
                host.loras[name] = LoRA(config, site).to(param.device, param.dtype).train(self.training)

    def _remove_adapter(self, name: str, sites: list[AdapterSite]) -> None:
        for site in sites:
            host = self.get_submodule(site.host)
            attr = "adapters" if site.method == "bottleneck" else "loras"
            slot = getattr(host, attr)
            del slot[name]
            if len(slot):
                continue
            setattr(host, attr, None)
            if attr == "loras":
                self._lora_hooks().pop(site.host).remove()
            if isinstance(host, BottleneckHolder):
                parent, _, holder = site.host.rpartition(".")
                setattr(self.get_submodule(parent), holder, None)

    def _read_adapter(self, sites: list[AdapterSite]) -> dict[str, np.ndarray]:
        return self._read_base([p.name for s in sites for p in s.params])  # canonical names are torch's

    def _write_adapter(self, sites: list[AdapterSite], weights: Mapping[str, np.ndarray]) -> None:
        self._write_base({p.name: weights[p.name] for s in sites for p in s.params})

    def _activate_adapter(self, name: Optional[str], config: Optional[AdapterConfig], sites: list[AdapterSite]) -> None:
        for module in self.modules():
            if isinstance(module, (BottleneckSlot, LoRASlot)):
                module.active = name

    def _freeze_all_but(self, name: str, sites: list[AdapterSite]) -> None:
        own = {p.name for s in sites for p in s.params}
        for key, p in self.named_parameters():
            p.requires_grad_(key in own)

    def _read_base(self, names: list[str]) -> dict[str, np.ndarray]:
        params = dict(self.named_parameters())
        return {n: tensor_to_numpy(params[n]) for n in names}

    def _write_base(self, weights: Mapping[str, np.ndarray]) -> None:
        params = dict(self.named_parameters())
        with torch.no_grad():
            for n, arr in weights.items():
                params[n].copy_(torch.from_numpy(np.array(arr)).to(params[n].dtype))  # a copy: arr may be read-only


def init(model: nn.Module) -> nn.Module:
    """AdapterHub's entry point ``adapters.init(model)``, kept for code written against it:
    ``EncoderDecoderModel`` has the adapter methods built in, so this checks and returns the model."""
    if not isinstance(model, AdapterModelMixin):
        raise TypeError(f"adapters.init expects an encdec_torch EncoderDecoderModel, got {type(model).__name__}")
    return model
