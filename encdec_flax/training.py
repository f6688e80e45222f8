"""A jitted optax training step with ``optax.adamw`` (``encdec train-compare``'s Flax side;
batches, hyper-parameters and the comparison live in :mod:`encdec.training`)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
import optax

from encdec.training import AdamWSettings


def train_adamw(model: Any, batches: Sequence[Mapping[str, np.ndarray]], settings: AdamWSettings,
                seed: int = 0) -> list[float]:
    """``jax.value_and_grad`` + ``optax.adamw`` per batch under one ``jax.jit`` (dropout on
    where the config has it, keys split from ``PRNGKey(seed)``); returns each step's loss and
    leaves the trained weights in ``model.params``."""
    tx = optax.adamw(settings.learning_rate, b1=settings.beta1, b2=settings.beta2, eps=settings.eps,
                     weight_decay=settings.weight_decay)

    def loss_fn(params: Any, batch: Mapping[str, Any], rng: Any) -> Any:
        return model(**batch, params=params, train=True, dropout_rng=rng).loss

    @jax.jit
    def step(params: Any, opt_state: Any, batch: Mapping[str, Any], rng: Any) -> tuple:
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, key = model.params, jax.random.PRNGKey(seed)
    opt_state = tx.init(params)
    losses = []
    for batch in batches:
        key, rng = jax.random.split(key)
        params, opt_state, loss = step(params, opt_state, {k: np.asarray(v) for k, v in batch.items()}, rng)
        losses.append(float(loss))
    model.params = params
    return losses
