"""Backend runners cached per (case, backend): building TF/Flax models is not free."""
from __future__ import annotations

from encdec.runner import Runner

_RUNNERS: dict[tuple[str, str], Runner] = {}


def runner(case, backend: str) -> Runner:
    key = (case.name, backend)
    if key not in _RUNNERS:
        _RUNNERS[key] = Runner.from_weights(backend, case.config, case.weights)
    return _RUNNERS[key]
