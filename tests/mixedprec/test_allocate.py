import itertools
import json

import numpy as np
import pytest

from effigy.errors import QuantizationError
from effigy.mixedprec import SensitivityTable, allocate, average_bits_budget


def random_table(rng: np.random.Generator, n_groups: int, widths=(2, 4, 8)) -> SensitivityTable:
    scores, sizes = {}, {}
    for g in range(n_groups):
        base = rng.uniform(0.1, 5)
        scores[f"g{g}"] = {b: base * 2.0 ** (-b) * rng.uniform(0.5, 2) for b in widths}
        sizes[f"g{g}"] = int(rng.integers(10, 500))
    return SensitivityTable(scores, sizes)


def brute_force(table: SensitivityTable, budget: int, trust_region: tuple[int, float] | None = None) -> float:
    best = np.inf
    for combo in itertools.product(*[sorted(table.scores[g]) for g in table.groups]):
        cost = sum(table.sizes[g] * b for g, b in zip(table.groups, combo))
        moved = 0 if trust_region is None else sum(table.sizes[g] * abs(b - trust_region[0])
                                                   for g, b in zip(table.groups, combo))
        if cost <= budget and (trust_region is None or moved <= trust_region[1]):
            best = min(best, sum(table.scores[g][b] for g, b in zip(table.groups, combo)))
    return best


@pytest.mark.parametrize("seed", range(12))
def test_ilp_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    table = random_table(rng, n_groups=int(rng.integers(2, 6)))
    budget = average_bits_budget(table, rng.uniform(2.5, 7.5))
    result = allocate(table, budget)
    assert result.total_bits <= budget
    assert result.sensitivity == pytest.approx(brute_force(table, budget), rel=1e-9, abs=1e-12)
    assert set(result.bits) == set(table.groups)


@pytest.mark.parametrize("seed", range(8))
def test_ilp_with_a_trust_region_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    table = random_table(rng, n_groups=int(rng.integers(2, 6)))
    base = sorted(table.scores[table.groups[0]])[1]
    budget = average_bits_budget(table, base)
    limit = rng.uniform(0.05, 1.0) * sum(table.sizes.values())
    result = allocate(table, budget, trust_region=(base, limit))
    assert sum(table.sizes[g] * abs(b - base) for g, b in result.bits.items()) <= limit
    assert result.sensitivity == pytest.approx(brute_force(table, budget, (base, limit)), rel=1e-9, abs=1e-12)
    assert result.sensitivity >= allocate(table, budget).sensitivity - 1e-12  # the region only constrains


def test_a_zero_trust_region_keeps_the_uniform_base_width():
    table = SensitivityTable({"a": {3: 0.0, 4: 1.0, 6: 0.0}, "b": {3: 0.0, 4: 1.0, 6: 0.0}}, {"a": 10, "b": 10})
    assert allocate(table, average_bits_budget(table, 4.5)).bits != {"a": 4, "b": 4}
    assert allocate(table, average_bits_budget(table, 4.5), trust_region=(4, 0)).bits == {"a": 4, "b": 4}


def test_generous_budget_gives_every_group_its_best_width():
    table = SensitivityTable({"a": {4: 1.0, 8: 0.1}, "b": {4: 2.0, 8: 0.2}}, {"a": 10, "b": 10})
    assert allocate(table, 10**6).bits == {"a": 8, "b": 8}


def test_tight_budget_lowers_the_less_sensitive_group():
    table = SensitivityTable({"a": {4: 1.0, 8: 0.0}, "b": {4: 5.0, 8: 0.0}}, {"a": 10, "b": 10})
    result = allocate(table, average_bits_budget(table, 6))
    assert result.bits == {"a": 4, "b": 8}
    assert result.average_bits(table) == 6


def test_budget_too_small_names_the_minimum():
    table = SensitivityTable({"a": {4: 1.0, 8: 0.0}}, {"a": 100})
    with pytest.raises(QuantizationError, match="too small.*400 bits"):
        allocate(table, 399)


def test_table_validation_and_json_round_trip(tmp_path):
    with pytest.raises(QuantizationError, match="lack either scores or sizes"):
        SensitivityTable({"a": {4: 1.0}}, {"b": 3})
    with pytest.raises(QuantizationError, match="non-finite"):
        SensitivityTable({"a": {4: float("nan")}}, {"a": 3})
    table = SensitivityTable({"a": {4: 1.5, 8: 0.25}}, {"a": 7}, metric={"a": "ssim"})
    table.save(tmp_path / "t.json")
    assert SensitivityTable.load(tmp_path / "t.json") == table
    (tmp_path / "bad.json").write_text(json.dumps({"nope": 1}))
    with pytest.raises(QuantizationError, match="not a sensitivity table"):
        SensitivityTable.load(tmp_path / "bad.json")
