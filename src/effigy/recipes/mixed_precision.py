"""Mixed-precision recipes on one pipeline: a uniform base recipe, a way to gather its target layers into
groups that each get one weight width and are scored by one metric, a sensitivity table measured
per group and width, and the integer program that picks the widths at an average-bit budget.

A method brings its own :class:`LayerGroups` (ViDiT-Q's are in :mod:`effigy.recipes.vidit_q_mp`) and
registers a :class:`MixedPrecisionRecipe`; the measurement (:mod:`effigy.mixedprec.sensitivity`), the
allocation (:mod:`effigy.mixedprec.allocate`) and the validation pick (:mod:`effigy.mixedprec.pick`)
are shared. Scores are measured one group at a time with the rest in floating point by default (the
published form; ``around="float"``): each score is then that group's own error, free of cross terms
with the others' rounding (see docs/notes/vidit-q.md for what the other choices did).
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from torch import nn

from effigy.errors import QuantizationError
from effigy.mixedprec import Assignment, SensitivityTable, allocate, average_bits_budget
from effigy.mixedprec.sensitivity import Evaluator, normalise_by_metric
from effigy.nn import QuantConfig, find_targets
from effigy.nn.quantize import balance_divisors, quantize
from effigy.registry import Registry
from effigy.serialize import read_json_file, require

GRANULARITIES = ("layer", "block")
AROUND = ("float", "base")  # what the other groups are while one is scored: see measure_sensitivity


@dataclass(frozen=True)
class LayerGroups:
    """How a recipe's target layers gather into units that get one width each, and which metric scores
    each unit. ``pattern`` matches a layer name plus a trailing dot; its group 1 is the block and group 2
    the kind (a key of ``metric_of_kind``)."""

    pattern: str
    metric_of_kind: dict[str, str]

    def of(self, model: nn.Module, config: QuantConfig, granularity: str = "layer") -> dict[str, list[str]]:
        """The recipe's target layers, gathered into (block, kind) groups or single layers (each its own
        group, named by the layer)."""
        if granularity not in GRANULARITIES:
            raise QuantizationError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        groups: dict[str, list[str]] = {}
        for name in find_targets(model, config.include, config.ignore):
            match = re.match(self.pattern, name + ".")
            if match is None:
                raise QuantizationError(f"layer {name!r} belongs to no known group ({self.pattern}); add it to "
                                        "the recipe's ignore list or quantize it uniformly.")
            key = name if granularity == "layer" else f"{match.group(1)}.{match.group(2)}"
            groups.setdefault(key, []).append(name)
        return groups

    def metric(self, group: str) -> str:
        """The metric a group (or single layer) is scored by, from its kind."""
        return self.metric_of_kind[re.match(self.pattern, group + ".").group(2)]


@dataclass(frozen=True)
class MixedPrecisionRecipe:
    """A registered mixed-precision method: its name, the uniform recipe it starts from, and its groups."""

    name: str
    base: str
    groups: LayerGroups


MIXED_PRECISION_RECIPES: Registry[MixedPrecisionRecipe] = Registry("mixed-precision recipe", QuantizationError)


def measure_sensitivity(
    model: nn.Module, base: QuantConfig, groups: LayerGroups, evaluate: Evaluator, calib_loop=None,
    bits: tuple[int, ...] = (4, 6, 8), progress: Callable[[], None] = lambda: None,
    around: str = "float", granularity: str = "layer",
) -> SensitivityTable:
    """Change one group at a time to each width and score it with its metric.

    Args:
        model: the floating-point model (left untouched; each trial quantizes a copy).
        base: the uniform recipe the widths replace.
        groups: the method's grouping and metric map.
        evaluate: ``evaluate(model) -> {metric: loss}`` (see :mod:`effigy.mixedprec.sensitivity`).
        calib_loop: feeds calibration inputs (channel balancing, static activations).
        bits: the candidate widths.
        around: ``"float"`` (published): every other group in FP, the score the loss against FP;
            ``"base"``: every other group at the base width, the score the change of the loss against
            uniform ``base`` (negative where a width helps through cross terms that do not survive
            when many groups move).
        granularity: ``"layer"`` or ``"block"``.
    Returns:
        The table, each metric normalised by its mean score at the lowest width.
    """
    if around not in AROUND:
        raise QuantizationError(f"around must be one of {AROUND}, got {around!r}")
    members = groups.of(model, base, granularity)
    divisors = balance_divisors(model, base, calib_loop)  # depend on neither widths nor groups: once
    build = lambda config: quantize(copy.deepcopy(model), config, calib_loop, input_divisors=divisors)
    reference = evaluate(build(base)) if around == "base" else None
    raw: dict[str, dict[int, float]] = {}
    for group, layers in members.items():
        metric = groups.metric(group)
        raw[group] = {}
        for b in bits:
            if around == "base":
                loss = 0.0 if b == base.weight.bits else \
                    evaluate(build(replace(base, layer_bits={n: b for n in layers})))[metric] - reference[metric]
            else:
                config = replace(base, include=tuple(layers), weight=replace(base.weight, bits=b), layer_bits={})
                loss = max(0.0, evaluate(build(config))[metric])  # below FP is noise
            raw[group][b] = loss
            progress()
    sizes = {g: sum(model.get_submodule(n).weight.numel() for n in layers) for g, layers in members.items()}
    metric = {g: groups.metric(g) for g in members}
    return SensitivityTable(normalise_by_metric(raw, metric, min(bits)), sizes, metric)


def mixed_precision_config(
    model: nn.Module, base: QuantConfig, groups: LayerGroups, table: SensitivityTable, average_bits: float,
    name: str | None = None, max_moved: float | None = None,
) -> tuple[QuantConfig, Assignment]:
    """The base recipe with per-layer weight widths from the ILP at ``average_bits`` (weighted by size).

    ``max_moved`` (a trust region around the uniform base width) bounds sum(size * |b - base bits|)
    by that fraction of all weights: 0.05 lets 5% of the weights move one bit, or fewer move further.
    """
    if not any(set(groups.of(model, base, g)) == set(table.groups) for g in GRANULARITIES):
        raise QuantizationError(f"the sensitivity table's groups ({table.groups[:3]}, ...) are not this model's: it "
                                "was measured on another model; re-run the sensitivity analysis for this one.")
    trust_region = None if max_moved is None else (base.weight.bits, max_moved * sum(table.sizes.values()))
    assignment = allocate(table, average_bits_budget(table, average_bits), trust_region=trust_region)
    return config_from_group_bits(model, base, groups, assignment.bits, name), assignment


def config_from_group_bits(model: nn.Module, base: QuantConfig, groups: LayerGroups, group_bits: dict[str, int],
                           name: str | None = None) -> QuantConfig:
    """The base recipe with every layer of each group at that group's width (groups per layer or per
    block, whichever the allocation names)."""
    named = set(group_bits)
    granularity = max(GRANULARITIES, key=lambda g: len(named & set(groups.of(model, base, g))))
    members = groups.of(model, base, granularity)
    missing, unknown = sorted(set(members) - named), sorted(named - set(members))
    if missing or unknown:
        raise QuantizationError(f"the allocation does not fit this model (groups missing: {missing[:3]}, unknown: "
                                f"{unknown[:3]}); allocate for this model with `effigy bench quant --model ...`.")
    layer_bits = {layer: int(group_bits[g]) for g, layers in members.items() for layer in layers}
    return replace(base, layer_bits=layer_bits, name=name or f"{base.name}-mp")


def config_from_allocation_file(model: nn.Module, recipe: str, path: str | Path) -> QuantConfig:
    """A registered mixed-precision recipe made concrete by a saved allocation (``*_allocation.json`` of
    ``effigy bench quant``): no sensitivity analysis is re-run."""
    from effigy.recipes.base import get_recipe

    if recipe not in MIXED_PRECISION_RECIPES:
        raise QuantizationError(f"{recipe!r} is not a mixed-precision recipe; choose one of "
                                f"{', '.join(MIXED_PRECISION_RECIPES)} or drop --allocation.")
    method = MIXED_PRECISION_RECIPES.get(recipe)
    return config_from_group_bits(model, get_recipe(method.base), method.groups, read_group_bits(path), recipe)


def read_group_bits(path: str | Path) -> dict[str, int]:
    """The per-group widths of an allocation file written by ``effigy bench quant``."""
    data = read_json_file(path, "an allocation written by `effigy bench quant` (*_allocation.json)", QuantizationError)
    bits = data.get("assignment", {}).get("bits") if isinstance(data, dict) and isinstance(
        data.get("assignment"), dict) else None
    require(isinstance(bits, dict) and bits, path, "assignment.bits must map each layer group to its width",
            QuantizationError)
    require(all(type(b) is int and 2 <= b <= 8 for b in bits.values()), path,
            "every width in assignment.bits must be a whole number of bits in 2..8", QuantizationError)
    return dict(bits)
