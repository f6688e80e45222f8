"""Options and fixtures of the conformance suite.

``pytest conformance_tests`` runs the built-in tiny pairs; ``--checkpoint PATH_OR_REPO_ID``
runs the same checks on your checkpoint instead; ``--backends torch,flax`` narrows the
backends.  Under CI (``CI=true``) a backend that is not installed fails the run.
"""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from encdec.init import init_weights  # noqa: E402
from encdec.registry import available_backends  # noqa: E402
from encdec.specs import encoder_decoder_spec  # noqa: E402

from conformance_tests.pairs import PAIRS  # noqa: E402

ALL_BACKENDS = ("torch", "tf", "flax")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("encdec conformance")
    group.addoption("--checkpoint", default=None, help="run the suite on this folder or Hub repo id")
    group.addoption("--backends", default=None, help="comma list of backends (default: all)")


def selected_backends(config: pytest.Config) -> list[str]:
    arg = config.getoption("--backends")
    return [b.strip() for b in arg.split(",")] if arg else list(ALL_BACKENDS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        checkpoint = metafunc.config.getoption("--checkpoint")
        ids = ["checkpoint"] if checkpoint else [p.id for p in PAIRS]
        metafunc.parametrize("case", ids, indirect=True, scope="module")
    backends = selected_backends(metafunc.config)
    if "backend_pair" in metafunc.fixturenames:
        pairs = [(a, b) for i, a in enumerate(backends) for b in backends[i + 1:]]
        metafunc.parametrize("backend_pair", pairs, ids=[f"{a}-{b}" for a, b in pairs])
    for name in ("backend", "other"):
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, backends)


class Case:
    """A config with its canonical weights, shared by every backend in one test module."""

    def __init__(self, name: str, config, weights, light: bool = False) -> None:
        self.name, self.config, self.weights, self.light = name, config, weights, light

    def skip_if_light(self, what: str) -> None:
        """Skip a check a light pair (see :class:`~conformance_tests.pairs.Pair`) does not run."""
        if self.light:
            pytest.skip(f"{what}: not run for light pairs")


_CASES: dict[str, Case] = {}


def pair_case(name: str) -> Case:
    """The :class:`Case` of the built-in pair ``name`` (built once per session)."""
    if name not in _CASES:
        pair = next(p for p in PAIRS if p.id == name)
        config = pair.config()
        weights = init_weights(encoder_decoder_spec(config), seed=7, randomize_all=True)
        _CASES[name] = Case(name, config, weights, light=pair.light)
    return _CASES[name]


@pytest.fixture(scope="module")
def case(request: pytest.FixtureRequest) -> Case:
    name = request.param
    if name != "checkpoint":
        return pair_case(name)
    if name not in _CASES:
        from encdec.pretrained import load_pretrained

        config, weights, _, _ = load_pretrained(request.config.getoption("--checkpoint"))
        _CASES[name] = Case(name, config, weights)
    return _CASES[name]


def require(backend: str) -> None:
    """Skip a backend that is not installed -- or fail under CI, where all must be."""
    if backend not in available_backends():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"backend {backend} is not installed in CI; the conformance suite needs all three")
        pytest.skip(f"backend {backend} is not installed")


def require_module(name: str):
    """Import ``name`` (a test-only oracle such as ``adapters``): skip the calling module when it
    is missing -- or fail under CI, where the test extras install it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            raise RuntimeError(f"{name} is not installed in CI; pip install -c constraints.txt -e '.[test]'") from None
        pytest.skip(f"{name} is not installed", allow_module_level=True)


def max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b))) if a.size else 0.0
