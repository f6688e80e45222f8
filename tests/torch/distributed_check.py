"""Launched by tests/torch/test_distributed.py as ``torchrun --nproc_per_node=2`` (gloo):
two AdamW steps under DDP and under FSDP2 on half the global batch per rank, against the
same steps in one process on the whole batch.  Rank 0 prints one JSON line and writes the
checkpoint gathered from the FSDP2 run under argv[1].  Then tensor parallelism (the core
plan as ColwiseParallel / RowwiseParallel) on a bert2bert model: every rank the whole batch."""
import json
import os
import sys

import numpy as np
import torch
import torch.distributed as dist

from encdec import BertConfig, EncoderDecoderConfig, GPT2Config
from encdec_torch import EncoderDecoderModel
from encdec_torch.distributed import (apply_fsdp, apply_tensor_parallel, full_canonical_state, init_process_group,
                                      layer_modules, save_pretrained, wrap_ddp)

torch.manual_seed(0)
rank, world = init_process_group("gloo")
out_dir = sys.argv[1]
config = EncoderDecoderConfig.from_encoder_decoder_configs(
    BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2),
)
config.decoder_start_token_id, config.pad_token_id = 3, 0
rng = np.random.default_rng(0)
batch = {"input_ids": rng.integers(4, 100, (4, 12)), "attention_mask": np.ones((4, 12), np.int64),
         "labels": rng.integers(4, 100, (4, 7))}
batch["attention_mask"][1, 9:] = 0
batch["labels"][:, 5:] = -100  # same number of labels per row: the mean of the ranks' means is the global mean
batch = {k: torch.as_tensor(v) for k, v in batch.items()}
local = {k: v.chunk(world)[rank] for k, v in batch.items()}


def train(model, data):
    model.eval()  # dropout off: the ranks' dropout masks could not match one process's
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(2):
        loss = model(**data).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.detach())
    return losses


def global_losses(losses):
    out = []
    for loss in losses:
        loss = loss.full_tensor() if hasattr(loss, "full_tensor") else loss
        dist.all_reduce(loss)
        out.append(float(loss) / world)
    return out


reference = EncoderDecoderModel(config, seed=0)
ref_losses = [float(x) for x in train(reference, batch)]
ref_state = reference.canonical_state()


def diff(state):
    if rank:
        return None  # the gathered state lives on rank 0
    return max(float(np.max(np.abs(state[k] - ref_state[k]))) for k in ref_state)


report = {"single_losses": ref_losses}
ddp = wrap_ddp(EncoderDecoderModel(config, seed=0))
losses = global_losses(train(ddp, local))
report["ddp"] = {"losses": losses, "max_loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
                 "max_param_diff": diff(full_canonical_state(ddp))}

fsdp = apply_fsdp(EncoderDecoderModel(config, seed=0))
shard = fsdp.encoder.encoder.layer[0].attention.self.query.weight
losses = global_losses(train(fsdp, local))
state = full_canonical_state(fsdp)
report["fsdp2"] = {"losses": losses, "max_loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
                   "max_param_diff": diff(state), "layers_wrapped": len(layer_modules(fsdp)),
                   "query_local_shape": list(shard.to_local().shape), "query_type": type(shard).__name__}
save_pretrained(fsdp, os.path.join(out_dir, "ckpt"))

# tensor parallel: GPT-2's fused Conv1D projections are not covered, so a bert2bert model
tp_config = EncoderDecoderConfig.from_encoder_decoder_configs(config.encoder, BertConfig(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
tp_config.decoder_start_token_id, tp_config.pad_token_id = 3, 0
tp_reference = EncoderDecoderModel(tp_config, seed=0)
ref_losses, ref_state = [float(x) for x in train(tp_reference, batch)], tp_reference.canonical_state()
tp = apply_tensor_parallel(EncoderDecoderModel(tp_config, seed=0))
query = tp.decoder.bert.encoder.layer[0].crossattention.self
losses = [float(x) for x in train(tp, batch)]  # outputs are whole tensors on every rank
report["tp"] = {"losses": losses, "max_loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
                "max_param_diff": diff(full_canonical_state(tp)), "heads": query.heads,
                "query_local_shape": list(query.query.weight.to_local().shape),
                "output_local_shape": list(tp.encoder.encoder.layer[0].output.dense.weight.to_local().shape)}
if rank == 0:
    fsdp_logits = EncoderDecoderModel.from_pretrained(os.path.join(out_dir, "ckpt")).eval()(**batch).logits
    np.savez(os.path.join(out_dir, "batch_logits.npz"), logits=fsdp_logits.detach().numpy(),
             **{k: v.numpy() for k, v in batch.items()})
    print("REPORT " + json.dumps(report), flush=True)
dist.destroy_process_group()
