"""Resolved generation settings cached per model, for backends whose steady ``generate`` call
should cost little beyond its compiled program.

:func:`~encdec.generation.resolve_generation` copies and merges whole configs (about 10 ms
a call); its result depends only on the *values* of the model config, the generation config,
the call's keyword arguments and the prompt length.  :func:`cached_resolve` keys it by a
fingerprint of those values (plain Python data, walked in well under a millisecond), so a
mutated config gives a new key and is resolved afresh.  Arguments that are not plain data
(arrays, callables) are resolved every call, uncached.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from encdec.generation import DecodePlan, resolve_generation

#: resolved plans kept per model (least recently used evicted first).
MAX_PLANS = 32
_PLAIN = (type(None), bool, int, float, str)


class _NotPlain(Exception):
    pass


def fingerprint(value: Any) -> Any:
    """A hashable image of ``value`` built from plain data: scalars, strings, lists, tuples,
    dicts and objects through their ``vars()``; raises :class:`_NotPlain` on anything else."""
    if isinstance(value, _PLAIN):
        return (type(value).__name__, value)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(fingerprint(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((fingerprint(k), fingerprint(v)) for k, v in value.items()))  # order kept: equal dicts
        # built in another order only miss the cache
    if type(value).__module__.split(".")[0] in ("numpy", "jax", "jaxlib", "torch", "tensorflow") or callable(value):
        raise _NotPlain
    if hasattr(value, "__dict__"):
        return (type(value).__qualname__, fingerprint(vars(value)))
    raise _NotPlain


def cached_resolve(model: Any, generation_config: Any, kwargs: dict[str, Any],
                   start_length: int = 1) -> tuple[DecodePlan, dict[str, Any]]:
    """``resolve_generation(model.config, generation_config, kwargs, start_length)``, cached
    in ``model.__dict__`` by the values it reads; errors are raised (and not cached)."""
    try:
        key = fingerprint((model.config, generation_config, kwargs, start_length))
    except _NotPlain:
        return resolve_generation(model.config, generation_config, kwargs, start_length=start_length)
    plans = model.__dict__.setdefault("_resolved_plans", OrderedDict())
    entry = plans.get(key)  # one lookup: another thread may evict between two
    if entry is None:
        entry = resolve_generation(model.config, generation_config, kwargs, start_length=start_length)
        plans[key] = entry
        while len(plans) > MAX_PLANS:
            try:
                plans.popitem(last=False)
            except KeyError:  # emptied by another thread
                break
    else:
        try:
            plans.move_to_end(key)
        except KeyError:  # evicted by another thread meanwhile; the entry is still valid
            pass
    plan, rest = entry
    return plan, dict(rest)
