"""Scikit-learn's bundled handwritten digits as a small image world for class-conditional diffusion.

The 8x8, 17-level digits are upsampled to ``size`` x ``size`` and mapped to [-1, 1] so that a
diffusion model has enough pixels to show structure, and a classifier trained on them can judge samples.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NUM_CLASSES = 10


def load_digits_images(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images [N,1,size,size] in [-1,1], labels [N]) for all 1797 digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return images.clamp(0, 1) * 2 - 1, labels


def split_indices(n: int, holdout_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train / held-out split, so the classifier is judged on digits it never saw."""
    order = np.random.default_rng(seed).permutation(n)
    n_hold = int(round(n * holdout_fraction))
    return np.sort(order[n_hold:]), np.sort(order[:n_hold])


def augment(images: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Random integer translations by up to ``max_shift`` pixels, padding with the background value -1."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
