"""Bit allocation as an integer program: one bit-width per group, a storage budget, least total
sensitivity (ViDiT-Q's and MixDQ's formulation, PM-KVQ's block-wise memory allocation).

Solved exactly with ``scipy.optimize.milp`` (HiGHS). Binary variable x[g, b] = 1 when group g gets
b bits; each group picks exactly one width; sum of sizes * bits stays within the budget.
"""
from __future__ import annotations

from dataclasses import dataclass

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


def allocate(table: SensitivityTable, budget_bits: int) -> Assignment:
    """The assignment of least total sensitivity whose storage, sum(size * bits), fits ``budget_bits``.

    Raises QuantizationError naming the smallest feasible budget when even the lowest bit-widths do
    not fit.
    """
    groups = table.groups
    choices = [(g, b) for g in groups for b in sorted(table.scores[g])]
    cost = np.array([table.sizes[g] * b for g, b in choices], dtype=float)
    minimum = sum(table.sizes[g] * min(table.scores[g]) for g in groups)
    if budget_bits < minimum:
        raise QuantizationError(
            f"budget of {budget_bits} bits ({budget_bits / 8 / 2**20:.3f} MiB) is too small: the lowest bit-width of "
            f"every group already needs {minimum} bits ({minimum / 8 / 2**20:.3f} MiB). Raise the budget or "
            "allow lower bit-widths."
        )
    one_per_group = np.array([[1.0 if cg == g else 0.0 for cg, _ in choices] for g in groups])
    constraints = [LinearConstraint(one_per_group, 1, 1), LinearConstraint(cost[None], -np.inf, budget_bits)]
    objective = np.array([table.scores[g][b] for g, b in choices])
    result = milp(objective, constraints=constraints, integrality=np.ones(len(choices)), bounds=Bounds(0, 1))
    if not result.success:
        raise QuantizationError(f"bit allocation failed: {result.message}")
    picked = [choices[i] for i in np.flatnonzero(result.x > 0.5)]
    bits = {g: b for g, b in picked}
    return Assignment(bits=bits, total_bits=int(sum(table.sizes[g] * b for g, b in picked)),
                      sensitivity=float(sum(table.scores[g][b] for g, b in picked)))
