"""The portable init: the same config and seed give the same weights in every backend."""
from __future__ import annotations

import numpy as np

from conformance_tests.conftest import require
from conformance_tests.pairs import PAIRS
from encdec.init import init_model_weights
from encdec.runner import model_class


def test_same_seed_same_weights(backend):
    require(backend)
    config = next(p for p in PAIRS if p.id == "bert48-2gpt2-32-proj").config()
    model = model_class(backend)(config=config, seed=11)
    ours = model.canonical_state()
    ref = init_model_weights(config, seed=11)
    assert set(ours) == set(ref)
    for name, value in ref.items():
        np.testing.assert_array_equal(np.asarray(ours[name], np.float32), value, err_msg=name)
