"""TENT (Wang et al., ICLR 2021, https://arxiv.org/abs/2006.10726) as a baseline that *does* touch the model:
the encoder's BatchNorm scales and shifts are updated to lower the entropy of its live / spoof predictions on
unlabelled target images, with the norms using the target batch's statistics. Unlike the OT adaptors it needs
the model's parameters, so a client that only has the model as a black box cannot run it."""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from effigy.detect.fas.model import PrototypeFAS


def tent(model: PrototypeFAS, images: np.ndarray, steps: int = 10, batch_size: int = 64, learning_rate: float = 1e-3,
         seed: int = 0) -> PrototypeFAS:
    """A copy of ``model`` adapted by TENT on unlabelled target ``images`` [N, 3, SIZE, SIZE].

    Returns:
        The adapted copy, its norms left on the statistics of the last target batch (TENT's online use).
    """
    adapted = copy.deepcopy(model)
    adapted.requires_grad_(False)
    norms = [m for m in adapted.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.train()
        norm.track_running_stats = False
        norm.running_mean = norm.running_var = None
        norm.weight.requires_grad_(True)
        norm.bias.requires_grad_(True)
    optimizer = torch.optim.Adam([p for n in norms for p in (n.weight, n.bias)], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    for _ in range(steps):
        rows = torch.randperm(len(tensor), generator=generator)[:batch_size]
        live = adapted(tensor[rows]).clamp(1e-6, 1 - 1e-6)
        entropy = -(live * live.log() + (1 - live) * (1 - live).log()).mean()
        optimizer.zero_grad()
        entropy.backward()
        optimizer.step()
    return adapted.requires_grad_(False)
