"""encdec: encoder-decoder models with one API in PyTorch, TensorFlow (Keras 3) and JAX/Flax.

This core package imports numpy, safetensors and huggingface_hub only.
"""
from __future__ import annotations

from encdec.public_names import *  # noqa: F401,F403
from encdec.public_names import __all__ as _CORE_NAMES
from encdec.labels import shift_tokens_right

__version__ = "0.1.0"

__all__ = [*_CORE_NAMES, "shift_tokens_right", "__version__"]
