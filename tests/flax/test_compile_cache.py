"""Bounded compilation of Flax generate: source-length buckets (same ids as unpadded) and
an LRU of compiled programs (two compiles in all)."""
import numpy as np

from encdec import compile_cache
from tests.flax.test_modeling import build


def test_buckets_keep_ids_and_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(compile_cache, "MAX_PROGRAMS", 1)
    _, _, model = build("bert2gpt2", std=0.3)
    rng = np.random.default_rng(0)
    kw = dict(max_new_tokens=5, eos_token_id=[23, 37])
    for length in (5, 11):  # both pad to the 16-token bucket: one program
        ids = rng.integers(3, 99, (2, length))
        mask = np.ones_like(ids)
        mask[1, -2:] = 0
        bucketed = np.asarray(model.generate(ids, mask, **kw).sequences)
        assert [dict(key[1])["input_ids"] for key in model._generate_programs] == [(2, 16)]
    plain = np.asarray(model.generate(ids, mask, length_buckets=False, **kw).sequences)
    np.testing.assert_array_equal(bucketed, plain)
    assert len(set(bucketed[:, 1:].ravel().tolist())) > 1  # not one repeated token: the source matters
    assert [dict(key[1])["input_ids"] for key in model._generate_programs] == [(2, 11)]  # the bound of 1 evicted the bucket's program
