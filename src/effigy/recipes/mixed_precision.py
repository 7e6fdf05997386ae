"""ViDiT-Q's metric-decoupled mixed precision: measure how much each layer group hurts the metric it
affects, at each candidate weight bit-width, then let the integer program pick one width per group.

Every target layer belongs to a (block, kind) with kind one of
  attn1  self-attention projections  -> scored by visual quality against the FP output
  ff     MLP                          -> visual quality
  attn2  cross-attention (text)       -> text-image alignment
  norm1  adaLN modulation (scale/shift of every token)   -> visual quality
The unit that gets one width is, with ``granularity="layer"`` (default), each linear layer on its own
(q, k, v and output projections apart); with ``"block"``, all layers of one (block, kind). Per block,
W4A8-MP lost to uniform W4A8 on both shipped models: a (block, kind) mixes layers that hardly matter
(e.g. cross-attention keys) with ones that matter a lot (its output projection), so upgrading one
had to be paid for by degrading another whole group. Per layer, the ILP buys 6-bit cross-attention
output projections with 3-bit cross-attention keys (see README for what that gains).
(A first run scored adaLN by class agreement: that metric is noise-level at any width on the digits
DiT, so the ILP pushed adaLN to 3 bits and visual quality fell below uniform W4A8.)
Scores are measured one layer at a time with the rest in floating point by default (the published
form; ``around="float"``): each score is then that layer's own error, free of cross terms with the
others' rounding. Measured at the operating point instead (the rest at uniform W4, the score the
change against it), a layer often "improved" the error by going to 3 bits through such cross terms,
and the ILP spent those false savings (shapes model: 32.8 dB vs 34.1 uniform; around FP: 34.4).
The bench also limits how far the ILP may move from uniform W4 (``allocate``'s trust region): far
from it the errors of many moved layers compound beyond the additive model (digits DiT: unlimited,
SSIM fell below uniform's). How far is far differs per model, so the bench allocates at several trust
regions and keeps the one that does best on a validation run (``quant_bench.pick_allocation``).
Each metric's scores are divided by that metric's mean absolute score at the lowest width, so that a
visual loss and an alignment loss weigh alike in one objective.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Callable

from torch import nn

from effigy.errors import QuantizationError
from effigy.mixedprec import Assignment, SensitivityTable, allocate, average_bits_budget
from effigy.nn import QuantConfig, find_targets
from effigy.nn.quantize import balance_divisors, quantize

GROUP_METRIC = {"attn1": "visual", "ff": "visual", "attn2": "alignment", "norm1": "visual"}
CANDIDATE_BITS = (4, 6, 8)
_GROUP_PATTERN = re.compile(r"^(transformer_blocks\.\d+)\.(attn1|attn2|ff|norm1)\.")

# evaluate(model) -> {"visual": loss vs FP, "alignment": loss vs FP}, larger is worse
Evaluator = Callable[[nn.Module], dict[str, float]]


GRANULARITIES = ("layer", "block")
AROUND = ("float", "base")  # what the other groups are while one is scored: see measure_sensitivity


def layer_groups(model: nn.Module, config: QuantConfig, granularity: str = "layer") -> dict[str, list[str]]:
    """The recipe's target layers, gathered into the units that get one width each: (block, kind)
    groups, or single layers (each its own group, named by the layer)."""
    if granularity not in GRANULARITIES:
        raise QuantizationError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    groups: dict[str, list[str]] = {}
    for name in find_targets(model, config.include, config.ignore):
        match = _GROUP_PATTERN.match(name + ".")
        if match is None:
            raise QuantizationError(f"layer {name!r} belongs to no known group (transformer_blocks.N.attn1|attn2|ff|"
                                    "norm1); add it to the recipe's ignore list or quantize it uniformly.")
        key = name if granularity == "layer" else f"{match.group(1)}.{match.group(2)}"
        groups.setdefault(key, []).append(name)
    return groups


def group_metric(group: str) -> str:
    """The metric a group (or single layer) is scored by, from its kind."""
    return GROUP_METRIC[_GROUP_PATTERN.match(group + ".").group(2)]


def measure_sensitivity(
    model: nn.Module, base: QuantConfig, evaluate: Evaluator, calib_loop=None,
    bits: tuple[int, ...] = CANDIDATE_BITS, progress: Callable[[], None] = lambda: None,
    around: str = "float", granularity: str = "layer",
) -> SensitivityTable:
    """Change one group at a time to each width and score it with its metric.

    ``around="float"`` (default, the published form): every other group stays in floating point and
    the score is the loss against FP. ``around="base"`` measures at the operating point: every other
    group stays at the base recipe's width and the score is the change of the loss against uniform
    ``base`` (negative for a width that helps, often through cross terms with the other groups'
    rounding that do not survive when the ILP moves many groups at once).
    """
    if around not in AROUND:
        raise QuantizationError(f"around must be one of {AROUND}, got {around!r}")
    groups = layer_groups(model, base, granularity)
    divisors = balance_divisors(model, base, calib_loop)  # depend on neither widths nor groups: once
    build = lambda config: quantize(copy.deepcopy(model), config, calib_loop, input_divisors=divisors)
    reference = evaluate(build(base)) if around == "base" else None
    raw: dict[str, dict[int, float]] = {}
    for group, layers in groups.items():
        metric = group_metric(group)
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
    sizes = {g: sum(model.get_submodule(n).weight.numel() for n in layers) for g, layers in groups.items()}
    metric = {g: group_metric(g) for g in groups}
    return SensitivityTable(_normalise(raw, metric, min(bits)), sizes, metric)


def _normalise(raw: dict[str, dict[int, float]], metric: dict[str, str], low: int) -> dict[str, dict[int, float]]:
    scale = {}
    for name in set(metric.values()):
        lows = [abs(raw[g][low]) for g in raw if metric[g] == name]
        scale[name] = (sum(lows) / len(lows)) or 1.0
    return {g: {b: v / scale[metric[g]] for b, v in row.items()} for g, row in raw.items()}


MIXED_PRECISION_RECIPES = {"vidit-q-w4a8-mp": "vidit-q-w4a8"}  # MP recipe -> the uniform recipe it starts from


def mixed_precision_config(
    model: nn.Module, base: QuantConfig, table: SensitivityTable, average_bits: float, name: str | None = None,
    max_moved: float | None = None,
) -> tuple[QuantConfig, Assignment]:
    """The base recipe with per-layer weight widths from the ILP at ``average_bits`` (weighted by size).

    ``max_moved`` (a trust region around the uniform base width) bounds sum(size * |b - base bits|)
    by that fraction of all weights: 0.05 lets 5% of the weights move one bit, or fewer move further.
    """
    if not any(set(layer_groups(model, base, g)) == set(table.groups) for g in GRANULARITIES):
        raise QuantizationError(f"the sensitivity table's groups ({table.groups[:3]}, ...) are not this model's: it "
                                "was measured on another model; re-run the sensitivity analysis for this one.")
    trust_region = None if max_moved is None else (base.weight.bits, max_moved * sum(table.sizes.values()))
    assignment = allocate(table, average_bits_budget(table, average_bits), trust_region=trust_region)
    return config_from_group_bits(model, base, assignment.bits, name), assignment


def config_from_group_bits(model: nn.Module, base: QuantConfig, group_bits: dict[str, int],
                           name: str | None = None) -> QuantConfig:
    """The base recipe with every layer of each group at that group's width (groups per layer or per
    block, whichever the allocation names)."""
    named = set(group_bits)
    granularity = max(GRANULARITIES, key=lambda g: len(named & set(layer_groups(model, base, g))))
    groups = layer_groups(model, base, granularity)
    missing, unknown = sorted(set(groups) - set(group_bits)), sorted(set(group_bits) - set(groups))
    if missing or unknown:
        raise QuantizationError(f"the allocation does not fit this model (groups missing: {missing[:3]}, unknown: "
                                f"{unknown[:3]}); allocate for this model with `effigy bench quant --model ...`.")
    layer_bits = {layer: int(group_bits[g]) for g, layers in groups.items() for layer in layers}
    return replace(base, layer_bits=layer_bits, name=name or f"{base.name}-mp")


def config_from_allocation_file(model: nn.Module, recipe: str, path: str | Path) -> QuantConfig:
    """A mixed-precision recipe made concrete by a saved allocation (``*_allocation.json`` of
    ``effigy bench quant``): no sensitivity analysis is re-run."""
    from effigy.recipes.base import get_recipe

    if recipe not in MIXED_PRECISION_RECIPES:
        raise QuantizationError(f"{recipe!r} is not a mixed-precision recipe; choose one of "
                                f"{sorted(MIXED_PRECISION_RECIPES)} or drop --allocation.")
    return config_from_group_bits(model, get_recipe(MIXED_PRECISION_RECIPES[recipe]), read_group_bits(path), recipe)


def read_group_bits(path: str | Path) -> dict[str, int]:
    """The per-group widths of an allocation file written by ``effigy bench quant``."""
    try:
        return {g: int(b) for g, b in json.loads(Path(path).read_text())["assignment"]["bits"].items()}
    except FileNotFoundError:
        raise QuantizationError(f"no allocation file at {path}: run `effigy bench quant` to write one.") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as error:
        raise QuantizationError(f"{path} is not an allocation written by effigy bench quant ({error!r}).") from None
