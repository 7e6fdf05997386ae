"""Sparsity-preserving batch normalisation (Ada3D, https://arxiv.org/abs/2307.08209).

A BatchNorm subtracts a mean and adds a bias, so an empty (zero) BEV cell leaves the layer non-zero and the
next 2D convolution has to compute it: after one stage the map is dense again, however much input was
filtered. This layer scales each channel by the spread of its *active* values only, with no mean
subtraction and no bias, so a zero stays exactly zero and the map keeps its sparsity through the backbone.
"""
from __future__ import annotations

import torch
from torch import nn


class SparsityPreservingBatchNorm(nn.Module):
    """y = weight * x / sqrt(var + eps), var over active positions (running average in eval).

    Args:
        channels: feature channels.
        eps, momentum: as ``nn.BatchNorm``.
    Works on sparse features [N, C] (every row active) and on dense maps [B, C, ...] (a position is active
    when any channel is non-zero).
    """

    def __init__(self, channels: int, eps: float = 1e-3, momentum: float = 0.01) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x if x.dim() == 2 else x.movedim(1, -1).reshape(-1, x.shape[1])
        if self.training:
            active = rows[rows.ne(0).any(dim=1)]
            var = active.var(dim=0, unbiased=False) if len(active) > 1 else self.running_var
            with torch.no_grad():
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            var = self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)
        return x * (scale if x.dim() == 2 else scale.view(1, -1, *([1] * (x.dim() - 2))))
