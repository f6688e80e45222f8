"""The one sharding rule: where each parameter lives on a (data, model) device mesh.

Derived from the parameter spec alone (canonical names, PyTorch-layout shapes, kinds), so
every registered architecture gets a plan without per-architecture tables.  A plan says,
for each canonical parameter, which mesh axis (if any) splits each of its dimensions *in
PyTorch layout*; backends translate it (:func:`backend_axes` flips transposed kinds) into
their own objects: ``jax.sharding.PartitionSpec``, torch DTensor placements, ...

Tensor parallelism (the ``model`` axis) follows Megatron-LM's pairs, so a block's
activations need one reduction and no other communication:

* **column** (split the output dimension): attention query/key/value projections (fused
  ``c_attn`` / ``q_attn`` too) and the first MLP matrix; their biases are split with them.
  A fused ``c_attn`` [d, 3d] is split in contiguous blocks: exact under GSPMD / DTensor
  (they redistribute as needed), but a hand-written Megatron kernel would want each
  device's block to hold whole heads of q, k and v (a head-interleaved layout).
* **row** (split the input dimension): the attention output projection and the second MLP
  matrix; their biases stay replicated (added once, after the reduction).
* **embeddings**: the word-embedding table and the LM head that reads it (tied or not)
  split on the vocabulary (``embeddings="vocab"``, the default) or on the hidden axis
  (``embeddings="hidden"``); position / token-type tables are small and replicated.
* norms, the pooler, projections between widths and any other parameter: replicated.

A dimension the model axis does not divide (or an attention block whose head count it
does not divide) falls back to replication for that parameter -- the fallback is logged
with the parameter and the sizes, and ``strict=True`` raises instead.  Tied parameters
take their source's placement.

With ``fsdp=True`` each parameter is also split over the ``data`` axis (ZeRO-3 / FSDP
style) on its largest dimension that is still whole and divisible by the data size.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from encdec.specs import BIAS, CONV1D, EMBEDDING, LINEAR, ModelSpec, encoder_decoder_spec

logger = logging.getLogger(__name__)

DATA, MODEL = "data", "model"
REPLICATED, COLUMN, ROW, VOCAB, HIDDEN = "replicated", "column", "row", "vocab", "hidden"

#: Module-path suffixes (leaf ``.weight``/``.bias`` removed) of column-parallel matrices.
_COLUMN = re.compile(
    r"(^|\.)(query|key|value|q_proj|k_proj|v_proj|query_proj|key_proj|value_proj|c_attn|q_attn"
    r"|intermediate\.dense|intermediate|fc1|c_fc)$"
)
#: ... of row-parallel matrices (attention output and second MLP matrix).
_ROW = re.compile(
    r"(^|\.)(attention\.output\.dense|crossattention\.output\.dense|layers?\.\d+\.output\.dense|out_proj|fc2"
    r"|attn\.c_proj|crossattention\.c_proj|mlp\.c_proj|feed_forward\.output)$"
)
#: Attention projections in and out: the model axis must divide their head count too.
_ATTENTION = re.compile(
    r"(^|\.)(query|key|value|q_proj|k_proj|v_proj|query_proj|key_proj|value_proj|c_attn|q_attn|attention\.output\.dense"
    r"|out_proj|attn\.c_proj|crossattention\.c_proj)$"
)
#: Word-embedding tables and the LM heads that produce vocabulary logits.
_WORD_EMBEDDING = re.compile(r"(^|\.)(word_embeddings|wte|embed_tokens)$")
_LM_HEAD = re.compile(r"(^|\.)(lm_head|lm_head\.decoder|predictions\.decoder)$")
_LM_BIAS = re.compile(r"(^|\.)(lm_head|predictions)\.bias$|(^|\.)(lm_head|predictions)\.decoder\.bias$")

#: config attributes holding a part's attention-head count, by model family.
_HEAD_ATTRS = ("num_attention_heads", "n_head", "decoder_attention_heads", "num_decoder_attention_heads")


@dataclass(frozen=True)
class Placement:
    """Where one parameter lives.  ``axes[i]`` names the mesh axis splitting dimension
    ``i`` of the PyTorch-layout shape (``None``: whole); ``role`` says why
    (column/row/vocab/hidden/replicated); ``note`` explains a fallback to replication."""

    name: str
    shape: tuple[int, ...]
    kind: str
    axes: tuple[str | None, ...]
    role: str
    note: str = ""

    @property
    def model_dim(self) -> int | None:
        """The dimension split over the model axis, or ``None``."""
        return self.axes.index(MODEL) if MODEL in self.axes else None

    @property
    def data_dim(self) -> int | None:
        return self.axes.index(DATA) if DATA in self.axes else None

    def local_shape(self, data_size: int, model_size: int) -> tuple[int, ...]:
        """Shape of the block one device holds."""
        size = {DATA: data_size, MODEL: model_size, None: 1}
        return tuple(s // size[a] for s, a in zip(self.shape, self.axes))


@dataclass
class ShardingPlan:
    """``placements``: canonical name -> :class:`Placement` (tie targets included)."""

    placements: dict[str, Placement]
    data_size: int
    model_size: int
    fallbacks: list[str]

    def __getitem__(self, name: str) -> Placement:
        return self.placements[name]

    def __iter__(self):
        return iter(self.placements.values())

    def __len__(self) -> int:
        return len(self.placements)

    def memory(self, spec: ModelSpec, param_bytes: int = 4, grad_bytes: int = 4, optimizer_states: int = 2,
               state_bytes: int = 4) -> dict[str, int]:
        """Bytes one device holds for parameters, gradients and optimizer state (Adam:
        ``optimizer_states=2`` float32 moments) under this plan; tie targets counted once."""
        elements = 0
        for p in spec.untied:
            n = 1
            for s in self.placements[p.name].local_shape(self.data_size, self.model_size):
                n *= s
            elements += n
        return {"params": elements * param_bytes, "grads": elements * grad_bytes,
                "optimizer": elements * optimizer_states * state_bytes}


def _module(name: str) -> str:
    return name.rpartition(".")[0]


def _heads_for(name: str, heads: Mapping[str, int]) -> int | None:
    for prefix, n in heads.items():
        if name.startswith(prefix):
            return n
    return None


def _role(p, embeddings: str | None) -> tuple[str, int | None]:
    """(role, the PyTorch-layout dimension the model axis splits) from names and kinds."""
    module = _module(p.name)
    out_dim, in_dim = {LINEAR: (0, 1), CONV1D: (1, 0)}.get(p.kind, (None, None))
    if p.kind in (LINEAR, CONV1D):
        if _COLUMN.search(module):
            return COLUMN, out_dim
        if _ROW.search(module):
            return ROW, in_dim
        if p.kind == LINEAR and _LM_HEAD.search(module) and embeddings:
            return (VOCAB, 0) if embeddings == VOCAB else (HIDDEN, 1)
        return REPLICATED, None
    if p.kind == EMBEDDING and _WORD_EMBEDDING.search(module) and embeddings:
        return (VOCAB, 0) if embeddings == VOCAB else (HIDDEN, 1)
    if p.kind == BIAS:
        if p.name.endswith(".bias") and _COLUMN.search(module):
            return COLUMN, 0
        if _LM_BIAS.search(p.name) and embeddings == VOCAB:
            return VOCAB, 0
    return REPLICATED, None


def plan_sharding(spec: ModelSpec, data_size: int = 1, model_size: int = 1, *, heads: Mapping[str, int] | None = None,
                  embeddings: str | None = VOCAB, fsdp: bool = False, strict: bool = False) -> ShardingPlan:
    """Placement of every parameter of ``spec`` on a ``data_size x model_size`` mesh.

    ``heads``: canonical-name prefix -> attention heads of that part (attention
    projections split only when the model axis divides it; see :func:`sharding_plan`,
    which fills it from a config).  ``embeddings``: ``"vocab"``, ``"hidden"`` or ``None``
    (replicate word embeddings and LM head).  ``strict``: raise instead of falling back.
    """
    for label, size in (("data_size", data_size), ("model_size", model_size)):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{label} must be a positive int, got {size!r}")
    if embeddings not in (VOCAB, HIDDEN, None):
        raise ValueError(f"embeddings must be 'vocab', 'hidden' or None, got {embeddings!r}")
    heads = dict(heads or {})
    placements: dict[str, Placement] = {}
    fallbacks: list[str] = []

    def fall_back(p, message: str) -> None:
        text = f"{p.name} {p.shape}: {message}; replicated"
        if strict:
            raise ValueError(f"cannot shard {text[: -len('; replicated')]} (strict=True)")
        fallbacks.append(text)
        logger.warning("sharding: %s", text)

    for p in spec:
        if p.name in spec.ties:
            continue
        axes: list[str | None] = [None] * len(p.shape)
        role, dim = _role(p, embeddings) if model_size > 1 else (REPLICATED, None)
        note = ""
        if dim is not None:
            n_heads = _heads_for(p.name, heads) if _ATTENTION.search(_module(p.name)) else None
            if p.shape[dim] % model_size:
                note = f"{role} split of dimension {dim} (size {p.shape[dim]}) not divisible by model axis size {model_size}"
            elif n_heads is not None and n_heads % model_size:
                note = f"{role} split over attention heads ({n_heads}) not divisible by model axis size {model_size}"
            if note:
                fall_back(p, note)
                role = REPLICATED
            else:
                axes[dim] = MODEL
        if fsdp and data_size > 1:
            free = [i for i in range(len(p.shape)) if axes[i] is None and p.shape[i] % data_size == 0]
            if free:
                axes[max(free, key=lambda i: p.shape[i])] = DATA
        placements[p.name] = Placement(p.name, p.shape, p.kind, tuple(axes), role, note)
    for tied, source in spec.ties.items():
        src = placements[source]
        if spec[tied].shape != src.shape:
            raise ValueError(f"tied {tied} {spec[tied].shape} and its source {source} {src.shape} differ in shape")
        placements[tied] = Placement(tied, src.shape, spec[tied].kind, src.axes, src.role, src.note)
    return ShardingPlan({p.name: placements[p.name] for p in spec}, data_size, model_size, fallbacks)


def part_heads(config) -> dict[str, int]:
    """``{"encoder.": heads, "decoder.": heads}`` of a composite config (the attribute each
    family uses for its head count; parts without one are left out)."""
    out = {}
    for role in ("encoder", "decoder"):
        part = getattr(config, role)
        for attr in _HEAD_ATTRS:
            n = getattr(part, attr, None)
            if isinstance(n, int) and not isinstance(n, bool):
                out[f"{role}."] = n
                break
    return out


def sharding_plan(config, data_size: int = 1, model_size: int = 1, **kwargs) -> ShardingPlan:
    """:func:`plan_sharding` for a composite ``EncoderDecoderConfig`` (heads from the config)."""
    return plan_sharding(encoder_decoder_spec(config), data_size, model_size, heads=part_heads(config), **kwargs)


def backend_axes(placement: Placement, transposed_kinds: Iterable[str]) -> tuple[str | None, ...]:
    """``placement.axes`` in a backend's layout: reversed for 2-D kinds the backend stores
    transposed (``Layout.transpose``)."""
    if placement.kind in set(transposed_kinds) and len(placement.axes) == 2:
        return placement.axes[::-1]
    return placement.axes


def describe(plan: ShardingPlan) -> str:
    """One line per role with counts; the fallbacks listed after."""
    counts: dict[str, int] = {}
    for p in plan:
        counts[p.role] = counts.get(p.role, 0) + 1
    lines = [f"mesh data={plan.data_size} x model={plan.model_size}: "
             + ", ".join(f"{role} {n}" for role, n in sorted(counts.items()))]
    lines += [f"  fallback: {text}" for text in plan.fallbacks]
    return "\n".join(lines)
