"""Attention sharing across the two halves of a classifier-free guidance batch.

A guided model runs each input twice, as one ``[conditional; unconditional]`` batch. Where the two
halves' attention outputs agree, attention can run on the conditional half alone and hand its output to
both: DiTFastAttn's CFG sharing (https://arxiv.org/abs/2406.08552) and LiteVAR's ASC
(https://arxiv.org/abs/2411.17178) are this one operation, decided per (step or scale, layer) by a
calibration that measures how far apart the halves are.
"""
from __future__ import annotations

import torch

from effigy.core.compare import relative_l1
from effigy.errors import PlanError


def conditional_half(x: torch.Tensor, where: str) -> torch.Tensor:
    """The first (conditional) half of a ``[conditional; unconditional]`` batch.

    Args:
        x: a batch whose first dimension holds both halves.
        where: names the layer in the error when the batch cannot be split.
    Returns:
        ``x[: len(x) // 2]`` (a view).
    """
    if x.shape[0] % 2:
        raise PlanError(f"{where}: CFG sharing needs a [conditional; unconditional] batch, got {x.shape[0]} rows.")
    return x[: x.shape[0] // 2]


def to_both_halves(out: torch.Tensor) -> torch.Tensor:
    """The conditional half's output given to both halves of the batch."""
    return torch.cat([out, out])


def halves_disagreement(out: torch.Tensor) -> float:
    """Relative L1 distance of the unconditional half's output from the conditional half's: how much
    sharing would change the unconditional branch (0: identical)."""
    half = conditional_half(out, "CFG agreement")
    return relative_l1(out[half.shape[0]:], half)
