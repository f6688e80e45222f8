"""Core training helpers: padding tokenised examples, batch-layout checks, dtype policies."""
import numpy as np
import pytest

from encdec.training import batch_from_data, check_batch_layout, check_policy, pad_examples


def test_pad_examples_pads_each_key_its_way():
    rows = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [8]},
            {"input_ids": [9], "attention_mask": [1], "labels": [4, 5, 6, 7, 8]}]
    out = pad_examples(rows, pad_token_id=1, pad_to_multiple_of=4)
    np.testing.assert_array_equal(out["input_ids"], [[5, 6, 7, 1], [9, 1, 1, 1]])
    np.testing.assert_array_equal(out["attention_mask"], [[1, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(out["labels"], [[8, -100, -100, -100, -100, -100, -100, -100],
                                                  [4, 5, 6, 7, 8, -100, -100, -100]])
    columns = {k: [r[k] for r in rows] for k in rows[0]}  # a dict of lists (datasets' ds[:])
    same = pad_examples(columns, pad_token_id=1, pad_to_multiple_of=4)
    assert all(np.array_equal(same[k], out[k]) for k in out) and out["labels"].dtype == np.int32


def test_pad_examples_refuses_non_model_columns():
    with pytest.raises(ValueError, match=r"unexpected batch key\(s\) \['text'\]"):
        pad_examples([{"input_ids": [1], "text": "hi"}], pad_token_id=0)


@pytest.mark.parametrize("shapes, match", [
    ({"input_ids": [2, 7], "labels": [2, 5, 1]}, r"`labels` must have shape \[batch, length\], got shape \[2, 5, 1\]"),
    ({"input_ids": [2, 7]}, "need `labels`"),
    ({"labels": [2, 5]}, "need `input_ids`"),
    ({"input_ids": [2, 7], "labels": [2, 5], "decoder_input_ids": [2, 4]},
     r"`decoder_input_ids` has length 4 but `labels` has length 5"),
])
def test_check_batch_layout_names_the_key(shapes, match):
    with pytest.raises(ValueError, match=match):
        check_batch_layout(shapes, "fit", need_labels=True)


def test_check_batch_layout_accepts_unknown_lengths_and_policies():
    check_batch_layout({"input_ids": [None, None], "attention_mask": [None, 7], "labels": [None, None]}, "fit", True)
    for name in ("float32", "mixed_float16", "mixed_bfloat16"):
        check_policy(name, "compile")
    with pytest.raises(ValueError, match="'bfloat16' is not supported"):
        check_policy("bfloat16", "compile")
    assert batch_from_data(({"input_ids": 1}, 2), "fit") == ({"input_ids": 1}, 2, None)
    assert batch_from_data({"input_ids": 1}, "fit") == ({"input_ids": 1}, None, None)


def test_train_compare_helpers():
    """train-compare's core: dropout zeroed in both parts, deterministic batches, per-step
    differences, AdamW settings checked, and bad batches refused (naming the key and the
    expected shape) before a backend is even imported."""
    from encdec.runner import Runner
    from encdec.training import AdamWSettings, comparison_batches, curve_differences, without_dropout
    from tests.core.tiny import tiny_composite

    config = tiny_composite("bert", "gpt2")
    off = without_dropout(config)
    assert (off.encoder.hidden_dropout_prob, off.encoder.attention_probs_dropout_prob, off.decoder.resid_pdrop,
            off.decoder.attn_pdrop, off.decoder.embd_pdrop) == (0.0,) * 5
    assert config.encoder.hidden_dropout_prob == 0.1 and off.encoder.classifier_dropout is None  # a copy; None kept
    a, b = comparison_batches(config, 2, 3, seed=1), comparison_batches(config, 2, 3, seed=1)
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x) and not np.array_equal(a[0]["labels"], a[1]["labels"])
    assert a[0]["labels"].shape == (3, 8) and (a[0]["labels"][1] == -100).any()
    assert curve_differences({"x": [1.0, 2.0], "y": [1.5, 2.0], "z": [1.25, 1.0]}) == [0.5, 1.0]
    with pytest.raises(ValueError, match="beta2 must be in"):
        AdamWSettings(beta2=1.0)
    runner = Runner("flax", model=None)
    bad = [{"input_ids": a[0]["input_ids"], "label": a[0]["labels"]}]
    with pytest.raises(ValueError, match=r"unexpected batch key\(s\) \['label'\]"):
        runner.train_adamw(bad, AdamWSettings())
    with pytest.raises(ValueError, match=r"`labels` must have shape \[batch, length\], got shape \[3\]"):
        runner.train_adamw([{"input_ids": a[0]["input_ids"], "labels": a[0]["labels"][:, 0]}], AdamWSettings())
