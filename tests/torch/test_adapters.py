"""PyTorch-only adapter behaviour; agreement with the ``adapters`` library, files, merging and
errors are checked for every backend in ``conformance_tests/test_adapters.py``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from encdec.adapters import LoRAConfig, SeqBnConfig
from encdec_torch import adapters as ours_adapters
from tests.torch.helpers import build_pair, inputs


@pytest.mark.parametrize("pair,config", [("bert2bert", SeqBnConfig(mh_adapter=True, dropout=0.1)),
                                         ("bert2bert", LoRAConfig(init_weights="bert", dropout=0.1)),
                                         ("bert2gpt2", SeqBnConfig(leave_out=[1]))])
def test_train_adapter_reduces_loss_and_freezes_base(pair, config):
    cfg, _, model, _ = build_pair(pair)
    model.add_adapter("a", config)
    base = {k: v.copy() for k, v in model.canonical_state().items()}
    model.train_adapter("a")
    trainable = [k for k, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".a." in k for k in trainable)
    assert model.active_adapter == "a"
    x = inputs(cfg)
    labels = x["decoder_input_ids"].clone()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(5):
        torch.manual_seed(0)  # same dropout masks each step: the loss drop is the optimiser's
        loss = model(input_ids=x["input_ids"], attention_mask=x["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    after = model.canonical_state()
    assert all(np.array_equal(base[k], after[k]) for k in base)


def test_init_entry_point_and_parameter_names():
    """``adapters.init(model)`` (AdapterHub's entry) returns the model; parameters carry
    AdapterHub's state-dict names and leave the base state dict untouched when deleted."""
    _, _, model, _ = build_pair("bert2gpt2")
    assert ours_adapters.init(model) is model
    with pytest.raises(TypeError, match="EncoderDecoderModel"):
        ours_adapters.init(torch.nn.Linear(2, 2))
    keys = set(model.state_dict())
    model.add_adapter("a", SeqBnConfig(mh_adapter=True))
    model.add_adapter("l", LoRAConfig(selfattn_lora=False, output_lora=True))
    names = set(model.state_dict()) - keys
    assert "decoder.transformer.h.1.attention_adapters.adapters.a.adapter_up.weight" in names
    assert "encoder.encoder.layer.0.attention.output.adapters.a.adapter_down.0.weight" in names
    assert "decoder.transformer.h.0.mlp.c_proj.loras.l.lora_B" in names
    assert names == set(model.adapter_state("a")) | set(model.adapter_state("l"))
    model.delete_adapter("a")
    model.delete_adapter("l")
    assert set(model.state_dict()) == keys
    assert model.decoder.transformer.h[0].attention_adapters is None


def test_adapter_follows_model_dtype():
    cfg, _, model, _ = build_pair("bert2bert")
    model = model.to(torch.bfloat16)
    model.add_adapter("a", SeqBnConfig())
    model.set_active_adapters("a")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    x = inputs(cfg)
    with torch.no_grad():
        assert model(**x).logits.dtype == torch.bfloat16


def test_adapter_added_to_an_eval_model_does_not_drop():
    """A model in eval mode gets adapters in eval mode: dropout > 0 must not act at inference."""
    cfg, _, model, _ = build_pair("bert2bert")
    model.eval()
    model.add_adapter("a", LoRAConfig(dropout=0.5, init_weights="bert"))
    model.set_active_adapters("a")
    x = inputs(cfg)
    with torch.no_grad():
        assert torch.equal(model(**x).logits, model(**x).logits)
