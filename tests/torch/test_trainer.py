"""transformers' Seq2SeqTrainer drives our PyTorch model as it drives its own
EncoderDecoderModel: same losses step by step, same eval loss and generated predictions,
checkpoints (safetensors, tied weights) that save and resume, gradient accumulation with
``num_items_in_batch``, gradient checkpointing with its kwargs, bf16 autocast.

transformers is the oracle here (a test-only dependency); each case trains a bert2bert pair
of hidden 32 for 3 steps on 8 examples whose labels have different lengths (-100 padding)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import safetensors.torch
import torch

from tests.torch.helpers import VOCAB, build_pair

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

STEPS = 3


def dataset(n: int = 8, src: int = 7, tgt: int = 5, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Examples with padded sources and labels of lengths tgt, tgt-1, ... (-100 after them)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ids = torch.tensor(rng.integers(4, VOCAB, src))
        mask = torch.ones(src, dtype=torch.long)
        mask[src - i % 3:] = 0
        labels = torch.tensor(rng.integers(4, VOCAB, tgt))
        labels[tgt - i % 4:] = -100
        rows.append({"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask, "labels": labels})
    return rows


class Recording(transformers.Seq2SeqTrainer):
    """Keeps each training step's loss as a float (the logs round to 4 digits)."""

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        self.losses.append(float(loss))
        return loss


def train(model, out, steps=STEPS, resume=None, **overrides):
    args = dict(output_dir=str(out), per_device_train_batch_size=4, per_device_eval_batch_size=4, max_steps=steps,
                learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], seed=0, use_cpu=True,
                predict_with_generate=True, generation_max_length=6, generation_num_beams=2,
                dataloader_num_workers=0, disable_tqdm=True)
    args.update(overrides)
    trainer = Recording(model=model, args=transformers.Seq2SeqTrainingArguments(**args),
                        train_dataset=dataset(), eval_dataset=dataset(4, seed=1))
    trainer.losses = []
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def weights(model) -> dict[str, np.ndarray]:
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def max_weight_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.fixture(scope="module")
def pair():
    config, init, ours, hf = build_pair("bert2bert")
    return config, init, ours, hf


@pytest.fixture(scope="module")
def runs(pair, tmp_path_factory):
    """Ours and transformers' trained the same 3 steps (checkpoint at step 2), evaluated and
    predicted with generation."""
    _, _, ours, hf = pair
    out = {}
    for name, model in (("ours", copy.deepcopy(ours)), ("hf", copy.deepcopy(hf))):
        trainer = train(model.train(), tmp_path_factory.mktemp(name), save_strategy="steps", save_steps=2,
                        save_safetensors=True)
        out[name] = dict(trainer=trainer, model=model, losses=trainer.losses, eval=trainer.evaluate(),
                         predict=trainer.predict(dataset(4, seed=2)))
    return out


def test_losses_match_transformers(runs):
    ours, hf = runs["ours"], runs["hf"]
    assert len(ours["losses"]) == STEPS
    np.testing.assert_allclose(ours["losses"], hf["losses"], rtol=0, atol=1e-5)
    assert max_weight_diff(weights(ours["model"]), weights(hf["model"])) < 1e-5
    assert ours["losses"][0] != ours["losses"][-1]  # it trained


def test_eval_and_predict_with_generate_match_transformers(runs):
    ours, hf = runs["ours"], runs["hf"]
    assert abs(ours["eval"]["eval_loss"] - hf["eval"]["eval_loss"]) < 1e-5
    assert abs(ours["predict"].metrics["test_loss"] - hf["predict"].metrics["test_loss"]) < 1e-5
    # labels were in the batches handed to generate; beams 2, max length 6 (padded to 20 by the trainer)
    np.testing.assert_array_equal(ours["predict"].predictions, hf["predict"].predictions)
    assert (ours["predict"].predictions[:, :6] != 0).any()


def test_safetensors_checkpoint_resumes_and_loads_in_transformers(runs, pair, tmp_path):
    config, _, ours, hf = pair
    folder = runs["ours"]["trainer"].args.output_dir + "/checkpoint-2"
    saved = safetensors.torch.load_file(folder + "/model.safetensors")
    tied = "decoder.cls.predictions.decoder.weight"
    assert tied in ours._tied_weights_keys
    torch.testing.assert_close(saved[tied], saved["decoder.bert.embeddings.word_embeddings.weight"], rtol=0, atol=0)
    # the file is a transformers state dict
    other = copy.deepcopy(hf)
    assert not other.load_state_dict(saved, strict=True).missing_keys
    # resuming at step 2 ends where the uninterrupted run ended
    resumed = copy.deepcopy(ours).train()
    trainer = train(resumed, runs["ours"]["trainer"].args.output_dir, resume=folder)
    assert trainer.state.global_step == STEPS and len(trainer.losses) == 1
    assert abs(trainer.losses[0] - runs["ours"]["losses"][-1]) < 1e-5
    assert max_weight_diff(weights(resumed), weights(runs["ours"]["model"])) < 1e-5
    assert resumed.decoder.cls.predictions.decoder.weight is resumed.decoder.bert.embeddings.word_embeddings.weight


def test_gradient_accumulation_normalises_by_num_items_in_batch(runs, pair, tmp_path):
    """Two micro-batches of 2 make the same update as one batch of 4: each micro loss is
    its summed token loss over the tokens of the whole batch (``num_items_in_batch``).
    (transformers' own EncoderDecoderModel ignores that argument and sums two means.)"""
    model = copy.deepcopy(pair[2]).train()
    trainer = train(model, tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2)
    assert trainer.model_accepts_loss_kwargs
    micro = np.array(trainer.losses).reshape(STEPS, 2).sum(axis=1)
    np.testing.assert_allclose(micro, runs["ours"]["losses"], rtol=0, atol=1e-5)
    assert max_weight_diff(weights(model), weights(runs["ours"]["model"])) < 1e-5


def test_gradient_checkpointing_with_kwargs(runs, pair, tmp_path, monkeypatch):
    import encdec_torch.models.common as common

    seen = []
    real = common.checkpoint

    def recording(fn, *args, **kwargs):
        seen.append(kwargs)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(common, "checkpoint", recording)
    model = copy.deepcopy(pair[2]).train()
    trainer = train(model, tmp_path, gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": True})
    assert model.is_gradient_checkpointing
    assert seen and all(kw == {"use_reentrant": True} for kw in seen)
    np.testing.assert_allclose(trainer.losses, runs["ours"]["losses"], rtol=0, atol=1e-5)


def test_bf16_autocast_matches_transformers(pair, tmp_path):
    """bf16 mixed precision (CPU autocast): both models run the same ops in bf16 (measured:
    equal losses), so the fp32 tolerance holds."""
    _, _, ours, hf = pair
    losses = [train(copy.deepcopy(m).train(), tmp_path / name, steps=2, bf16=True).losses
              for name, m in (("ours", ours), ("hf", hf))]
    np.testing.assert_allclose(losses[0], losses[1], rtol=0, atol=1e-5)
