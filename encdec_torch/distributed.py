"""``EncoderDecoderModel`` on torch.distributed: DDP, FSDP2 and full checkpoints.

* :func:`wrap_ddp`: ``DistributedDataParallel`` (every rank holds the whole model).
* :func:`apply_fsdp`: FSDP2 (``torch.distributed.fsdp.fully_shard``) with the wrapping
  policy "one group per transformer layer of each part, then each part, then the root":
  a layer's parameters are all-gathered just before it runs and freed after.  Tied weights
  (word embeddings <-> LM head) stay in one group; a model with ``tie_encoder_decoder``
  shares decoder layers with the encoder, so it is sharded as one root group.
* :func:`full_canonical_state` / :func:`save_pretrained`: gather the sharded parameters
  into the core's canonical ``{name: numpy}`` -- the ``model.safetensors`` every backend
  and transformers load.

Launch with ``torchrun --nproc_per_node=N script.py`` (``gloo`` on CPUs, ``nccl`` on GPUs);
see docs/distributed.md.  Layouts come from the core rule (:mod:`encdec.sharding`) where
an engine needs one: FSDP2 shards every parameter on its first dimension by itself.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from encdec import pretrained
from encdec.layout import from_backend, TORCH_LAYOUT
from encdec_torch.models.common import tensor_to_numpy

logger = logging.getLogger(__name__)

#: ``nn.ModuleList`` attribute names that hold a part's transformer layers.
LAYER_LISTS = ("layer", "layers", "h")


def init_process_group(backend: str | None = None) -> tuple[int, int]:
    """Start torch.distributed from torchrun's environment (``gloo`` without CUDA, else
    ``nccl``) unless already started; returns ``(rank, world_size)``."""
    if not dist.is_initialized():
        for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(f"environment variable {var} is not set: launch with torchrun (or set it)")
        dist.init_process_group(backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    return dist.get_rank(), dist.get_world_size()


def layer_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every transformer layer of the encoder and decoder: the
    elements of their ``layer`` / ``layers`` / ``h`` module lists."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rpartition(".")[2] in LAYER_LISTS:
            out += [(f"{name}.{i}", layer) for i, layer in enumerate(module)]
    return out


def _shares_parts(model: nn.Module) -> bool:
    spec = getattr(model, "spec", None)
    return spec is not None and any(t.startswith("decoder.") and s.startswith("encoder.") for t, s in spec.ties.items())


def apply_fsdp(model: nn.Module, mesh: Any = None, **fsdp_kwargs: Any) -> nn.Module:
    """Shard ``model`` in place with FSDP2: ``fully_shard`` on each layer of each part, then
    on ``encoder``, ``decoder`` and the root (``mesh``: a 1-D ``DeviceMesh``, default all
    ranks; ``fsdp_kwargs`` go to ``fully_shard``, e.g. ``mp_policy``).  Returns ``model``."""
    from torch.distributed.fsdp import fully_shard

    kwargs = dict(fsdp_kwargs, mesh=mesh) if mesh is not None else dict(fsdp_kwargs)
    if _shares_parts(model):
        logger.info("tie_encoder_decoder: decoder layers are the encoder's; sharding the model as one group")
    else:
        for _, layer in layer_modules(model):
            fully_shard(layer, **kwargs)
        for part in ("encoder", "decoder"):
            if isinstance(getattr(model, part, None), nn.Module):
                fully_shard(getattr(model, part), **kwargs)
    fully_shard(model, **kwargs)
    return model


def wrap_ddp(model: nn.Module, **ddp_kwargs: Any) -> nn.parallel.DistributedDataParallel:
    """``DistributedDataParallel(model)`` on the current device (CUDA: this rank's).  An
    encoder pooler (BERT-like encoders keep HF's) gets no gradient in the composite model,
    so ``find_unused_parameters`` defaults to true when there is one."""
    spec = getattr(model, "spec", None)
    if spec is not None:
        ddp_kwargs.setdefault("find_unused_parameters", any(n.startswith("encoder.pooler.") for n in spec.params))
    if torch.cuda.is_available() and "device_ids" not in ddp_kwargs:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        model.to(device)
        ddp_kwargs["device_ids"] = [device.index]
    return nn.parallel.DistributedDataParallel(model, **ddp_kwargs)


def full_canonical_state(model: nn.Module) -> dict[str, np.ndarray]:
    """Canonical ``{name: numpy}`` of a DDP-wrapped, FSDP2-sharded or plain model, gathered
    from all ranks to host memory on rank 0 (a collective: every rank must call it; the
    other ranks get ``{}``)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if dist.is_initialized():
        state = get_model_state_dict(inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                     broadcast_from_rank0=False))
    else:
        state = inner.state_dict()
    spec = inner.spec
    if not state:
        return {}
    return from_backend({p.name: tensor_to_numpy(state[p.name]) for p in spec.untied}, spec, TORCH_LAYOUT)


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, **kwargs: Any) -> None:
    """Gather the full weights (all ranks call this) and write a checkpoint in the core's
    format from rank 0 only (``kwargs``: ``format``, ``max_shard_size``)."""
    weights = full_canonical_state(model)
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not dist.is_initialized() or dist.get_rank() == 0:
        pretrained.save_pretrained(save_directory, inner.config, weights, inner.generation_config, **kwargs)
    if dist.is_initialized():
        dist.barrier()
