"""The supervised training loop the zoo's judges share (digits classifier, shapes checker)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def fit(
    model: nn.Module,
    batch_loss: Callable[[nn.Module, torch.Generator], torch.Tensor],
    steps: int,
    learning_rate: float,
    generator: torch.Generator,
    progress: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """AdamW with a one-cycle schedule; ``batch_loss(model, generator)`` draws a batch and scores it."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps)
    model.train()
    for step in range(steps):
        loss = batch_loss(model, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step, loss.item())
    return model.eval()
