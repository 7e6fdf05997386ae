"""The judging half of the mixed-precision pipeline: pick one of several candidate allocations by their
scores on a validation run.

The sensitivity model does not say how far from the uniform width its additive errors still hold,
and that distance differs between models, so candidates allocated at several trust regions are sampled
and an allocation has to earn its place against the uniform base on samples, not only in the model.
"""
from __future__ import annotations

from typing import Collection

import numpy as np
from scipy.stats import rankdata

TASK_TOLERANCE = 0.01  # an allocation may score at most this much below uniform's task score (1 point) ...
PSNR_TOLERANCE = 0.1  # ... and at most this much below its PSNR vs FP (dB)
RANKED_SCORES = ("class_accuracy", "adherence", "clip_score", "fid_features", "psnr_vs_fp", "ssim_vs_fp")


def pick_allocation(rows: list[dict], task_metric: str, lower_is_better: Collection[str] = ("fid_features",),
                    task_tolerance: float = TASK_TOLERANCE, psnr_tolerance: float = PSNR_TOLERANCE) -> int:
    """Index of the validation row to keep.

    Among the rows no worse than row 0 (the uniform base) beyond the tolerances on the task score and on
    PSNR vs FP, the best mean rank over every quality score the rows have; the uniform base wins ties,
    and may win outright. Metric-decoupled allocation trades a little of one score for another, so one
    score alone cannot judge it; the mean rank counts each score once, whatever its scale.

    Args:
        rows: one dict of scores per candidate, the uniform base first.
        task_metric: the suite's task score (class accuracy, adherence), higher is better.
        lower_is_better: score names where smaller wins (FID).
    Returns:
        The index into ``rows``.
    """
    floors = {task_metric: rows[0][task_metric] - task_tolerance, "psnr_vs_fp": rows[0]["psnr_vs_fp"] - psnr_tolerance}
    allowed = [i for i, row in enumerate(rows) if all(row[key] >= floor for key, floor in floors.items())]
    ranks = mean_ranks(rows, lower_is_better)
    return min(allowed, key=lambda i: (ranks[i], i))


def mean_ranks(rows: list[dict], lower_is_better: Collection[str] = ("fid_features",)) -> list[float]:
    """Each row's rank (1 = best, ties averaged) on every score of RANKED_SCORES all rows have, averaged."""
    keys = [k for k in RANKED_SCORES if all(row.get(k) is not None for row in rows)]
    ranks = [rankdata([row[k] if k in lower_is_better else -row[k] for row in rows]) for k in keys]
    return [float(np.mean([r[i] for r in ranks])) for i in range(len(rows))]
