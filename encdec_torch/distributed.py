"""``EncoderDecoderModel`` on torch.distributed: DDP, FSDP2 and full checkpoints.

* :func:`wrap_ddp`: ``DistributedDataParallel`` (every rank holds the whole model).
* :func:`apply_fsdp`: FSDP2 (``torch.distributed.fsdp.fully_shard``) with the wrapping
  policy "one group per transformer layer of each part, then each part, then the root":
  a layer's parameters are all-gathered just before it runs and freed after.  Tied weights
  (word embeddings <-> LM head) stay in one group; a model with ``tie_encoder_decoder``
  shares decoder layers with the encoder, so it is sharded as one root group.
* :func:`apply_tensor_parallel`: Megatron tensor parallelism from the core rule
  (:mod:`encdec.sharding`): its column / row pairs become ``ColwiseParallel`` /
  ``RowwiseParallel`` (``torch.distributed.tensor.parallel``), i.e. DTensor weights
  ``Shard(0)`` / ``Shard(1)``, and each attention module computes its share of the heads.
* :func:`full_canonical_state` / :func:`save_pretrained`: gather the sharded parameters
  into the core's canonical ``{name: numpy}`` -- the ``model.safetensors`` every backend
  and transformers load.

Launch with ``torchrun --nproc_per_node=N script.py`` (``gloo`` on CPUs, ``nccl`` on GPUs);
see docs/distributed.md.  Layouts come from the core rule (:mod:`encdec.sharding`) where
an engine needs one (tensor parallelism): FSDP2 shards every parameter on its first
dimension by itself.
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


#: Attention modules whose head count :func:`apply_tensor_parallel` may divide: they split
#: the projections' outputs into ``self.heads`` heads and hold nothing else per head.
TP_ATTENTION = ("BertSelfAttention", "BartAttention")


def apply_tensor_parallel(model: nn.Module, mesh: Any = None, **plan_kwargs: Any) -> nn.Module:
    """Tensor-parallel ``model`` in place over ``mesh`` (a 1-D ``DeviceMesh``, default all
    ranks) by the core plan :func:`encdec.sharding.sharding_plan`: every column-parallel
    ``nn.Linear`` (query/key/value, first MLP matrix) gets ``ColwiseParallel`` (weight and
    bias ``Shard(0)``, output kept local: this rank's heads / hidden units), every
    row-parallel one (attention output, second MLP matrix) ``RowwiseParallel`` (weight
    ``Shard(1)``, output all-reduced); attention modules then compute ``heads / size`` heads.
    Every rank feeds the same batch; other parameters stay replicated plain tensors.

    ``plan_kwargs`` go to the plan (``strict``).  Word embeddings and the LM head stay
    replicated (``embeddings=None``: vocabulary-parallel lookups are not translated here).
    Parts whose projections are not ``nn.Linear`` (GPT-2's ``Conv1D``, whose fused
    ``c_attn`` would need a head-interleaved split) or whose attention is not one of
    :data:`TP_ATTENTION` are refused, naming the module: shard those with
    :func:`apply_fsdp`.  Returns ``model``."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    from encdec.sharding import COLUMN, ROW, sharding_plan

    if plan_kwargs.setdefault("embeddings", None) is not None:
        raise NotImplementedError("apply_tensor_parallel: embeddings must be None (word embeddings and LM head "
                                  f"replicated); got {plan_kwargs['embeddings']!r}")
    if mesh is None:
        mesh = init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (dist.get_world_size(),))
    size = mesh.size()
    plan = sharding_plan(model.config, 1, size, **plan_kwargs)
    styles: dict[str, Any] = {}
    attention: dict[str, nn.Module] = {}
    for p in plan:
        if p.role not in (COLUMN, ROW) or not p.name.endswith(".weight"):
            continue
        name = p.name.rpartition(".")[0]
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise NotImplementedError(f"apply_tensor_parallel: {name} is a {type(module).__name__}, not nn.Linear; "
                                      "tensor parallelism covers BERT-like and BART parts (use apply_fsdp)")
        styles[name] = ColwiseParallel() if p.role == COLUMN else RowwiseParallel()
        parent_name = name.rpartition(".")[0]
        parent = model.get_submodule(parent_name)
        if p.role == COLUMN and hasattr(parent, "heads"):
            if type(parent).__name__ not in TP_ATTENTION:
                raise NotImplementedError(f"apply_tensor_parallel: attention {parent_name} "
                                          f"({type(parent).__name__}) is not supported (use apply_fsdp)")
            attention[parent_name] = parent
    parallelize_module(model, mesh, styles)
    for module in attention.values():
        module.heads //= size  # the plan split these projections only where size divides the heads
    return model
