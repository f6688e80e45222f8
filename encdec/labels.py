"""Label handling shared by all backends: shifting labels into decoder inputs."""
from __future__ import annotations

from typing import Any

import numpy as np

#: Label value ignored by the loss (PyTorch's ``CrossEntropyLoss`` default).
IGNORE_INDEX = -100


def check_shift_ids(pad_token_id: int | None, decoder_start_token_id: int | None) -> None:
    """Both ids are needed to build decoder inputs from labels."""
    if decoder_start_token_id is None:
        raise ValueError(
            "cannot shift labels into decoder_input_ids: set `decoder_start_token_id` on the "
            "model config (e.g. model.config.decoder_start_token_id = tokenizer.cls_token_id)"
        )
    if pad_token_id is None:
        raise ValueError(
            "cannot shift labels into decoder_input_ids: set `pad_token_id` on the model config "
            "(e.g. model.config.pad_token_id = tokenizer.pad_token_id)"
        )


def shift_tokens_right(labels: Any, pad_token_id: int | None, decoder_start_token_id: int | None, xp: Any = np) -> Any:
    """Shift ``labels`` [batch, len] right by one, prepend the start token, and replace
    ``-100`` with the pad id.

    ``xp`` is a NumPy-like namespace (``numpy``, ``torch``, ``jax.numpy``,
    ``tf.experimental.numpy``) so every backend shares these semantics.
    """
    check_shift_ids(pad_token_id, decoder_start_token_id)
    start = xp.full_like(labels[:, :1], decoder_start_token_id)
    shifted = xp.concatenate([start, labels[:, :-1]], axis=-1)
    return xp.where(shifted == IGNORE_INDEX, xp.full_like(shifted, pad_token_id), shifted)


def decoder_inputs_from_labels(labels: Any, pad_token_id: int | None, decoder_start_token_id: int | None,
                               decoder_attention_mask: Any = None, xp: Any = np) -> tuple[Any, Any]:
    """``(decoder_input_ids, decoder_attention_mask)`` built from ``labels`` when the
    caller passed no decoder inputs: the shifted labels, and unless given a mask that
    ignores pad positions (transformers 4.57's ``EncoderDecoderModel`` rule). Both have
    the labels' integer dtype."""
    ids = shift_tokens_right(labels, pad_token_id, decoder_start_token_id, xp=xp)
    if decoder_attention_mask is None:
        decoder_attention_mask = xp.where(ids != pad_token_id, xp.ones_like(ids), xp.zeros_like(ids))
    return ids, decoder_attention_mask
