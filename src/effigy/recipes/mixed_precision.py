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

import torch
from torch import nn

from effigy.core.hooks import observing
from effigy.errors import QuantizationError
from effigy.mixedprec import Assignment, SensitivityTable, allocate, average_bits_budget
from effigy.mixedprec.sensitivity import Evaluator, normalise_by_metric
from effigy.nn import QuantConfig, find_targets
from effigy.nn.config import FLOAT_ACTIVATION_BITS
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
    bits_of_kind: dict[str, tuple[int, ...]] | None = None  # candidate widths per kind (None: the caller's)

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

    def kind(self, group: str) -> str:
        return re.match(self.pattern, group + ".").group(2)

    def metric(self, group: str) -> str:
        """The metric a group (or single layer) is scored by, from its kind."""
        return self.metric_of_kind[self.kind(group)]

    def candidates(self, group: str, default: tuple[int, ...]) -> tuple[int, ...]:
        """The widths a group may take: its kind's own (MixDQ: content layers reach 2 bits, quality layers 4),
        or ``default``."""
        return default if self.bits_of_kind is None else tuple(self.bits_of_kind[self.kind(group)])

    def with_single_metric(self, metric: str) -> "LayerGroups":
        """The same groups all scored by ``metric``: the decoupling ablation."""
        return replace(self, metric_of_kind=dict.fromkeys(self.metric_of_kind, metric))


@dataclass(frozen=True)
class MixedPrecisionRecipe:
    """A registered mixed-precision method: its name, the uniform recipe it starts from, its groups, and how
    its widths are searched (``search``: a key of ``workflows.mixed_precision.SEARCHES``) at which average
    weight / activation widths (None: the search's ``average_bits``; activations None: the base's, uniform)."""

    name: str
    base: str
    groups: LayerGroups
    search: str = "trust-region"
    weight_bits: float | None = None
    activation_bits: float | None = None


MIXED_PRECISION_RECIPES: Registry[MixedPrecisionRecipe] = Registry("mixed-precision recipe", QuantizationError)


def register_mixed_precision(recipe: MixedPrecisionRecipe) -> MixedPrecisionRecipe:
    """Register a mixed-precision method under its name, flagged ``mixed-precision`` in the one recipe list."""
    from effigy.recipes.base import RECIPE_KINDS

    RECIPE_KINDS.register(recipe.name, "mixed-precision")
    return MIXED_PRECISION_RECIPES.register(recipe.name, recipe)


def measure_sensitivity(
    model: nn.Module, base: QuantConfig, groups: LayerGroups, evaluate: Evaluator, calib_loop=None,
    bits: tuple[int, ...] = (4, 6, 8), progress: Callable[[], None] = lambda: None,
    around: str = "float", granularity: str = "layer", normalise: bool = True,
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
        normalise: divide each metric by its mean score at the lowest width (one objective over all
            metrics); MixDQ solves one program per metric and keeps the raw losses.
    Returns:
        The table.
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
        for b in groups.candidates(group, bits):
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
    return SensitivityTable(normalise_by_metric(raw, metric) if normalise else raw, sizes, metric)


def measure_activation_sensitivity(
    model: nn.Module, config: QuantConfig, groups: LayerGroups, evaluate: Evaluator, calib_loop=None,
    bits: tuple[int, ...] = (4, 8), progress: Callable[[], None] = lambda: None,
) -> SensitivityTable:
    """With the weights at ``config``'s widths, quantize one layer's activations at a time (every other
    layer's in floating point) and score the increase of its metric over the weight-quantized model.

    Sizes are activation elements per sample (what an activation width stores), from one calibration run.
    Scores are raw: MixDQ solves one program per metric."""
    layers = list(groups.of(model, config, "layer"))
    all_float = dict.fromkeys(layers, FLOAT_ACTIVATION_BITS)
    divisors = balance_divisors(model, config, calib_loop)
    build = lambda widths: quantize(copy.deepcopy(model), replace(config, layer_activation_bits=widths), calib_loop,
                                    input_divisors=divisors)
    reference = evaluate(build(all_float))
    raw: dict[str, dict[int, float]] = {}
    for layer in layers:
        metric = groups.metric(layer)
        raw[layer] = {}
        for b in bits:
            raw[layer][b] = max(0.0, evaluate(build({**all_float, layer: b}))[metric] - reference[metric])
            progress()
    return SensitivityTable(raw, activation_sizes(model, layers, calib_loop), {g: groups.metric(g) for g in layers})


def activation_sizes(model: nn.Module, layers: list[str], calib_loop) -> dict[str, int]:
    """Input elements per sample of each layer, the largest seen over a calibration run."""
    sizes = dict.fromkeys(layers, 0)

    def record(name: str, _module, args) -> None:
        sizes[name] = max(sizes[name], args[0].numel() // max(1, args[0].shape[0]))

    with observing(model, layers, record), torch.no_grad():
        calib_loop(model)
    return sizes


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
    ``effigy bench quant`` or ``effigy bench mixdq``): no sensitivity analysis is re-run. MixDQ's files hold
    one record per recipe, each with its weight widths and, for W*A8, its activation widths."""
    from effigy.recipes.base import get_recipe

    if recipe not in MIXED_PRECISION_RECIPES:
        raise QuantizationError(f"{recipe!r} is not a mixed-precision recipe; choose one of "
                                f"{', '.join(MIXED_PRECISION_RECIPES)} or drop --allocation.")
    method = MIXED_PRECISION_RECIPES.get(recipe)
    record = read_allocation(path, recipe)
    config = config_from_group_bits(model, get_recipe(method.base), method.groups, record["weight_bits"], recipe)
    if record["activation_bits"]:
        config = replace(config, layer_activation_bits=record["activation_bits"])
    return config


def read_group_bits(path: str | Path, recipe: str | None = None) -> dict[str, int]:
    """The per-group weight widths of an allocation file (for ``recipe`` where the file holds several)."""
    return read_allocation(path, recipe)["weight_bits"]


def read_allocation(path: str | Path, recipe: str | None = None) -> dict[str, dict[str, int]]:
    """{"weight_bits": group -> width, "activation_bits": layer -> width (16: float)} from an allocation file
    written by ``effigy bench quant`` (one record) or ``effigy bench mixdq`` (one record per recipe)."""
    data = read_json_file(path, "an allocation written by `effigy bench quant` or `effigy bench mixdq` "
                          "(*_allocation.json)", QuantizationError)
    if isinstance(data, dict) and "assignment" not in data and recipe in data:
        data = data[recipe]
    bits = data.get("assignment", {}).get("bits") if isinstance(data, dict) and isinstance(
        data.get("assignment"), dict) else None
    require(isinstance(bits, dict) and bits, path, "assignment.bits must map each layer group to its width"
            + (f" (or the file must hold a record for {recipe})" if recipe else ""), QuantizationError)
    require(all(type(b) is int and 2 <= b <= 8 for b in bits.values()), path,
            "every width in assignment.bits must be a whole number of bits in 2..8", QuantizationError)
    activations = data.get("activations") or {}
    act_bits = activations.get("bits", {}) if isinstance(activations, dict) else None
    require(isinstance(act_bits, dict) and all(type(b) is int and (2 <= b <= 8 or b == FLOAT_ACTIVATION_BITS)
                                               for b in act_bits.values()), path,
            f"activations.bits must map layers to widths in 2..8 or {FLOAT_ACTIVATION_BITS} (float)",
            QuantizationError)
    return {"weight_bits": dict(bits), "activation_bits": dict(act_bits)}
