"""MixDQ's bit allocation (https://arxiv.org/abs/2405.17873): the layers split into parts scored by their own
metric ("content" layers by SSIM of the image, "quality" layers by SQNR of the output), one integer program
per part, and an outer sweep over the ratio of the two parts' means at the target overall average. One part
is solved as close to its share as its layer sizes allow; the other takes the rest, so that the overall
size-weighted mean lands within +/- 0.02 bits of the target. Every feasible sweep point is a candidate
allocation; the caller samples each and keeps the one closest to FP (image MSE on validation).

Activations follow the same program once the weights are fixed, after the most sensitive ``fp_fraction`` of
each part's activation layers are set aside to stay in floating point.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from effigy.errors import QuantizationError
from effigy.mixedprec.allocate import Assignment, allocate
from effigy.mixedprec.table import SensitivityTable

log = logging.getLogger(__name__)
BAND = 0.02  # MixDQ: the overall mean width within +/- this of the target
# content mean / quality mean: the published grid for weights, plus 1.0 so that a target every part can meet
# alike (8 bits: all layers at 8) is always a sweep point
RATIOS = tuple(sorted({*np.linspace(0.46, 1.36, 10).round(3).tolist(), 1.0}))
# how far the part solved first may stray from its share: a part of few large layers cannot meet +/- BAND
SHARE_BANDS = (BAND, 0.05, 0.1, 0.2, 0.4)


@dataclass(frozen=True)
class SweepPoint:
    """One candidate: the overall average and ratio it was solved at, the parts' targets, and the widths."""

    average: float
    ratio: float
    part_targets: dict[str, float]
    bits: dict[str, int]

    def to_dict(self) -> dict:
        return {"average": self.average, "ratio": self.ratio, "part_targets": self.part_targets, "bits": self.bits}


def sub_table(table: SensitivityTable, groups: list[str]) -> SensitivityTable:
    return SensitivityTable({g: table.scores[g] for g in groups}, {g: table.sizes[g] for g in groups},
                            {g: table.metric.get(g, "") for g in groups})


def allocate_in_band(table: SensitivityTable, average: float, band: float = BAND) -> Assignment:
    """Least summed sensitivity with the size-weighted mean width within ``average`` +/- ``band``.

    Raises QuantizationError when no assignment of the candidate widths lands in the band."""
    size = sum(table.sizes.values())
    low, high = math.ceil((average - band) * size - 1e-6), math.floor((average + band) * size + 1e-6)
    return allocate(table, high, min_bits=low)


def part_targets(average: float, ratio: float, part_sizes: dict[str, int], content: str, quality: str
                 ) -> dict[str, float]:
    """The two parts' mean widths whose size-weighted mean is ``average`` and whose ratio (content / quality)
    is ``ratio``."""
    n_content, n_quality = part_sizes[content], part_sizes[quality]
    quality_bits = average * (n_content + n_quality) / (ratio * n_content + n_quality)
    return {content: ratio * quality_bits, quality: quality_bits}


def reachable_range(table: SensitivityTable) -> tuple[float, float]:
    """The smallest and largest size-weighted mean width the candidates allow."""
    size = sum(table.sizes.values())
    low = sum(n * min(table.scores[g]) for g, n in table.sizes.items()) / size
    high = sum(n * max(table.scores[g]) for g, n in table.sizes.items()) / size
    return low, high


def check_target(table: SensitivityTable, average: float, what: str = "weight") -> None:
    low, high = reachable_range(table)
    if not low - 1e-9 <= average <= high + 1e-9:
        raise QuantizationError(f"average {what} bits {average:g} is outside what the candidate widths reach "
                                f"({low:.2f} to {high:.2f}: every layer at its smallest or largest candidate); "
                                f"choose a target in that range.")


def sweep(table: SensitivityTable, parts: dict[str, list[str]], content: str, quality: str, target: float,
          ratios: tuple[float, ...] = RATIOS, band: float = BAND) -> list[SweepPoint]:
    """Every feasible ratio of the outer sweep at ``target`` bits, distinct allocations only.

    Args:
        table: sensitivities (raw losses per metric: each part is solved on its own).
        parts: part name -> its groups (the table's groups, each in one part).
        content, quality: the two part names (the ratio is content mean / quality mean).
        target: the overall size-weighted mean width; every point's lies within +/- ``band`` of it.
    Returns:
        The candidates, in sweep order; a target the widths cannot reach is one QuantizationError.
    """
    check_target(table, target)
    tables = {name: sub_table(table, groups) for name, groups in parts.items()}
    sizes = {name: sum(t.sizes.values()) for name, t in tables.items()}
    single = len(tables) == 1  # one metric for every layer (the decoupling ablation): no ratio to sweep
    points, seen = [], set()
    for ratio in (1.0,) if single else ratios:
        targets = {next(iter(tables)): target} if single else part_targets(target, float(ratio), sizes, content, quality)
        bits = _solve_parts(tables, targets, band)
        if bits is None or tuple(sorted(bits.items())) in seen:
            continue
        seen.add(tuple(sorted(bits.items())))
        points.append(SweepPoint(round(target, 4), float(ratio), targets, bits))
    if not points:
        raise QuantizationError(f"no ratio of the sweep has an allocation within +/-{band} bits of {target:g}; "
                                "widen the band or choose another target.")
    log.info("MixDQ sweep at %.2f bits: %d distinct feasible allocations", target, len(points))
    return points


def _solve_parts(tables: dict[str, SensitivityTable], targets: dict[str, float], band: float) -> dict[str, int] | None:
    """Solve one part near its share, the other for the rest of the overall budget (within ``band``); the
    other order when the first finds nothing."""
    names = list(tables)
    if len(names) == 1:
        return _solve_in_band(tables[names[0]], targets[names[0]], band)
    total = sum(sum(t.sizes.values()) for t in tables.values())
    overall = sum(targets[n] * sum(tables[n].sizes.values()) for n in names) / total
    for first, second in (names, names[::-1]):
        first_bits = next((b for share in SHARE_BANDS if share >= band
                           if (b := _solve_in_band(tables[first], targets[first], share)) is not None), None)
        if first_bits is None:
            continue
        second_size = sum(tables[second].sizes.values())
        spent = sum(tables[first].sizes[g] * b for g, b in first_bits.items())
        rest = (overall * total - spent) / second_size
        second_bits = _solve_in_band(tables[second], rest, band * total / second_size)
        if second_bits is not None:
            return first_bits | second_bits
    return None


def _solve_in_band(table: SensitivityTable, average: float, band: float) -> dict[str, int] | None:
    low, high = reachable_range(table)
    if not low - band <= average <= high + band:
        return None
    try:
        return allocate_in_band(table, average, band).bits
    except QuantizationError:
        return None


def kept_in_float(table: SensitivityTable, parts: dict[str, list[str]], fraction: float) -> list[str]:
    """The most sensitive ``fraction`` (at least one) of each part's layers, by their loss at the widest
    candidate width: MixDQ keeps these layers' activations in floating point."""
    kept = []
    for groups in parts.values():
        count = max(1, math.ceil(fraction * len(groups)))
        kept += sorted(groups, key=lambda g: -table.scores[g][max(table.scores[g])])[:count]
    return kept


def allocate_activations(table: SensitivityTable, parts: dict[str, list[str]], target: float,
                         fp_fraction: float = 0.01, band: float = BAND) -> dict[str, int | None]:
    """Activation widths given the weights: the most sensitive layers of each part in floating point (None),
    the rest of each part within ``band`` of ``target`` (size = activation elements per call)."""
    kept = set(kept_in_float(table, parts, fp_fraction))
    widths: dict[str, int | None] = dict.fromkeys(kept)
    for groups in parts.values():
        rest = [g for g in groups if g not in kept]
        if rest:
            part = sub_table(table, rest)
            check_target(part, target, "activation")
            widths |= allocate_in_band(part, target, band).bits
    return widths
