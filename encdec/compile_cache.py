"""Bounded compilation for the XLA ``generate`` of the TensorFlow and Flax backends.

A compiled decode program is specialised to its input shape and its
:class:`~encdec.generation.DecodePlan` (``max_length`` included), and each one holds tens
of MiB.  Two rules keep a long-running process from compiling one program per request:

* **source-length buckets**: ``input_ids`` and ``attention_mask`` are padded on the right
  (ids with the pad id, mask with 0) up to the next bucket -- a power of two, at least
  :data:`MIN_BUCKET`, never past the encoder's position table.  Padded positions are masked
  out of every attention, so the generated ids are those of the unpadded input.
* **a bounded LRU of programs**: at most :data:`MAX_PROGRAMS` compiled programs per model
  (one per plan, batch size and bucket); using another evicts the least recently used.

The batch size is not bucketed (padding rows would change when decoding stops).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable, Optional

#: smallest source-length bucket.
MIN_BUCKET = 16
#: compiled generate programs kept per model (least recently used evicted first).
MAX_PROGRAMS = 8


def bucket_length(length: int, limit: Optional[int] = None) -> int:
    """The padded source length for ``length`` tokens: the next power of two (at least
    :data:`MIN_BUCKET`), capped at ``limit`` (the encoder's usable positions) but never
    below ``length``."""
    bucket = MIN_BUCKET
    while bucket < length:
        bucket *= 2
    if limit is not None:
        bucket = min(bucket, limit)
    return max(bucket, length)


def pad_source(input_ids: Any, attention_mask: Any, length: int, pad_id: int, xp: Any) -> tuple[Any, Any]:
    """``input_ids`` / ``attention_mask`` [batch, n] padded on the right to ``length``
    (ids with ``pad_id``, mask with 0).  ``xp`` is a NumPy-like namespace."""
    extra = length - int(input_ids.shape[1])
    if extra <= 0:
        return input_ids, attention_mask
    batch = int(input_ids.shape[0])
    ids = xp.concatenate([input_ids, xp.full((batch, extra), pad_id, dtype=input_ids.dtype)], axis=1)
    mask = xp.concatenate([attention_mask, xp.zeros((batch, extra), dtype=attention_mask.dtype)], axis=1)
    return ids, mask


class ProgramCache(OrderedDict):
    """``{key: compiled program}`` holding at most ``maxsize`` entries (LRU)."""

    def __init__(self, maxsize: Optional[int] = None) -> None:
        super().__init__()
        self.maxsize = MAX_PROGRAMS if maxsize is None else maxsize

    def get_or_build(self, key: Hashable, build: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        program = self[key] = build()
        while len(self) > max(1, self.maxsize):
            self.popitem(last=False)
        return program
