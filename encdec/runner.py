"""Drive any installed backend through numpy in, numpy out.

The conformance suite and ``encdec compare`` use this to run the same checkpoint and
inputs through every backend.  Backends are imported lazily, by name.
"""
from __future__ import annotations

import importlib
import time
from typing import Any, Mapping

import numpy as np

from encdec.registry import BACKEND_FRAMEWORKS, available_backends

#: backend -> (package, model class name).
MODEL_CLASSES = {
    "torch": ("encdec_torch", "EncoderDecoderModel"),
    "tf": ("encdec_tf", "TFEncoderDecoderModel"),
    "flax": ("encdec_flax", "FlaxEncoderDecoderModel"),
}


def model_class(backend: str) -> Any:
    if backend not in MODEL_CLASSES:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(MODEL_CLASSES)}")
    if backend not in available_backends():
        raise ImportError(
            f"backend {backend!r} needs {BACKEND_FRAMEWORKS[backend]}, which is not installed "
            f"(pip install -c constraints.txt 'encdec[{backend}]')"
        )
    package, name = MODEL_CLASSES[backend]
    return getattr(importlib.import_module(package), name)


def to_numpy(x: Any) -> Any:
    """Framework array (or nested tuple of them) -> numpy; fp16/bf16 widened to fp32."""
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return type(x)(to_numpy(v) for v in x)
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:
            x = x.float()
        return x.numpy()
    arr = np.asarray(x)
    if arr.dtype.kind == "V" or (arr.dtype.kind == "f" and arr.dtype.itemsize < 4) or str(arr.dtype) == "bfloat16":
        arr = arr.astype(np.float32)
    return arr


class Runner:
    """One backend's model behind a numpy interface."""

    def __init__(self, backend: str, model: Any) -> None:
        self.backend = backend
        self.model = model
        if backend == "torch":
            model.eval()

    @classmethod
    def from_weights(cls, backend: str, config: Any, weights: Mapping[str, np.ndarray]) -> "Runner":
        model = model_class(backend)(config=config)
        model.load_canonical(weights)
        return cls(backend, model)

    @classmethod
    def from_pretrained(cls, backend: str, name_or_path: str, **kwargs: Any) -> "Runner":
        return cls(backend, model_class(backend).from_pretrained(name_or_path, **kwargs))

    def _native(self, arr: np.ndarray | None) -> Any:
        if arr is None or self.backend != "torch":
            return arr
        import torch

        return torch.from_numpy(np.ascontiguousarray(arr))

    def forward(self, **inputs: Any) -> dict[str, Any]:
        """Run the model; every output field comes back as numpy (tuples kept)."""
        native = {k: self._native(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
        if self.backend == "torch":
            import torch

            with torch.no_grad():
                out = self.model(**native)
        else:
            out = self.model(**native)
        return {k: to_numpy(v) for k, v in out.items() if k != "past_key_values"}

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        if self.backend == "torch":
            import torch

            with torch.no_grad():
                out = self.model.generate(self._native(input_ids), attention_mask=self._native(attention_mask), **kwargs)
        elif self.backend == "flax":  # compared with transformers' PyTorch ids: its trimmed shape
            out = self.model.generate(input_ids, attention_mask=attention_mask, pad_to_max_length=False, **kwargs)
        else:
            out = self.model.generate(input_ids, attention_mask=attention_mask, **kwargs)
        return to_numpy(getattr(out, "sequences", out)).astype(np.int64)

    def canonical_state(self) -> dict[str, np.ndarray]:
        return self.model.canonical_state()

    def save(self, directory: str, format: str = "safetensors") -> None:
        self.model.save_pretrained(directory, format=format)

    def train_adamw(self, batches: Any, settings: Any, seed: int = 0) -> list[float]:
        """One AdamW step per batch with the backend's own optimizer (``torch.optim.AdamW``,
        ``keras.optimizers.AdamW``, ``optax.adamw``; see ``<backend>.training``); each step's loss."""
        from encdec.training import check_batch_layout, check_loss_curve

        for batch in batches:  # every batch, before the first step
            check_batch_layout({k: np.shape(v) for k, v in batch.items()}, f"train_adamw [{self.backend}]", need_labels=True)
        package = MODEL_CLASSES[self.backend][0]
        losses = importlib.import_module(f"{package}.training").train_adamw(self.model, batches, settings, seed)
        return check_loss_curve(losses, len(batches), self.backend)

    def timed(self, fn: str, *args: Any, repeat: int = 1, **kwargs: Any) -> tuple[Any, float]:
        """``(result, best milliseconds)`` of ``repeat`` calls after one warm-up call."""
        result = getattr(self, fn)(*args, **kwargs)
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            result = getattr(self, fn)(*args, **kwargs)
            best = min(best, (time.perf_counter() - start) * 1000)
        return result, best


def sample_inputs(config: Any, batch: int = 2, src_len: int = 9, tgt_len: int = 7, seed: int = 0, labels: bool = True) -> dict[str, np.ndarray]:
    """Deterministic inputs with right padding in the second row (source and target)."""
    rng = np.random.default_rng(seed)
    enc_vocab, dec_vocab = config.encoder.vocab_size, config.decoder.vocab_size
    low = 3  # keep clear of the usual special ids 0..2
    input_ids = rng.integers(low, enc_vocab, (batch, src_len)).astype(np.int64)
    attention_mask = np.ones((batch, src_len), np.int64)
    decoder_ids = rng.integers(low, dec_vocab, (batch, tgt_len)).astype(np.int64)
    if batch > 1:
        pad_src = config.encoder.pad_token_id if config.encoder.pad_token_id is not None else 0
        input_ids[1, src_len - 3:] = pad_src
        attention_mask[1, src_len - 3:] = 0
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if labels:
        lab = decoder_ids.copy()
        if batch > 1:
            lab[1, tgt_len - 2:] = -100
        out["labels"] = lab
    else:
        out["decoder_input_ids"] = decoder_ids
    return out
