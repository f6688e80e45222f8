"""GPU smoke check (not part of CI, which has no GPU): the torch and Flax backends on the
accelerator agree with themselves on the CPU, with and without an active adapter.

    PYTHONPATH=. python scripts/gpu_check.py

Checks, for a small bert2gpt2 pair with random weights and a LoRA adapter (fused GPT-2
``c_attn`` included) and a bottleneck adapter: max |Δlogits| GPU vs CPU (fp32 with TF32 off;
tolerance 1e-4 because GPU kernels sum in another order), greedy ids equal, and training one
adapter step moves only the adapter.  Prints one line per check and exits 1 on a failure.
"""
from __future__ import annotations

import importlib.util
import sys

import numpy as np

from encdec import BertConfig, EncoderDecoderConfig, GPT2Config
from encdec.adapters import LoRAConfig, SeqBnConfig
from encdec.init import init_weights
from encdec.runner import sample_inputs
from encdec.specs import encoder_decoder_spec

TOL = 1e-4
FAILED: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        FAILED.append(name)


def pair() -> tuple[EncoderDecoderConfig, dict, dict]:
    config = EncoderDecoderConfig.from_encoder_decoder_configs(
        BertConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        GPT2Config(vocab_size=1000, n_embd=256, n_layer=4, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        decoder_start_token_id=2, pad_token_id=0, eos_token_id=3)
    weights = init_weights(encoder_decoder_spec(config), seed=0, randomize_all=True)
    return config, weights, sample_inputs(config, batch=4, src_len=32, tgt_len=16)


ADAPTERS = {"lora": LoRAConfig(r=8, alpha=16, attn_matrices=["q", "k", "v"], intermediate_lora=True, init_weights="bert"),
            "bottleneck": SeqBnConfig(mh_adapter=True, leave_out=[0])}


def torch_check(config, weights, x) -> None:
    import torch

    from encdec_torch import EncoderDecoderModel

    if not torch.cuda.is_available():
        check("torch cuda", False, "torch sees no GPU")
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    models = {}
    for device in ("cpu", "cuda"):
        model = EncoderDecoderModel(config)
        model.load_canonical(weights)
        for name, adapter in ADAPTERS.items():
            model.add_adapter(name, adapter, seed=1)
        models[device] = model.to(device).eval()
    ids = torch.from_numpy(x["input_ids"])
    mask = torch.from_numpy(x["attention_mask"])
    labels = torch.from_numpy(x["labels"])
    for active in (None, *ADAPTERS):
        out = {}
        for device, model in models.items():
            model.set_active_adapters(active)
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).logits
                seqs = model.generate(ids.to(device), attention_mask=mask.to(device), max_length=20, num_beams=1,
                                      do_sample=False)
            out[device] = logits.cpu().numpy(), seqs.cpu().numpy()
        diff = float(np.abs(out["cpu"][0] - out["cuda"][0]).max())
        check(f"torch logits, adapter {active}", diff < TOL, f"max |Δ| GPU vs CPU {diff:.2e}")
        check(f"torch greedy ids, adapter {active}", np.array_equal(out["cpu"][1], out["cuda"][1]), "GPU == CPU")
    model = models["cuda"]
    base = {k: v.copy() for k, v in model.canonical_state().items()}
    model.train_adapter("lora")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = model(input_ids=ids.cuda(), attention_mask=mask.cuda(), labels=labels.cuda()).loss
    loss.backward()
    opt.step()
    after = model.canonical_state()
    check("torch adapter training on GPU", all(np.array_equal(base[k], after[k]) for k in base), "base weights unchanged")


def flax_check(config, weights, x) -> None:
    import jax

    from encdec_flax import FlaxEncoderDecoderModel

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        check("jax gpu", False, "jax sees no GPU")
        return
    jax.config.update("jax_default_matmul_precision", "highest")  # no TF32 in fp32 matmuls
    outs = {}
    for device in (jax.devices("cpu")[0], gpus[0]):
        with jax.default_device(device):
            model = FlaxEncoderDecoderModel(config, _do_init=False)
            model.load_canonical(weights)
            for name, adapter in ADAPTERS.items():
                model.add_adapter(name, adapter, seed=1)
            for active in (None, *ADAPTERS):
                model.set_active_adapters(active)
                logits = np.asarray(model(x["input_ids"], attention_mask=x["attention_mask"], labels=x["labels"]).logits)
                seqs = np.asarray(model.generate(x["input_ids"], x["attention_mask"], max_length=20).sequences)
                outs[device.platform, active] = logits, seqs
    for active in (None, *ADAPTERS):
        (cpu_logits, cpu_ids), (gpu_logits, gpu_ids) = outs["cpu", active], outs["gpu", active]
        diff = float(np.abs(cpu_logits - gpu_logits).max())
        check(f"flax logits, adapter {active}", diff < TOL, f"max |Δ| GPU vs CPU {diff:.2e}")
        check(f"flax greedy ids, adapter {active}", np.array_equal(cpu_ids, gpu_ids), "GPU == CPU")


def main() -> int:
    config, weights, x = pair()
    for backend, fn in (("torch", torch_check), ("flax", flax_check)):
        if importlib.util.find_spec(backend) is None:
            print(f"skip {backend}: not installed")
            continue
        fn(config, weights, x)
    print("FAILED: " + ", ".join(FAILED) if FAILED else "all GPU checks passed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
