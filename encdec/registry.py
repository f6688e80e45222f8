"""Which class implements each (backend, model_type, role); backends register lazily.

The core never imports a backend at ``import encdec`` time.  ``part_class`` imports the
backend's models package on first use; that package calls :func:`register`.
"""
from __future__ import annotations

import importlib
from typing import Any

#: backend name -> module whose import registers its part classes.
BACKEND_MODULES = {"torch": "encdec_torch.models", "tf": "encdec_tf.models", "flax": "encdec_flax.models"}
#: backend name -> the framework package it needs.
BACKEND_FRAMEWORKS = {"torch": "torch", "tf": "tensorflow", "flax": "flax"}

ROLES = ("encoder", "decoder")
_CLASSES: dict[tuple[str, str, str], Any] = {}

#: model_type -> the model_type whose math, spec, part classes and checkpoint naming it
#: reuses (its own config class and ``model_type`` string are kept, as in transformers).
ALIASES: dict[str, str] = {"xlm-roberta": "roberta", "camembert": "roberta"}


def family(model_type: Any) -> Any:
    """The model_type whose implementation ``model_type`` uses (itself unless an alias)."""
    return ALIASES.get(model_type, model_type)


def register(backend: str, model_type: str, *, encoder: Any = None, decoder: Any = None) -> None:
    """Record the classes a backend uses for ``model_type`` as encoder and/or decoder."""
    if encoder is not None:
        _CLASSES[(backend, model_type, "encoder")] = encoder
    if decoder is not None:
        _CLASSES[(backend, model_type, "decoder")] = decoder


def part_class(backend: str, model_type: str, role: str) -> Any:
    """The class for ``model_type`` in ``role`` on ``backend``, with a clear error listing
    what that backend supports."""
    if backend not in BACKEND_MODULES:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKEND_MODULES)}")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    importlib.import_module(BACKEND_MODULES[backend])
    try:
        return _CLASSES[(backend, family(model_type), role)]
    except KeyError:
        supported = sorted({m for (b, m, r) in _CLASSES if b == backend and r == role}
                           | {a for a, f in ALIASES.items() if (backend, f, role) in _CLASSES})
        raise ValueError(
            f"model_type {model_type!r} is not supported as {role} by the {backend} backend; "
            f"supported: {', '.join(supported)}"
        ) from None


def available_backends() -> list[str]:
    """Backends whose framework is importable (checked without importing it)."""
    import importlib.util

    return [b for b, fw in BACKEND_FRAMEWORKS.items() if importlib.util.find_spec(fw) is not None]
