"""Adapters for the TensorFlow backend: bottleneck (``SeqBnConfig``) and LoRA (``LoRAConfig``).

Configs, parameter names, init, merging, files and the public methods come from
:mod:`encdec.adapters` (:class:`~encdec.adapters.AdapterMethods`); this module holds the
Keras side.  Each adapter is one ``keras.layers.Layer`` (:class:`AdapterLayer`) tracked by the
model, so ``model.trainable_variables`` and ``fit`` see its variables and deleting it leaves no
variable behind.  It computes nothing itself: per site it keeps a small module
(:class:`Bottleneck` or :class:`LoRA`) that the model plugs into the host's ``adapter`` slot
(a :class:`~encdec_tf.models.common.Residual` or :class:`~encdec_tf.models.common.Dense`, found
by canonical path in the parts' ``ParamStore.hosts``) while the adapter is active.  With no
active adapter every slot is empty and the model computes its base expressions bit for bit.

Compiled programs bake the active adapter in, so every adapter change drops the model's XLA
``generate`` programs and Keras' train / test / predict functions.  A ``tf.function`` the
user wrapped around the model keeps what it traced: wrap it again after a change.  Training
another adapter after ``fit`` needs a new optimizer (``compile`` again), as Keras requires
for a new set of variables.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf

from encdec.adapters import (
    AdapterConfig,
    AdapterMethods,
    AdapterSite,
    LoRAConfig,
    SeqBnConfig,
    adapter_backend_names,
    bottleneck_compose,
    expand_lora_b,
)
from encdec_tf.models.common import TF_LAYOUT, LayerNorm, activation, dropout, project


class Bottleneck:
    """A sequential bottleneck adapter at one host: ``dropout(up(act(down(x))) * scaling)``
    placed around the host's residual and LayerNorm by :func:`encdec.adapters.bottleneck_compose`."""

    def __init__(self, config: SeqBnConfig, down: tuple[Any, Any], up: tuple[Any, Any]) -> None:
        self.config = config
        self.down, self.up = down, up  # (kernel [in, out], bias) each
        self.act = activation(config.non_linearity.lower())

    def __call__(self, h: tf.Tensor, residual: tf.Tensor, norm: Optional[LayerNorm], training: bool) -> tf.Tensor:
        def adapter(x: tf.Tensor) -> tf.Tensor:
            y = project(self.act(project(x, self.down[0], False, self.down[1])), self.up[0], False, self.up[1])
            return dropout(y * self.config.scaling, self.config.dropout, training)

        return bottleneck_compose(self.config, h, residual, norm, adapter)


class LoRA:
    """``(dropout(x) A^T B^T) * alpha / r`` added to a host Dense's output (``lora_A`` [r, in],
    ``lora_B`` [out, r]; B expanded by the core for a fused q/k/v host)."""

    def __init__(self, config: LoRAConfig, site: AdapterSite, lora_a: Any, lora_b: Any) -> None:
        self.config, self.site = config, site
        self.lora_a, self.lora_b = lora_a, lora_b

    def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        b = expand_lora_b(self.site, tf.convert_to_tensor(self.lora_b), tf.constant, tf.reshape)
        x = dropout(x, self.config.dropout, training)
        return project(project(x, self.lora_a, True), b, True) * self.config.scaling


class AdapterLayer(keras.layers.Layer):
    """The variables of one adapter (float32, under their Keras names from
    :func:`encdec.adapters.adapter_backend_names`) and its per-host modules."""

    def __init__(self, name: str, config: AdapterConfig, sites: list[AdapterSite]) -> None:
        super().__init__(name=f"adapter_{name}")
        names = adapter_backend_names(sites, TF_LAYOUT)
        #: canonical name -> (variable, stored transposed relative to the canonical layout)
        self.params: dict[str, tuple[keras.Variable, bool]] = {}
        for p in (p for s in sites for p in s.params):
            key, transposed = names[p.name]
            shape = p.shape[::-1] if transposed else p.shape
            self.params[p.name] = (self.add_weight(shape=shape, initializer="zeros", dtype="float32", name=key), transposed)
        #: host canonical path -> module plugged into the host's ``adapter`` slot while active
        self.modules: dict[str, Any] = {}
        for s in sites:
            v = [self.params[p.name][0] for p in s.params]
            if isinstance(config, SeqBnConfig):
                self.modules[s.host] = Bottleneck(config, (v[0], v[1]), (v[2], v[3]))
            else:
                self.modules[s.host] = LoRA(config, s, v[0], v[1])
        self.built = True


class TFAdapterMixin(AdapterMethods):
    """The core's adapter API (:class:`encdec.adapters.AdapterMethods`) on ``TFEncoderDecoderModel``."""

    def _adapter_layers(self) -> dict[str, AdapterLayer]:
        if "_encdec_adapter_layers" not in vars(self):
            self._encdec_adapter_layers = {}  # assigned through Keras: a tracked dict of layers
        return self._encdec_adapter_layers

    def _adapter_hosts(self) -> dict[str, Any]:
        """``{canonical path: module with an adapter slot}`` over both parts."""
        return {f"{role}.{path}": module for role in ("encoder", "decoder")
                for path, module in getattr(self, role).store.hosts.items()}

    def _adapter_params(self) -> dict[str, tuple[keras.Variable, bool]]:
        return {k: v for layer in self._adapter_layers().values() for k, v in layer.params.items()}

    def adapter_variables(self, name: str) -> list[keras.Variable]:
        """The Keras variables of adapter ``name`` (what ``train_adapter(name)`` leaves trainable)."""
        self._config_of(name)
        return list(self._adapter_layers()[name].variables)

    def _invalidate_compiled(self) -> None:
        """Drop compiled programs that traced the previous adapter state."""
        from encdec_tf.generation import forget_compiled

        forget_compiled(self)
        self.train_function = self.test_function = self.predict_function = None

    # --- hooks of AdapterMethods ------------------------------------------------------------
    def _build_adapter(self, name: str, config: AdapterConfig, sites: list[AdapterSite]) -> None:
        hosts = self._adapter_hosts()
        missing = [s.host for s in sites if s.host not in hosts]
        if missing:
            raise NotImplementedError(f"add_adapter: {type(self).__name__} has no adapter host at {missing[:3]}")
        self._adapter_layers()[name] = AdapterLayer(name, config, sites)

    def _remove_adapter(self, name: str, sites: list[AdapterSite]) -> None:
        self._adapter_layers().pop(name)  # the tracked dict untracks the layer and its variables

    def _read_adapter(self, sites: list[AdapterSite]) -> dict[str, np.ndarray]:
        params = self._adapter_params()
        out = {}
        for p in (p for s in sites for p in s.params):
            var, transposed = params[p.name]
            out[p.name] = var.numpy().T if transposed else var.numpy()
        return out

    def _write_adapter(self, sites: list[AdapterSite], weights: Mapping[str, np.ndarray]) -> None:
        params = self._adapter_params()
        for p in (p for s in sites for p in s.params):
            var, transposed = params[p.name]
            value = np.asarray(weights[p.name], np.float32)
            var.assign(value.T if transposed else value)

    def _activate_adapter(self, name: Optional[str], config: Optional[AdapterConfig], sites: list[AdapterSite]) -> None:
        hosts = self._adapter_hosts()
        for host in hosts.values():
            host.adapter = None
        if name is not None:
            for path, module in self._adapter_layers()[name].modules.items():
                hosts[path].adapter = module
        self._invalidate_compiled()

    def _freeze_all_but(self, name: str, sites: list[AdapterSite]) -> None:
        self.encoder.trainable = False
        self.decoder.trainable = False
        for var in self.store.variables.values():  # enc_to_dec_proj
            var.trainable = False
        for key, layer in self._adapter_layers().items():
            layer.trainable = key == name
        self._invalidate_compiled()

    def _read_base(self, names: list[str]) -> dict[str, np.ndarray]:
        state = self.canonical_state()
        return {n: state[n] for n in names}

    def _write_base(self, weights: Mapping[str, np.ndarray]) -> None:
        only = {TF_LAYOUT.backend_name(n, self.spec[n].kind) for n in weights}
        self._assign_canonical({**self.canonical_state(), **weights}, only=only)
