"""A plain PyTorch training loop with ``torch.optim.AdamW`` (``encdec train-compare``'s
PyTorch side; the batches, hyper-parameters and comparison live in :mod:`encdec.training`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from encdec.training import AdamWSettings


def train_adamw(model: torch.nn.Module, batches: Sequence[Mapping[str, np.ndarray]], settings: AdamWSettings,
                seed: int = 0) -> list[float]:
    """One AdamW step per batch (train mode: dropout on where the config has it, drawn from
    ``torch.manual_seed(seed)``); returns each step's loss, computed before its update."""
    torch.manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate,
                                  betas=(settings.beta1, settings.beta2), eps=settings.eps,
                                  weight_decay=settings.weight_decay)
    losses = []
    for batch in batches:
        loss = model(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
