"""Bounded compilation of TF generate: source-length buckets (same ids as unpadded) and
an LRU of compiled programs (two compiles in all)."""
import numpy as np

from encdec import compile_cache
from encdec_tf.generation import _COMPILED
from tests.tf.helpers import PAIRS, make_pair


def test_buckets_keep_ids_and_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(compile_cache, "MAX_PROGRAMS", 1)
    model, _, _ = make_pair(PAIRS[1], hf=False)
    rng = np.random.default_rng(0)
    kw = dict(max_new_tokens=5, eos_token_id=83)
    for length in (5, 11):  # both pad to the 16-token bucket: one program
        ids = rng.integers(3, 99, (2, length))
        mask = np.ones_like(ids)
        mask[1, -2:] = 0
        bucketed = model.generate(ids, attention_mask=mask, **kw).numpy()
        assert [shape for _, shape in _COMPILED[model]] == [(2, 16)]
    plain = model.generate(ids, attention_mask=mask, length_buckets=False, **kw).numpy()
    np.testing.assert_array_equal(bucketed, plain)
    assert [shape for _, shape in _COMPILED[model]] == [(2, 11)]  # the bound of 1 evicted the bucket's program
