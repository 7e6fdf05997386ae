"""Rank agreement for FlashEval (https://arxiv.org/abs/2403.16379): Kendall's tau-b with a margin.

Two models whose mean scores differ by no more than ``margin`` are a tie: a difference that small is
noise, and a prompt subset should not be rewarded or punished for ordering them either way. With
margin 0 this is exactly scipy's tau-b.

Vectorised: ``margin_kendall_tau`` compares many candidate rankings (one per prompt subset) with one
reference ranking in a single call, which is what the subset search spends its time on.
"""
from __future__ import annotations

import numpy as np

from effigy.errors import MetricError


def pair_differences(scores: np.ndarray) -> np.ndarray:
    """``scores[..., i] - scores[..., j]`` for every pair i < j of the last axis."""
    i, j = np.triu_indices(scores.shape[-1], k=1)
    return scores[..., i] - scores[..., j]


def margin_kendall_tau(candidates: np.ndarray, reference: np.ndarray, margin: float = 0.0,
                       reference_margin: float | None = None) -> np.ndarray:
    """Tau-b between each row of ``candidates`` and ``reference``, ties within a margin.

    Args:
        candidates: [..., models] scores (e.g. subset means, one row per subset).
        reference: [models] scores (the full-set means).
        margin: pairs whose candidate scores differ by at most this are tied.
        reference_margin: the same for the reference (defaults to ``margin``).
    Returns:
        [...] tau in [-1, 1]; NaN where either side ties every pair.
    """
    candidates, reference = np.asarray(candidates, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if reference.ndim != 1 or candidates.shape[-1] != reference.shape[0]:
        raise MetricError(f"Kendall tau compares rankings of the same models: candidates {candidates.shape} and "
                          f"reference {reference.shape} differ in their last dimension.")
    if reference.shape[0] < 2:
        raise MetricError("Kendall tau needs at least two models to rank.")
    if margin < 0 or (reference_margin is not None and reference_margin < 0):
        raise MetricError(f"a tie margin is a non-negative score difference, got {margin}.")
    ref_margin = margin if reference_margin is None else reference_margin
    x = _signs(pair_differences(candidates), margin)
    y = _signs(pair_differences(reference), ref_margin)
    agreement = (x * y).sum(axis=-1)  # concordant - discordant
    untied_x = (x != 0).sum(axis=-1)  # C + D + (ties in y only)
    untied_y = (y != 0).sum()  # C + D + (ties in x only)
    with np.errstate(invalid="ignore", divide="ignore"):
        return agreement / np.sqrt(untied_x * untied_y)


def _signs(differences: np.ndarray, margin: float) -> np.ndarray:
    signs = np.sign(differences)
    signs[np.abs(differences) <= margin] = 0
    return signs.astype(np.int8)
