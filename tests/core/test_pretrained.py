"""encdec.pretrained against transformers 4.57: HF checkpoints load with equal arrays,
ours load in HF (PyTorch in-process; TF and Flax in subprocesses), and part checkpoints
map onto encoder / decoder specs."""
import json

import numpy as np
import pytest

from encdec.checkpoint import LoadError
from encdec.formats.flax_msgpack import HF_FLAX_LAYOUT
from encdec.generation import GenerationConfig
from encdec.layout import to_backend
from encdec.pretrained import load_part, load_pretrained, save_pretrained
from encdec.specs import ENCODER_SPECS, decoder_spec

from .iohelpers import assert_same_weights, run_oracle, tiny_config, tiny_model
from .tiny import part_kwargs

PAIRS = [("bert", "gpt2", 32), ("bert", "bert", 32), ("roberta", "roberta", 32), ("bert", "bart", 32), ("bert", "gpt2", 48)]


def pid(pair):
    return f"{pair[0]}2{pair[1]}" + ("-h48" if pair[2] == 48 else "")


@pytest.fixture(scope="module")
def T():
    return pytest.importorskip("transformers")


def hf_model(T, config, seed=0):
    """transformers EncoderDecoderModel of our config, every parameter random."""
    import torch

    torch.manual_seed(seed)
    model = T.EncoderDecoderModel(config=T.EncoderDecoderConfig.from_dict(config.to_dict()))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


def state_np(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("pair", PAIRS + [("bert", "bert", 32, True)], ids=lambda p: pid(p) + ("-tied" if len(p) > 3 else ""))
@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_hf_checkpoint_loads_equal(T, tmp_path, pair, safe):
    model = hf_model(T, tiny_config(*pair[:3], tie_encoder_decoder=len(pair) > 3))
    model.save_pretrained(tmp_path, safe_serialization=safe)
    assert (tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")).exists()
    config, weights, _, unused = load_pretrained(tmp_path)
    assert unused == {} and config.decoder.model_type == pair[1]
    assert_same_weights(state_np(model), weights)


@pytest.mark.parametrize("pair", PAIRS + [("bert", "bert", 32, True)], ids=lambda p: pid(p) + ("-tied" if len(p) > 3 else ""))
def test_ours_loads_in_transformers(T, tmp_path, pair):
    extra = {"tie_encoder_decoder": True} if len(pair) > 3 else {}
    config, weights, _ = tiny_model(*pair[:3], **extra)
    gen = GenerationConfig(max_length=7, decoder_start_token_id=0, pad_token_id=0)
    save_pretrained(tmp_path, config, weights, generation_config=gen, max_shard_size="40KB")
    model, info = T.EncoderDecoderModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    assert_same_weights(weights, state_np(model))
    assert model.generation_config.max_length == 7
    _, _, gen2, _ = load_pretrained(tmp_path)
    assert gen2.max_length == 7


def test_hf_sharded_and_bf16_checkpoints(T, tmp_path):
    import torch

    model = hf_model(T, tiny_config("bert", "gpt2"))
    model.save_pretrained(tmp_path / "sharded", max_shard_size="30KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    _, weights, _, _ = load_pretrained(tmp_path / "sharded")
    assert_same_weights(state_np(model), weights)
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    _, weights, _, _ = load_pretrained(tmp_path / "bf16")
    assert_same_weights({k: v.float().numpy() for k, v in model.state_dict().items()}, weights)
    assert weights["encoder.pooler.dense.weight"].dtype == np.float32


def test_ours_pt_bin_loads_in_transformers(T, tmp_path):
    config, weights, _ = tiny_model("bert", "bert")
    save_pretrained(tmp_path, config, weights, format="pt-bin", max_shard_size="40KB")
    assert (tmp_path / "pytorch_model.bin.index.json").exists()
    model, info = T.EncoderDecoderModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert_same_weights(weights, state_np(model))


def test_config_overrides_and_unused_kwargs(tmp_path):
    config, weights, _ = tiny_model()
    save_pretrained(tmp_path, config, weights)
    config2, _, gen, unused = load_pretrained(tmp_path, decoder_start_token_id=5, pad_token_id=3, output_attentions=True,
                                             not_a_field=1)
    assert (config2.decoder_start_token_id, config2.pad_token_id) == (5, 3)
    assert config2.output_attentions is True  # a common config attribute, as in transformers
    assert unused == {"not_a_field": 1} and gen is None
    config3, _, _, _ = load_pretrained(tmp_path, config=config, decoder_start_token_id=9)
    assert config3.decoder_start_token_id == 9 and config.decoder_start_token_id == 0


# --- TF (tf-keras) and Flax oracles in subprocesses -----------------------------------------
ORACLE_SCRIPT = """
import json, sys
import numpy as np
import transformers as T
for job in json.loads(sys.argv[1]):
    cls = getattr(T, job["cls"])
    if job.get("from_pt"):
        cls.from_pretrained(job["src"], from_pt=True).save_pretrained(job["dst"])
        continue
    if job.get("params"):  # Flax has no loading info: the test compares every array
        model = cls.from_pretrained(job["src"])
        from flax.traverse_util import flatten_dict
        np.savez(job["params"], **{".".join(k): np.asarray(v) for k, v in flatten_dict(model.params).items()})
    else:
        model, info = cls.from_pretrained(job["src"], output_loading_info=True)
        assert not any(info.values()), (job, info)
        model.save_pretrained(job["dst"])
print("ok")
"""

TF_PAIRS = [("bert", "gpt2", 32), ("bert", "bert", 32), ("roberta", "roberta", 32), ("electra", "gpt2", 32), ("bert", "gpt2", 48)]
#: (HF class name without framework prefix, model_type) of part checkpoints converted by HF.
PART_CLASSES = [("BertForMaskedLM", "bert"), ("GPT2LMHeadModel", "gpt2"), ("RobertaForCausalLM", "roberta")]


def oracle_parts(T, tmp_path, prefix, extra=()):
    """PyTorch part checkpoints plus jobs converting them with HF's ``from_pt``."""
    jobs, cases = [], []
    for cls_name, model_type in [*PART_CLASSES, *extra]:
        pt_dir, out = tmp_path / f"pt-{cls_name}", tmp_path / f"{prefix}-{cls_name}"
        hf_part(T, cls_name, model_type, pt_dir, is_decoder=model_type != "bert")
        jobs.append({"cls": prefix + cls_name, "src": str(pt_dir), "dst": str(out), "from_pt": True})
        cases.append((pt_dir, out, model_type))
    return jobs, cases


def assert_parts_equal(cases):
    for pt_dir, out, model_type in cases:
        for role in ("encoder", "decoder") if model_type in ENCODER_SPECS else ("decoder",):
            ours, theirs = load_part(pt_dir, role, {}), load_part(out, role, {})
            assert sorted(theirs.unexpected) == sorted(ours.unexpected) and theirs.initialized == ours.initialized
            assert_same_weights(ours.weights, theirs.weights)


@pytest.mark.oracle_subprocess
def test_tf_h5_both_ways_with_transformers_tf(T, tmp_path):
    """Ours -> TFEncoderDecoderModel (no missing / unexpected keys) -> its own save -> ours:
    arrays equal, so HF reads our names and we read HF's.  Part checkpoints HF converts
    to TF load as parts exactly like their PyTorch originals."""
    pytest.importorskip("h5py")
    pytest.importorskip("tf_keras")
    jobs, originals = [], {}
    for pair in TF_PAIRS:
        config, weights, _ = tiny_model(*pair)
        ours, theirs = tmp_path / f"ours-{pid(pair)}", tmp_path / f"hf-{pid(pair)}"
        save_pretrained(ours, config, weights, format="tf-h5")
        jobs.append({"cls": "TFEncoderDecoderModel", "src": str(ours), "dst": str(theirs)})
        originals[theirs] = weights
    part_jobs, part_cases = oracle_parts(T, tmp_path, "TF")
    env = {"TF_USE_LEGACY_KERAS": "1", "USE_TF": "AUTO", "USE_TORCH": "AUTO", "USE_FLAX": "0"}  # "1" for both disables both
    assert "ok" in run_oracle(ORACLE_SCRIPT, json.dumps(jobs + part_jobs), env=env)
    for theirs, weights in originals.items():
        assert (theirs / "tf_model.h5").exists()
        _, loaded, _, _ = load_pretrained(theirs)
        assert_same_weights(weights, loaded)
    assert_parts_equal(part_cases)


@pytest.mark.oracle_subprocess
def test_flax_msgpack_both_ways_with_transformers_flax(T, tmp_path):
    """Ours -> FlaxEncoderDecoderModel params equal ours in HF Flax layout; HF's own
    PyTorch -> Flax conversions (composite and parts) load in ours equal to the PyTorch
    originals."""
    pytest.importorskip("flax")
    jobs, cases = [], []
    for pair in PAIRS:
        config, weights, spec = tiny_model(*pair)
        ours, pt_dir, out = (tmp_path / f"{kind}-{pid(pair)}" for kind in ("ours", "pt", "hf"))
        save_pretrained(ours, config, weights, format="flax-msgpack")
        model = hf_model(T, config)
        model.save_pretrained(pt_dir)
        jobs.append({"cls": "FlaxEncoderDecoderModel", "src": str(ours), "params": f"{out}-params.npz"})
        jobs.append({"cls": "FlaxEncoderDecoderModel", "src": str(pt_dir), "dst": str(out), "from_pt": True})
        cases.append((weights, spec, state_np(model), out))
    part_jobs, part_cases = oracle_parts(T, tmp_path, "Flax", extra=[("BartForCausalLM", "bart")])
    env = {"USE_TF": "0", "USE_TORCH": "AUTO", "USE_FLAX": "AUTO", "JAX_PLATFORMS": "cpu"}
    assert "ok" in run_oracle(ORACLE_SCRIPT, json.dumps(jobs + part_jobs), env=env)
    for weights, spec, pt_state, out in cases:
        params = dict(np.load(f"{out}-params.npz"))
        assert_same_weights(to_backend(weights, spec, HF_FLAX_LAYOUT), params)
        _, loaded, _, _ = load_pretrained(out)
        assert_same_weights(pt_state, loaded)
    assert_parts_equal(part_cases)


# --- parts ------------------------------------------------------------------------------------
def hf_part(T, cls_name, model_type, folder, safe=True, **overrides):
    import torch

    cfg_cls = {"bert": T.BertConfig, "roberta": T.RobertaConfig, "gpt2": T.GPT2Config, "bart": T.BartConfig}[model_type]
    torch.manual_seed(1)
    model = getattr(T, cls_name)(cfg_cls(**{**part_kwargs(model_type), **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    model.save_pretrained(folder, safe_serialization=safe)
    return state_np(model)


def test_part_bert_model_as_encoder(T, tmp_path):
    state = hf_part(T, "BertModel", "bert", tmp_path)
    part = load_part(tmp_path, "encoder", {})
    assert part.initialized == [] and part.unexpected == []
    assert_same_weights(state, part.weights)
    assert part.config.is_decoder is False


def test_part_masked_lm_as_encoder_strips_prefix(T, tmp_path):
    state = hf_part(T, "BertForMaskedLM", "bert", tmp_path, safe=False)
    part = load_part(tmp_path, "encoder", {"hidden_dropout_prob": 0.0})
    assert part.config.hidden_dropout_prob == 0.0
    assert sorted(part.unexpected) == sorted(k for k in state if k.startswith("cls."))
    assert part.initialized == ["pooler.dense.weight", "pooler.dense.bias"]  # MaskedLM has no pooler
    for name in state:
        if name.startswith("bert."):
            np.testing.assert_array_equal(part.weights[name[5:]], state[name])


def test_part_gpt2_lm_head_as_decoder(T, tmp_path):
    state = hf_part(T, "GPT2LMHeadModel", "gpt2", tmp_path)
    part = load_part(tmp_path, "decoder", {}, seed=3)
    assert part.config.is_decoder and part.config.add_cross_attention
    assert part.initialized and all(("crossattention" in n or "ln_cross_attn" in n) for n in part.initialized)
    assert set(part.initialized) == set(decoder_spec(part.config).params) - set(state)
    for name, arr in state.items():
        np.testing.assert_array_equal(part.weights[name], arr)
    w = part.weights["transformer.h.0.crossattention.c_attn.weight"]
    assert abs(float(w.std()) - 0.02) < 0.005  # initializer_range
    np.testing.assert_array_equal(part.weights["transformer.h.0.ln_cross_attn.weight"], 1.0)
    again = load_part(tmp_path, "decoder", {}, seed=3)
    np.testing.assert_array_equal(again.weights["transformer.h.1.crossattention.q_attn.weight"],
                                  part.weights["transformer.h.1.crossattention.q_attn.weight"])


def test_part_gpt2_model_as_decoder_adds_prefix(T, tmp_path):
    state = hf_part(T, "GPT2Model", "gpt2", tmp_path)
    part = load_part(tmp_path, "decoder", {})
    assert part.unexpected == []
    for name, arr in state.items():
        np.testing.assert_array_equal(part.weights["transformer." + name], arr)
    np.testing.assert_array_equal(part.weights["lm_head.weight"], state["wte.weight"])  # tied, not initialised
    assert "lm_head.weight" not in part.initialized


@pytest.mark.parametrize("cls_name,model_type", [("RobertaForCausalLM", "roberta"), ("BartForCausalLM", "bart"), ("BertForMaskedLM", "bert")])
def test_part_causal_lms_as_decoder(T, tmp_path, cls_name, model_type):
    state = hf_part(T, cls_name, model_type, tmp_path, is_decoder=True)
    part = load_part(tmp_path, "decoder", {})
    spec = decoder_spec(part.config)
    assert part.unexpected == []
    assert set(part.initialized) == set(spec.params) - set(state)
    if model_type == "bart":
        assert part.initialized == []  # BartForCausalLM always has encoder_attn
    for name, arr in state.items():
        np.testing.assert_array_equal(part.weights[name], arr)


def test_parts_match_transformers_from_encoder_decoder_pretrained(T, tmp_path):
    """The weights a part load keeps are those transformers keeps in the composite model."""
    enc_state = hf_part(T, "BertForMaskedLM", "bert", tmp_path / "enc")
    hf_part(T, "GPT2LMHeadModel", "gpt2", tmp_path / "dec")
    hf = T.EncoderDecoderModel.from_encoder_decoder_pretrained(str(tmp_path / "enc"), str(tmp_path / "dec"))
    hf_state = state_np(hf)
    enc, dec = load_part(tmp_path / "enc", "encoder", {}), load_part(tmp_path / "dec", "decoder", {})
    ours = {**{f"encoder.{k}": v for k, v in enc.weights.items()}, **{f"decoder.{k}": v for k, v in dec.weights.items()}}
    assert set(ours) == set(hf_state)
    fresh = {f"encoder.{n}" for n in enc.initialized} | {f"decoder.{n}" for n in dec.initialized}
    for name in set(ours) - fresh:
        np.testing.assert_array_equal(ours[name], hf_state[name], err_msg=name)
    assert enc_state["bert.embeddings.word_embeddings.weight"].shape == ours["encoder.embeddings.word_embeddings.weight"].shape


def test_part_shape_mismatch_raises(T, tmp_path):
    hf_part(T, "GPT2LMHeadModel", "gpt2", tmp_path)
    with pytest.raises(LoadError, match=r"transformer.wte.weight: expected \(50, 32\), checkpoint has \(99, 32\)"):
        load_part(tmp_path, "decoder", {"vocab_size": 50})


def test_part_refuses_composite_and_bad_role(tmp_path):
    config, weights, _ = tiny_model()
    save_pretrained(tmp_path, config, weights)
    with pytest.raises(ValueError, match="composite encoder-decoder checkpoint"):
        load_part(tmp_path, "encoder", {})
    with pytest.raises(ValueError, match="role must be"):
        load_part(tmp_path, "middle", {})
    with pytest.raises(TypeError, match="config_overrides"):
        load_part(tmp_path, "encoder", {}, hidden_size=3)
