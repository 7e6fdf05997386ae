"""Running a face model over many captures (one shape check, fixed-size batches, no gradients), drawing the
batches a detector is trained or fine-tuned on (class-balanced rows, flips and shifts), and the fine-tuning loop
both detectors share."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from effigy.errors import ModelError
from effigy.models.training_state import training_step, warmup_cosine
from effigy.worlds.faces import SIZE


@torch.no_grad()
def map_face_batches(fn: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, batch_size: int) -> torch.Tensor:
    """``fn`` applied to images [N, 3, SIZE, SIZE] in [0, 1], ``batch_size`` at a time, results concatenated.

    Raises:
        ModelError: the images are not [N, 3, SIZE, SIZE].
    """
    if images.ndim != 4 or images.shape[1:] != (3, SIZE, SIZE):
        raise ModelError(f"face images must be [N, 3, {SIZE}, {SIZE}] in [0, 1], got {tuple(images.shape)}.")
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return torch.cat([fn(tensor[i: i + batch_size]) for i in range(0, len(tensor), batch_size)])


def balanced_rows(labels: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """[batch_size] row indices, half drawn from each class of boolean ``labels`` (a team's data is rarely
    balanced; an unbalanced batch would teach the majority class)."""
    positive, negative = torch.nonzero(labels).ravel(), torch.nonzero(~labels).ravel()
    half = batch_size // 2
    return torch.cat([positive[torch.randint(len(positive), (half,), generator=generator)],
                      negative[torch.randint(len(negative), (batch_size - half,), generator=generator)]])


def flip_and_shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Horizontal flips and small shifts: what a camera varies without making a face more or less real."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    dy, dx = torch.randint(-3, 4, (2,), generator=generator).tolist()
    return torch.roll(images, (dy, dx), dims=(2, 3))


def balanced_fine_tune(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, steps: int, seed: int,
                       learning_rate: float, batch_size: int,
                       batch_loss: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor],
                       progress: Callable[[int, float], None] | None = None) -> torch.nn.Module:
    """Continue training ``model`` on a team's face crops: seeded, AdamW, class-balanced batches of
    ``batch_size``, a short warm-up and a cosine decay; ``batch_loss(images, labels, generator)`` is the
    detector's own loss (its augmentation inside).

    Args:
        images: [N, 3, SIZE, SIZE] face crops in [0, 1]. labels: [N] bool (the class ``batch_loss`` reads).
    Returns:
        The model (changed in place), in eval mode.
    """
    torch.manual_seed(seed)
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    flags = torch.from_numpy(np.asarray(labels).astype(bool))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        rows = balanced_rows(flags, batch_size, generator)
        loss = batch_loss(tensor[rows], flags[rows], generator)
        training_step(optimizer, loss, step, learning_rate * warmup_cosine(step, steps, warmup=min(50, steps // 5)),
                      progress=progress)
    return model.eval()
