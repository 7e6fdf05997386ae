"""Is a difference between two variants more than noise? Paired bootstrap confidence intervals.

Benchmarks compare variants that sampled the same prompts from the same seeded noise, so their
per-image scores are paired: resampling the images (the same indices for both variants) gives the
spread of the difference in means that other prompt sets of the same size would show. A statistic
of a whole set (FID) is bootstrapped the same way, recomputed on each resample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from effigy.errors import MetricError

# statistic(indices) -> one number: a mean of per-image scores, or a set-level score like FID
SetStatistic = Callable[[np.ndarray], float]


@dataclass
class Difference:
    """``value`` = statistic(a) - statistic(b) on all images, with a percentile bootstrap interval."""

    value: float
    low: float
    high: float
    confidence: float

    @property
    def significant(self) -> bool:
        """The interval excludes zero: the sign of the difference is not noise at this confidence."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {"difference": self.value, "low": self.low, "high": self.high, "confidence": self.confidence,
                "significant": self.significant}


def paired_bootstrap(statistic_a: SetStatistic, statistic_b: SetStatistic, n: int, resamples: int = 1000,
                     confidence: float = 0.95, seed: int = 0) -> Difference:
    """Bootstrap interval of statistic_a - statistic_b over ``n`` paired items (same resampled indices)."""
    if n < 2:
        raise MetricError(f"a bootstrap needs at least 2 paired items, got {n}.")
    if not 0 < confidence < 1:
        raise MetricError(f"confidence must lie in (0, 1), got {confidence}.")
    everything = np.arange(n)
    rng = np.random.default_rng(seed)
    draws = [statistic_a(idx) - statistic_b(idx) for idx in rng.integers(0, n, size=(resamples, n))]
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Difference(statistic_a(everything) - statistic_b(everything), float(low), float(high), confidence)


def mean_of(scores: torch.Tensor | np.ndarray) -> SetStatistic:
    """The mean of per-item scores over the chosen indices."""
    values = np.asarray(scores, dtype=np.float64)
    return lambda idx: float(values[idx].mean())


def paired_mean_difference(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, **options) -> Difference:
    """mean(a) - mean(b) for per-item scores of two variants on the same items."""
    if len(a) != len(b):
        raise MetricError(f"paired scores need equal lengths, got {len(a)} and {len(b)}.")
    return paired_bootstrap(mean_of(a), mean_of(b), len(a), **options)
