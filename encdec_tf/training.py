"""Keras training with ``keras.optimizers.AdamW`` through the model's own ``train_step``
(``encdec train-compare``'s TensorFlow side; batches, hyper-parameters and the comparison
live in :mod:`encdec.training`)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import keras
import numpy as np

from encdec.training import AdamWSettings


def train_adamw(model: Any, batches: Sequence[Mapping[str, np.ndarray]], settings: AdamWSettings, seed: int = 0,
                jit_compile: bool = False) -> list[float]:
    """``compile`` with AdamW, then ``train_on_batch`` per batch (dropout on where the config
    has it, drawn from ``keras.utils.set_random_seed(seed)``); returns each step's loss.
    Steps run eagerly unless ``jit_compile`` (one XLA program; its compile takes a while)."""
    keras.utils.set_random_seed(seed)
    optimizer = keras.optimizers.AdamW(learning_rate=settings.learning_rate, weight_decay=settings.weight_decay,
                                       beta_1=settings.beta1, beta_2=settings.beta2, epsilon=settings.eps)
    model.compile(optimizer=optimizer, jit_compile=jit_compile, run_eagerly=not jit_compile)
    return [float(model.train_on_batch({k: np.asarray(v) for k, v in batch.items()}, return_dict=True)["loss"])
            for batch in batches]
