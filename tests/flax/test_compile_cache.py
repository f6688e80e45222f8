"""Bounded compilation of Flax generate: source-length buckets (same ids as unpadded) and
an LRU of compiled programs (three compiles in all)."""
import numpy as np

from encdec import compile_cache
from tests.flax.test_modeling import build


def test_buckets_keep_ids_and_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(compile_cache, "MAX_PROGRAMS", 2)
    _, _, model = build("bert2gpt2", std=0.3)
    rng = np.random.default_rng(0)
    calls = []
    for length in (5, 11):  # both pad to the 16-token bucket: one program
        ids = rng.integers(3, 99, (2, length))
        mask = np.ones_like(ids)
        mask[1, -2:] = 0
        calls.append(model.generate(ids, mask, max_new_tokens=5, eos_token_id=[23, 37]).sequences)
        assert (2, 16) in [shape for _, shape in model._generate_programs]
        plain = model.generate(ids, mask, max_new_tokens=5, eos_token_id=[23, 37], length_buckets=False).sequences
        np.testing.assert_array_equal(np.asarray(calls[-1]), np.asarray(plain))
    # the bucket served both lengths; of the unbucketed (2, 5) and (2, 11) programs, the bound of 2
    # evicted the least recently used one
    assert [shape for _, shape in model._generate_programs] == [(2, 16), (2, 11)]
