"""Activation names (transformers' ``ACT2FN`` keys) and the formula each one computes.

The one table of activations: every backend maps these names to its functions once
(``encdec_torch.models.common``, ``encdec_tf.models.common``, ``encdec_flax.models.layers``)
and looks a config's ``hidden_act`` / ``activation_function`` up through :func:`check_activation`,
so an unknown name gives the same error everywhere.  ``Φ`` is the standard normal CDF.
"""
from __future__ import annotations

#: name -> formula, as transformers 4.57 computes it.
ACTIVATIONS: dict[str, str] = {
    "gelu": "x·Φ(x) = 0.5·x·(1 + erf(x/√2))",
    "gelu_python": "0.5·x·(1 + erf(x/√2)) (same as gelu)",
    "gelu_10": "clip(gelu(x), -10, 10)",
    "gelu_new": "0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))",
    "gelu_pytorch_tanh": "0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (same as gelu_new)",
    "gelu_python_tanh": "0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (same as gelu_new)",
    "gelu_accurate": "0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (same as gelu_new)",
    "gelu_fast": "0.5·x·(1 + tanh(0.7978845608·x·(1 + 0.044715·x²)))",
    "quick_gelu": "x·sigmoid(1.702·x)",
    "laplace": "0.5·(1 + erf((x - 0.707107) / (0.282095·√2)))",
    "leaky_relu": "max(x, 0.01·x)",
    "linear": "x",
    "mish": "x·tanh(softplus(x))",
    "relu": "max(x, 0)",
    "relu2": "max(x, 0)²",
    "relu6": "min(max(x, 0), 6)",
    "sigmoid": "1 / (1 + exp(-x))",
    "silu": "x·sigmoid(x)",
    "swish": "x·sigmoid(x) (same as silu)",
    "tanh": "tanh(x)",
}

#: ACT2FN names encdec refuses, with the reason.
REFUSED: dict[str, str] = {
    "prelu": "it has a learned slope parameter that no parameter spec holds",
    "xielu": "it has learned parameters (alpha_p, alpha_n) that no parameter spec holds",
}


def check_activation(name: object, where: str) -> str:
    """``name`` if it is in :data:`ACTIVATIONS`; otherwise ``NotImplementedError`` naming
    ``where`` (the config attribute) and the supported names."""
    if isinstance(name, str) and name in ACTIVATIONS:
        return name
    reason = f" ({REFUSED[name]})" if isinstance(name, str) and name in REFUSED else ""
    raise NotImplementedError(
        f"{where}={name!r} is not implemented{reason}; supported: {', '.join(sorted(ACTIVATIONS))}"
    )


def check_backend_table(table: dict, backend: str) -> None:
    """A backend's name -> function table must cover exactly :data:`ACTIVATIONS`."""
    if set(table) != set(ACTIVATIONS):
        raise AssertionError(f"{backend} activation table differs from encdec.activations: "
                             f"missing {sorted(set(ACTIVATIONS) - set(table))}, extra {sorted(set(table) - set(ACTIVATIONS))}")
