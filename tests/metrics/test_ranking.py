"""Kendall tau-b with a tie margin: scipy's tau-b at margin 0, a brute-force pair count with ties."""
import itertools

import numpy as np
import pytest
from scipy.stats import kendalltau

from effigy.errors import MetricError
from effigy.metrics.ranking import margin_kendall_tau


def brute_force_tau(x, y, margin):
    concordant = discordant = tied_x_only = tied_y_only = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        tx, ty = abs(dx) <= margin, abs(dy) <= margin
        if tx and ty:
            continue
        if tx:
            tied_x_only += 1
        elif ty:
            tied_y_only += 1
        elif dx * dy > 0:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / np.sqrt((concordant + discordant + tied_x_only) *
                                               (concordant + discordant + tied_y_only))


def test_at_margin_zero_it_is_scipys_tau_b_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, 9).astype(float), rng.integers(0, 4, 9).astype(float)  # many exact ties
        assert margin_kendall_tau(x, y) == pytest.approx(kendalltau(x, y).statistic)


def test_with_a_margin_it_counts_pairs_as_a_brute_force_does():
    rng = np.random.default_rng(1)
    for margin in (0.05, 0.2, 0.5):
        x, y = rng.random(8), rng.random(8)
        assert margin_kendall_tau(x, y, margin) == pytest.approx(brute_force_tau(x, y, margin))
        assert margin_kendall_tau(x, y, margin) != pytest.approx(margin_kendall_tau(x, y))


def test_many_candidate_rankings_in_one_call():
    rng = np.random.default_rng(2)
    reference, candidates = rng.random(6), rng.random((5, 6))
    taus = margin_kendall_tau(candidates, reference, 0.1)
    assert taus.shape == (5,)
    assert taus == pytest.approx([brute_force_tau(c, reference, 0.1) for c in candidates])
    assert margin_kendall_tau(reference, reference) == pytest.approx(1.0)
    assert margin_kendall_tau(-reference, reference) == pytest.approx(-1.0)


def test_bad_rankings_are_one_clear_error():
    with pytest.raises(MetricError, match="same models"):
        margin_kendall_tau(np.zeros(3), np.zeros(4))
    with pytest.raises(MetricError, match="two models"):
        margin_kendall_tau(np.zeros(1), np.zeros(1))
    with pytest.raises(MetricError, match="non-negative"):
        margin_kendall_tau(np.zeros(3), np.arange(3.0), margin=-1)
