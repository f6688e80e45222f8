"""The one place that splits ``encoder_``/``decoder_``-prefixed keyword arguments."""
from __future__ import annotations

from typing import Any

ENCODER_PREFIX = "encoder_"
DECODER_PREFIX = "decoder_"


def _strip(kwargs: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in kwargs.items() if k.startswith(prefix)}


def split_forward_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Forward/call routing: ``decoder_x`` -> decoder ``x``; everything else -> encoder.

    ``encoder_``-prefixed keys are not stripped here: the composite forward names
    ``encoder_outputs`` itself, and any other ``encoder_*`` key is passed to the encoder
    unchanged, where an unknown name raises a clear error.
    """
    decoder = _strip(kwargs, DECODER_PREFIX)
    encoder = {k: v for k, v in kwargs.items() if not k.startswith(DECODER_PREFIX)}
    return encoder, decoder


def split_pretrained_kwargs(
    kwargs: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``from_encoder_decoder_pretrained`` routing: ``(encoder, decoder, composite)``.

    ``encoder_model``/``decoder_model`` arrive as ``model`` in each part's dict.
    """
    encoder = _strip(kwargs, ENCODER_PREFIX)
    decoder = _strip(kwargs, DECODER_PREFIX)
    rest = {k: v for k, v in kwargs.items() if not k.startswith((ENCODER_PREFIX, DECODER_PREFIX))}
    return encoder, decoder, rest


def check_no_unknown(where: str, unknown: dict[str, Any], accepted: list[str] | tuple[str, ...]) -> None:
    """Raise a ``TypeError`` naming keyword arguments that no part accepts."""
    if unknown:
        names = ", ".join(sorted(unknown))
        raise TypeError(
            f"{where} got unexpected keyword argument(s): {names}. Accepted: {', '.join(accepted)}; "
            "prefix decoder arguments with 'decoder_'"
        )


def output_flags(config: Any, output_attentions: Any = None, output_hidden_states: Any = None,
                 return_dict: Any = None, follow: str = "parts") -> tuple[bool, bool, bool, bool, bool]:
    """transformers' rule for the composite call: an argument given wins; otherwise
    ``follow="parts"`` (transformers' PyTorch and TF composites) lets each part follow its own
    config (``config.encoder`` / ``config.decoder``) and ignores the composite config's
    ``output_attentions`` / ``output_hidden_states``; ``follow="composite"`` (transformers'
    Flax composite) reads them from the composite config for both parts.  ``return_dict``
    falls back to ``config.use_return_dict``.  Returns ``(encoder attentions, encoder hidden
    states, decoder attentions, decoder hidden states, return_dict)``."""
    if follow not in ("parts", "composite"):
        raise ValueError(f"follow must be 'parts' or 'composite', got {follow!r}")

    def flag(value: Any, name: str, part: Any) -> bool:
        if value is not None:
            return bool(value)
        # a part model's own config has no encoder/decoder: it answers for itself
        return bool(getattr(config if follow == "composite" or part is None else part, name, False))

    enc, dec = getattr(config, "encoder", None), getattr(config, "decoder", None)
    rd = return_dict if return_dict is not None else getattr(config, "use_return_dict", True)
    return (flag(output_attentions, "output_attentions", enc), flag(output_hidden_states, "output_hidden_states", enc),
            flag(output_attentions, "output_attentions", dec), flag(output_hidden_states, "output_hidden_states", dec),
            bool(rd))
