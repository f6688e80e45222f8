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


def test_resolved_settings_follow_config_changes():
    """Settings are cached by value (encdec.plan_cache): changing the generation config or the
    model config between calls takes effect; the same settings reuse one resolved plan."""
    _, _, model = build("bert2gpt2", std=0.3)
    ids = np.random.default_rng(1).integers(3, 99, (2, 7))
    model.generation_config.max_new_tokens = 3
    assert model.generate(ids).sequences.shape == (2, 4)
    assert model.generate(ids).sequences.shape == (2, 4)
    assert len(model._resolved_plans) == 1
    model.generation_config.max_new_tokens = 5
    assert model.generate(ids).sequences.shape == (2, 6)
    model.generation_config.decoder_start_token_id = None  # falls back to the model config's
    model.config.decoder_start_token_id = 7
    assert int(model.generate(ids).sequences[0, 0]) == 7
    assert len(model._resolved_plans) == 3
