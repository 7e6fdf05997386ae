"""Orthonormal Hadamard rotations, used to spread activation outliers over all channels before
per-token quantization (ViDiT-Q's static-dynamic channel balancing, QuaRot-style).

A rotation H (H @ H.T = I) leaves a linear layer's output unchanged when applied to both operands:
x W^T = (x H)(W H)^T. Only power-of-two sizes are supported (Sylvester construction), in fp32.
"""
from __future__ import annotations

import functools

import torch

from effigy.errors import QuantizationError


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@functools.lru_cache(maxsize=16)
def _sylvester(n: int) -> torch.Tensor:
    if not is_power_of_two(n):
        raise QuantizationError(
            f"a Hadamard rotation needs a power-of-two size, got {n}; leave this layer unrotated "
            "(rotate=False) or pad its input features."
        )
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / n**0.5


def hadamard_matrix(n: int) -> torch.Tensor:
    """The n x n orthonormal Hadamard matrix (a fresh copy; n a power of two)."""
    return _sylvester(n).clone()


def rotate(x: torch.Tensor) -> torch.Tensor:
    """x @ H over the last dimension."""
    return x.float() @ _sylvester(x.shape[-1])


def balance_input(x: torch.Tensor, divisor: torch.Tensor | None, rotated: bool) -> torch.Tensor:
    """Channel balancing as applied to a layer's input: divide per channel, then rotate (if asked)."""
    x = x / divisor if divisor is not None else x
    return rotate(x) if rotated else x
