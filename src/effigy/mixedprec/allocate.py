"""Bit allocation as an integer program: one bit-width per group, a storage budget, least total
sensitivity (ViDiT-Q's and MixDQ's formulation, PM-KVQ's block-wise memory allocation).

Solved exactly with ``scipy.optimize.milp`` (HiGHS). Binary variable x[g, b] = 1 when group g gets
b bits; each group picks exactly one width; sum of sizes * bits stays within the budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from effigy.errors import QuantizationError
from effigy.mixedprec.table import SensitivityTable


@dataclass
class Assignment:
    bits: dict[str, int]
    total_bits: int  # storage the assignment needs, in bits
    sensitivity: float  # sum of the chosen table entries

    def average_bits(self, table: SensitivityTable) -> float:
        return self.total_bits / sum(table.sizes[g] for g in self.bits)

    def to_dict(self) -> dict:
        return {"bits": self.bits, "total_bits": self.total_bits, "sensitivity": self.sensitivity}


def average_bits_budget(table: SensitivityTable, average_bits: float) -> int:
    """The storage budget (in bits) of an average bit-width over all groups, weighted by size."""
    return int(np.floor(average_bits * sum(table.sizes.values()) + 1e-6))


def allocate(table: SensitivityTable, budget_bits: int,
             cost: Callable[[str, int], float] | None = None,
             trust_region: tuple[int, float] | None = None, min_bits: int | None = None) -> Assignment:
    """The assignment of least total sensitivity whose storage fits ``budget_bits`` (and, with ``min_bits``,
    spends at least that much: MixDQ's band around a target average).

    Storage of group g at b bits is ``cost(g, b)``, by default ``size * b``; pass another cost where
    a width carries overhead (e.g. per-group scales of a KV cache). Raises QuantizationError naming
    the smallest feasible budget when even the cheapest widths do not fit.

    ``trust_region=(base_bits, max_moved)`` also requires sum(size * |b - base_bits|) <= max_moved:
    sensitivities measured one group at a time add up only near the uniform ``base_bits`` assignment,
    and far from it (many groups moved at once) their errors compound beyond the additive model.
    """
    cost = cost or (lambda g, b: table.sizes[g] * b)
    groups = table.groups
    choices = [(g, b) for g in groups for b in sorted(table.scores[g])]
    costs = np.array([cost(g, b) for g, b in choices], dtype=float)
    minimum = sum(min(cost(g, b) for b in table.scores[g]) for g in groups)
    if budget_bits < minimum:
        raise QuantizationError(
            f"budget of {budget_bits} bits ({budget_bits / 8 / 2**20:.3f} MiB) is too small: the lowest bit-width of "
            f"every group already needs {minimum:.0f} bits ({minimum / 8 / 2**20:.3f} MiB). Raise the budget or "
            "allow lower bit-widths."
        )
    one_per_group = np.array([[1.0 if cg == g else 0.0 for cg, _ in choices] for g in groups])
    lower = -np.inf if min_bits is None else min_bits
    constraints = [LinearConstraint(one_per_group, 1, 1), LinearConstraint(costs[None], lower, budget_bits)]
    if trust_region is not None:
        base_bits, max_moved = trust_region
        moved = np.array([table.sizes[g] * abs(b - base_bits) for g, b in choices], dtype=float)
        constraints.append(LinearConstraint(moved[None], -np.inf, max_moved))
    objective = np.array([table.scores[g][b] for g, b in choices])
    result = milp(objective, constraints=constraints, integrality=np.ones(len(choices)), bounds=Bounds(0, 1))
    if not result.success:
        hint = " (is the trust region's base width a candidate of every group?)" if trust_region else ""
        raise QuantizationError(f"bit allocation failed: {result.message}{hint}")
    picked = [choices[i] for i in np.flatnonzero(result.x > 0.5)]
    bits = {g: b for g, b in picked}
    return Assignment(bits=bits, total_bits=int(sum(cost(g, b) for g, b in picked)),
                      sensitivity=float(sum(table.scores[g][b] for g, b in picked)))
