"""The core sharding rule (:mod:`encdec.sharding`) as ``jax.sharding`` objects.

A :class:`jax.sharding.Mesh` with axes ``("data", "model")``; parameters get a
``NamedSharding`` whose ``PartitionSpec`` is the core plan's placement in Flax layout
(kernels [in, out], so split dimensions flip), batches split their first dimension over
``data``.  Everything after that is plain JAX: ``jax.jit`` compiles the train step and
``generate`` for the sharded arrays (GSPMD inserts the collectives), optax state created
by a jitted ``optimizer.init`` follows the parameters' shardings, and checkpoints are
gathered to the core's canonical ``{name: numpy}`` (``save_pretrained`` does it).

    mesh = make_mesh(data=2, model=4)
    params = shard_params(model, mesh)
    batch = shard_batch(batch, mesh)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from encdec.sharding import DATA, MODEL, ShardingPlan, backend_axes, sharding_plan
from encdec_flax.models import FLAX_LAYOUT

__all__ = ["make_mesh", "plan_for", "param_shardings", "shard_params", "optimizer_state_shardings", "batch_sharding",
           "shard_batch", "gather"]


def make_mesh(data: int = 1, model: int = 1, devices: Sequence[Any] | None = None) -> Mesh:
    """A ``data x model`` mesh over the first ``data * model`` of ``devices`` (default
    ``jax.devices()``; on several hosts, all hosts' devices)."""
    devices = list(jax.devices() if devices is None else devices)
    if data < 1 or model < 1 or data * model > len(devices):
        raise ValueError(f"a mesh of data={data} x model={model} needs {data * model} devices; {len(devices)} available")
    return Mesh(np.asarray(devices[: data * model]).reshape(data, model), (DATA, MODEL))


def plan_for(model: Any, mesh: Mesh, **kwargs: Any) -> ShardingPlan:
    """The core plan for ``model.config`` on ``mesh`` (``embeddings``, ``fsdp``, ``strict``
    as in :func:`encdec.sharding.plan_sharding`)."""
    return sharding_plan(model.config, mesh.shape[DATA], mesh.shape[MODEL], **kwargs)


def param_shardings(model: Any, mesh: Mesh, params: Any = None, plan: ShardingPlan | None = None, **kwargs: Any) -> Any:
    """A pytree like ``params`` (default ``model.params``) of ``NamedSharding``: spec
    parameters as the plan places them, anything else (adapter weights) replicated."""
    params = model.params if params is None else params
    plan = plan_for(model, mesh, **kwargs) if plan is None else plan
    by_path = {
        tuple(FLAX_LAYOUT.backend_name(p.name, p.kind).split(".")): PartitionSpec(*backend_axes(p, FLAX_LAYOUT.transpose))
        for p in plan
    }
    flat = flatten_dict(params)
    return unflatten_dict({path: NamedSharding(mesh, by_path.get(path, PartitionSpec())) for path in flat})


def shard_params(model: Any, mesh: Mesh, params: Any = None, plan: ShardingPlan | None = None, **kwargs: Any) -> Any:
    """``params`` (default ``model.params``) placed on ``mesh`` by the core plan."""
    params = model.params if params is None else params
    return jax.device_put(params, param_shardings(model, mesh, params, plan, **kwargs))


def _key(entry: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def optimizer_state_shardings(optimizer: Any, params: Any, shardings: Any) -> Any:
    """Shardings for ``optimizer.init(params)`` (an optax ``GradientTransformation``):
    every parameter-shaped leaf (Adam's moments, ...) as its parameter, the rest (step
    counts) replicated.  Pass them as ``out_shardings`` of the jitted init and step."""
    by_path = {tuple(_key(k) for k in path): s for path, s in jax.tree_util.tree_flatten_with_path(shardings)[0]}
    shapes = {tuple(_key(k) for k in path): np.shape(x) for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    mesh = next(iter(by_path.values())).mesh

    def pick(path, leaf):
        keys = tuple(_key(k) for k in path)
        for start in range(len(keys)):
            if keys[start:] in by_path and shapes[keys[start:]] == leaf.shape:
                return by_path[keys[start:]]
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(pick, jax.eval_shape(optimizer.init, params))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split the first (batch) dimension over ``data``; replicated over ``model``."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Every array of ``batch`` split on its first dimension over the data axis."""
    size = mesh.shape[DATA]
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] % size:
            raise ValueError(f"batch[{key!r}] of shape {value.shape}: its first dimension must be divisible by the "
                             f"mesh's data axis ({size})")
        out[key] = jax.device_put(value, batch_sharding(mesh))
    return out


def gather(params: Any) -> Any:
    """``params`` as host numpy arrays, gathered from every device (and every host on a
    multi-host mesh) -- what ``canonical_state`` / ``save_pretrained`` need."""
    from jax.experimental import multihost_utils

    def to_host(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree_util.tree_map(to_host, params)
