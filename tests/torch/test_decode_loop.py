"""The torch decode loop's machinery: the static (preallocated, written in place) KV cache and
the opt-in compiled single-token step.  Ids against transformers are the conformance suite's
job (its generate tests run on this cache); here: the cache's own contract, and compiled ids
equal to eager ones."""
from types import SimpleNamespace

import pytest
import torch
import torch._dynamo

from conformance_tests.pairs import PAIRS
from encdec.runner import sample_inputs
from encdec_torch import EncoderDecoderModel
from encdec_torch.generation import _Decoder, _decoder_step
from encdec_torch.models.common import StaticKV, extend_kv


@pytest.fixture(scope="module")
def bert2gpt2():
    config = next(p for p in PAIRS if p.id == "bert2gpt2").config()
    model = EncoderDecoderModel(config=config, seed=3).eval()
    inputs = sample_inputs(config, labels=False)
    return model, torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"])


def test_static_kv_writes_in_place_and_reads_as_the_filled_tensor():
    torch.manual_seed(0)
    first, second = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 1, 5)
    keys, values = StaticKV.empty(first, rows=3, capacity=6), StaticKV.empty(first, rows=3, capacity=6)
    storage = keys.data.data_ptr()
    k, _ = extend_kv((keys, values), first, first)
    assert keys.shape == (3, 2, 4, 5) and torch.equal(k, first)
    k, _ = extend_kv((keys, values), second, second)
    assert torch.equal(k, torch.cat([first, second], dim=2))  # what the concatenating cache gives
    assert keys.data.data_ptr() == storage and k.data_ptr() == storage  # no new allocation
    keys.reorder(torch.tensor([2, 2, 0]))
    assert torch.equal(keys.filled(), torch.cat([first, second], dim=2)[[2, 2, 0]])
    with pytest.raises(ValueError, match="static KV cache full: 7 positions for a capacity of 6"):
        keys.write(torch.zeros(3, 2, 2, 5))
    growing = StaticKV.empty(first, rows=3, capacity=2, limit=9)
    growing.write(first[:, :, :1])
    k = growing.write(first[:, :, 1:])  # 4 positions > capacity 2: doubles to 4, filled part kept
    assert growing.data.shape[2] == 4 and torch.equal(k, first)
    growing.write(torch.cat([second] * 4, dim=2))  # 8 > 4: doubles to 8
    assert growing.data.shape[2] == 8 and torch.equal(growing.filled()[:, :, :4], first)


def test_compiled_step_gives_the_eager_ids(bert2gpt2):
    """compile_step runs the single-token step through torch.compile (here its "eager" backend:
    dynamo's tracing and guards without inductor's C++ build, which takes minutes on CI).
    Beam search only (the greedy step is the same program on fewer rows): reordered buffers,
    shared cross-attention rows, several steps on one compiled program."""
    model, ids, mask = bert2gpt2
    settings = dict(max_new_tokens=5, num_beams=3, num_return_sequences=2, eos_token_id=None)
    with torch.no_grad():
        eager = model.generate(ids, attention_mask=mask, **settings)
        compiled = model.generate(ids, attention_mask=mask, compile_step="eager", **settings)
    assert torch.equal(compiled, eager)


def test_training_forward_and_decoder_step_trace_without_graph_breaks(bert2gpt2):
    """No data-dependent branch (a host read of a mask, say) splits either under torch.compile:
    padded masks are applied as given, the core's input check runs before the graph."""
    model, ids, mask = bert2gpt2
    labels = ids[:, :5].clone()
    mask = mask.clone()
    mask[0, -2:] = 0  # padded, so the masks are real
    torch._dynamo.reset()
    train = torch._dynamo.explain(lambda: model(input_ids=ids, attention_mask=mask, labels=labels).loss)()
    with torch.no_grad():
        encoded = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        plan = SimpleNamespace(use_cache=True, max_length=8, output_attentions=False, output_hidden_states=False)
        decoder = _Decoder(model, encoded, mask, 1, plan)
        decoder.step(torch.full((ids.shape[0], 2), 2))  # fills the cache with two positions
        step = torch._dynamo.explain(_decoder_step)(model.decoder, ids[:, :1], decoder.cache, decoder.enc, decoder.mask)
    torch._dynamo.reset()
    assert (train.graph_break_count, train.graph_count) == (0, 1), train.break_reasons
    assert (step.graph_break_count, step.graph_count) == (0, 1), step.break_reasons


def test_compiled_step_refuses_what_it_cannot_return(bert2gpt2):
    model, ids, mask = bert2gpt2
    with pytest.raises(ValueError, match="compile_step=True needs use_cache=True"):
        model.generate(ids, attention_mask=mask, max_new_tokens=2, compile_step=True, use_cache=False)
    with pytest.raises(TypeError, match="compile_step must be True, False or a torch.compile backend name"):
        model.generate(ids, attention_mask=mask, max_new_tokens=2, compile_step=3)


def test_growing_cache_gives_the_same_ids(bert2gpt2, monkeypatch):
    """Buffers that start at 2 positions and double while decoding (2 -> 4 -> 8) give the ids
    of buffers holding every position from the start (beam search: rows reordered after
    growing)."""
    from encdec_torch import generation

    model, ids, mask = bert2gpt2
    settings = dict(max_new_tokens=7, num_beams=3, eos_token_id=None)
    with torch.no_grad():
        whole = model.generate(ids, attention_mask=mask, **settings)
        monkeypatch.setattr(generation, "_FIRST_CAPACITY", 2)
        grown = model.generate(ids, attention_mask=mask, **settings)
    assert torch.equal(whole, grown)
