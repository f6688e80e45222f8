"""Framework-free pieces of the training workflows: padding tokenised examples into batches,
checking a dataset's batch layout before the first step, and the mixed-precision policies
the backends accept.  Backends wrap these (``TFEncoderDecoderModel.prepare_tf_dataset``,
Keras ``fit``'s dataset check, ...); nothing here imports a framework."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from encdec.labels import IGNORE_INDEX

#: the batch keys a composite model's forward/call takes, besides ``decoder_``-prefixed part inputs.
BATCH_KEYS = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "labels",
              "token_type_ids", "position_ids", "decoder_token_type_ids", "decoder_position_ids")
_MASKS = ("attention_mask", "decoder_attention_mask")

#: Keras dtype policies the TF backend trains under (variables stay float32; the mixed ones
#: compute in float16/bfloat16 with float32 softmax, layer-norm statistics and loss).
SUPPORTED_POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")


#: Policies a TF model may be built and run under (inference): the half ones hold the
#: weights themselves in bfloat16/float16 (``TFEncoderDecoderModel(dtype="bfloat16")``).
HALF_POLICIES = ("bfloat16", "float16")


def check_policy(name: str, where: str, training: bool = True) -> None:
    """Refuse a dtype policy we do not implement, by name (``training=False``: building and
    running a model, where half-precision weights are fine; training keeps float32 ones)."""
    if name not in SUPPORTED_POLICIES and (training or name not in HALF_POLICIES):
        raise ValueError(
            f"{where}: dtype policy {name!r} is not supported; use one of {', '.join(SUPPORTED_POLICIES)} "
            "(encdec keeps float32 variables, so low-precision training is the mixed_* policies)"
        )


def check_batch_layout(shapes: Mapping[str, Sequence[int | None] | None], where: str, need_labels: bool) -> None:
    """Check a dataset's batch keys and shapes before any step runs.

    ``shapes`` is ``{key: shape}`` of one batch (``None`` for unknown dimensions, as in a
    ``tf.data`` element spec).  Every key must be a model input, ids/masks/labels must be
    ``[batch, length]``, each mask must match its ids' length, and with ``need_labels`` a
    ``labels`` entry must be there."""
    unknown = sorted(k for k in shapes if k not in BATCH_KEYS)
    if unknown:
        raise ValueError(
            f"{where}: unexpected batch key(s) {unknown}; batches are dicts with keys among {', '.join(BATCH_KEYS)} "
            "(or (inputs, labels) pairs)"
        )
    if need_labels and "labels" not in shapes:
        raise ValueError(f"{where}: batches need `labels` [batch, target_length] (a dict key or the y of (x, y)); "
                         f"got keys {sorted(shapes)}")
    if "input_ids" not in shapes:
        raise ValueError(f"{where}: batches need `input_ids` [batch, source_length]; got keys {sorted(shapes)}")
    for key, shape in shapes.items():
        if shape is not None and len(shape) != 2:
            raise ValueError(f"{where}: batch key `{key}` must have shape [batch, length], got shape {list(shape)}")
    pairs = (("attention_mask", "input_ids"), ("decoder_attention_mask", "decoder_input_ids"),
             ("decoder_input_ids", "labels"), ("decoder_attention_mask", "labels"))
    for key, ref in pairs:
        a, b = shapes.get(key), shapes.get(ref)
        if a is not None and b is not None and a[1] is not None and b[1] is not None and a[1] != b[1]:
            raise ValueError(f"{where}: batch key `{key}` has length {a[1]} but `{ref}` has length {b[1]}; "
                             f"expected `{key}` of shape [batch, {b[1]}]")


def pad_examples(examples: Iterable[Mapping[str, Sequence[int]]] | Mapping[str, Sequence[Sequence[int]]],
                 pad_token_id: int, pad_to_multiple_of: int | None = None) -> dict[str, np.ndarray]:
    """Tokenised examples (a list of dicts of token lists, or a dict of lists, e.g. a
    ``datasets.Dataset[:]``) -> ``{key: int32 array [n, longest]}``, right-padded: ids with
    ``pad_token_id``, masks with 0, ``labels`` with -100 (ignored by the loss).  Keys must be
    model inputs (others, such as raw text columns, raise)."""
    if isinstance(examples, Mapping):
        keys = list(examples)
        rows = [dict(zip(keys, values)) for values in zip(*(examples[k] for k in keys))]
    else:
        rows = list(examples)
    if not rows:
        raise ValueError("pad_examples: no examples")
    keys = list(rows[0])
    check_batch_layout({k: None for k in keys}, "pad_examples", need_labels=False)
    out = {}
    for key in keys:
        try:
            seqs = [np.asarray(row[key], dtype=np.int64) for row in rows]
        except KeyError:
            raise ValueError(f"pad_examples: an example lacks key `{key}` (the first has {keys})") from None
        if any(s.ndim != 1 for s in seqs):
            raise ValueError(f"pad_examples: `{key}` must be one token list per example (shape [length])")
        length = max(len(s) for s in seqs)
        if pad_to_multiple_of:
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        fill = IGNORE_INDEX if key == "labels" else 0 if key in _MASKS else pad_token_id
        arr = np.full((len(seqs), length), fill, dtype=np.int32)
        for i, s in enumerate(seqs):
            arr[i, :len(s)] = s
        out[key] = arr
    return out


def batch_from_data(data: Any, where: str) -> tuple[Any, Any, Any]:
    """``data`` as Keras hands a step (``x``, ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)``)
    -> ``(x, y, sample_weight)``."""
    if isinstance(data, (tuple, list)):
        if not 1 <= len(data) <= 3:
            raise ValueError(f"{where}: a batch is x, (x, y) or (x, y, sample_weight); got a tuple of {len(data)}")
        return tuple(data) + (None,) * (3 - len(data))
    return data, None, None


# --- one training run per backend, compared (``encdec train-compare``) ---------------------
@dataclass(frozen=True)
class AdamWSettings:
    """AdamW hyper-parameters, given unchanged to ``torch.optim.AdamW``, ``optax.adamw`` and
    ``keras.optimizers.AdamW`` (decoupled weight decay on every parameter in all three).

    Keras puts ``eps`` inside the bias correction (Kingma & Ba's "epsilon hat"), torch and
    optax outside it; the two agree when ``sqrt(v_hat)`` is much larger than ``eps``."""

    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ValueError(f"AdamW: learning_rate must be > 0, got {self.learning_rate}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"AdamW: {name} must be in [0, 1), got {getattr(self, name)}")
        if not self.eps > 0:
            raise ValueError(f"AdamW: eps must be > 0, got {self.eps}")
        if not self.weight_decay >= 0:
            raise ValueError(f"AdamW: weight_decay must be >= 0, got {self.weight_decay}")


def without_dropout(config: Any) -> Any:
    """A copy of an encoder-decoder config with every dropout probability of its parts set to
    0 (``*dropout*`` and GPT-2's ``*_pdrop`` float attributes): training is then deterministic
    and the same in every backend."""
    import copy

    config = copy.deepcopy(config)
    for part in (config, getattr(config, "encoder", None), getattr(config, "decoder", None)):
        if part is None:
            continue
        for key, value in list(vars(part).items()):
            if ("dropout" in key or key.endswith("_pdrop")) and isinstance(value, float) and not isinstance(value, bool):
                setattr(part, key, 0.0)
    return config


def comparison_batches(config: Any, steps: int, batch_size: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``steps`` deterministic training batches (ids, mask and labels; the second row padded,
    its padded labels -100), the same numpy arrays for every backend."""
    from encdec.runner import sample_inputs

    if steps < 1 or batch_size < 1:
        raise ValueError(f"comparison_batches: steps and batch_size must be >= 1, got {steps} and {batch_size}")
    return [sample_inputs(config, batch=batch_size, src_len=10, tgt_len=8, seed=seed * 100_003 + step)
            for step in range(steps)]


def check_loss_curve(losses: Any, steps: int, backend: str) -> list[float]:
    """A backend's losses as ``steps`` finite floats, or an error naming the backend."""
    losses = [float(x) for x in losses]
    if len(losses) != steps:
        raise ValueError(f"{backend}: {len(losses)} losses for {steps} steps")
    if not np.all(np.isfinite(losses)):
        raise FloatingPointError(f"{backend}: a training loss is not finite: {losses}")
    return losses


def curve_differences(curves: Mapping[str, Sequence[float]]) -> list[float]:
    """Per step, the largest |loss difference| between any two backends (0 with one)."""
    table = np.asarray([list(c) for c in curves.values()], dtype=np.float64)
    return list(table.max(axis=0) - table.min(axis=0))


def write_curves_csv(path: str, curves: Mapping[str, Sequence[float]], diffs: Sequence[float]) -> None:
    """``step, loss_<backend>..., max_abs_diff`` (one row per step, losses to 9 significant digits)."""
    names = list(curves)
    lines = [",".join(["step", *(f"loss_{n}" for n in names), "max_abs_diff"])]
    for step, diff in enumerate(diffs, 1):
        lines.append(",".join([str(step), *(f"{curves[n][step - 1]:.9g}" for n in names), f"{diff:.3e}"]))
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
