"""MixDQ's search on a bench suite (https://arxiv.org/abs/2405.17873): metric-decoupled weight sensitivities,
the outer sweep of per-part integer programs, the pick by image MSE against FP on a validation run, then the
activation widths given the chosen weights.

The ablations share everything but one step: ``single_metric`` scores every layer by the quality metric
(SQNR) in one program; the BOS ablation (``recipes.mixdq.without_bos_handling``) keeps the chosen widths and
drops the first token's half-precision path.
"""
from __future__ import annotations

import copy
import logging
import re
import weakref
from dataclasses import replace

import torch

from effigy.bench.mixed_precision import validation_world
from effigy.evaluate.measure import Progress
from effigy.evaluate.suites import BenchSuite
from effigy.metrics import ssim
from effigy.mixedprec import decoupled
from effigy.mixedprec.sensitivity import decoupled_evaluator, record_denoiser_calls
from effigy.nn import QuantConfig, find_targets
from effigy.nn.config import FLOAT_ACTIVATION_BITS
from effigy.nn.first_token import first_token_outlier_ratio
from effigy.nn.quantize import quantize
from effigy.recipes import MIXED_PRECISION_RECIPES, get_recipe
from effigy.recipes.mixdq import ACTIVATION_BITS, CONTENT, QUALITY, without_bos_handling
from effigy.recipes.mixed_precision import (
    LayerGroups,
    config_from_group_bits,
    measure_activation_sensitivity,
    measure_sensitivity,
)

log = logging.getLogger(__name__)
BOS_OUTLIER_RATIO = 2.0  # first token's input peak over the median token's, above which its K / V keep fp16


def recipe_variant_name(recipe: str, target: float) -> str:
    """The recipe's name, with its weight width replaced when the bench runs it at another target."""
    method = MIXED_PRECISION_RECIPES.get(recipe)
    return recipe if target == method.weight_bits else re.sub(r"-w[\d.]+", f"-w{target:g}", recipe, count=1)


def check_mixdq_target(recipe: str, average: float, model_name: str = "t2i-shapes-lcm") -> None:
    """One clear error when ``average`` weight bits lie outside what ``recipe``'s candidate widths reach on the
    model (every content layer at 2 bits to every layer at 8)."""
    from effigy.mixedprec.table import SensitivityTable
    from effigy.models.zoo import load_zoo_model

    method = MIXED_PRECISION_RECIPES.get(recipe)
    model, _ = load_zoo_model(model_name)
    layers = method.groups.of(model, get_recipe(method.base))
    sizes = {g: sum(model.get_submodule(n).weight.numel() for n in members) for g, members in layers.items()}
    zeros = {g: dict.fromkeys(method.groups.candidates(g, ()), 0.0) for g in layers}
    decoupled.check_target(SensitivityTable(zeros, sizes), average)


def parts_of(groups: LayerGroups, names: list[str]) -> dict[str, list[str]]:
    """Layers gathered by the metric that scores them: MixDQ's content and quality parts."""
    parts: dict[str, list[str]] = {}
    for name in names:
        parts.setdefault(groups.metric(name), []).append(name)
    return parts


def mixdq_variant(world: BenchSuite, settings, progress: Progress, recipe: str,
                  single_metric: bool = False) -> tuple[QuantConfig, dict]:
    """The MixDQ config of ``recipe`` for ``world`` and the record of how it was found.

    Args:
        world: the suite (FP model, sensitivity and calibration runs).
        settings: the bench settings (``mp_average_bits`` overrides the recipe's target when set;
            ``mp_ratios``, ``validation_per_class``, ``activation_fp_fraction``).
        recipe: a registered MixDQ recipe.
        single_metric: the decoupling ablation (every layer scored by SQNR, one program).
    Returns:
        (config, allocation record with both tables, the sweep and its validation).
    """
    method = MIXED_PRECISION_RECIPES.get(recipe)
    groups = method.groups.with_single_metric(QUALITY) if single_metric else method.groups
    base = get_recipe(method.base)
    target = getattr(settings, "mixdq_bits", None) or method.weight_bits
    name = recipe_variant_name(recipe, target) + ("-single-metric" if single_metric else "")
    fp_model = world.fp_model
    evaluate = decoupled_evaluator(fp_model, world.sample_sensitivity,
                                   record_denoiser_calls(fp_model, world.sample_sensitivity), ssim)
    table = _weight_table(world, base, groups, evaluate, progress, name)
    parts = parts_of(groups, table.groups)
    points = decoupled.sweep(table, parts, CONTENT, QUALITY, target, tuple(settings.mp_ratios))
    validation = validate_points(world, settings, base, groups, points, progress, name)
    best = min(range(len(points)), key=lambda i: (validation[i]["mse_vs_fp"], i))
    config = config_from_group_bits(fp_model, base, groups, points[best].bits, name)
    record = {"name": name, "target_weight_bits": target, "weight_table": table.to_dict(), "parts": parts,
              "sweep": [p.to_dict() | v for p, v in zip(points, validation)], "chosen": best,
              "assignment": {"bits": points[best].bits},
              "achieved_average_bits": _average(points[best].bits, table.sizes)}
    config, record["bos"] = _decide_bos_handling(world, config)
    if base.activation is not None and method.activation_bits is not None:
        config, record["activations"] = _allocate_activations(world, settings, config, groups, evaluate,
                                                               method.activation_bits, progress, name)
    return config, record


def _decide_bos_handling(world: BenchSuite, config: QuantConfig) -> tuple[QuantConfig, dict]:
    """Keep the first token's half-precision K / V path only where the first token can skew the other tokens'
    quantization: its input peak stands out (MixDQ's measurement) *and* the layers quantize their input with a
    range shared across tokens. Per-token dynamic ranges, or weight-only quantization, give every token its
    own range, so an outlier first token costs the others nothing and the split would hold fp16 weights for
    nothing."""
    layers = [n for n in find_targets(world.fp_model, config.include, config.ignore) if config.splits_first_token(n)]
    if not layers:
        return config, {"kept": False, "reason": "the recipe splits no layer"}
    ratio = first_token_outlier_ratio(world.fp_model, layers, world.sample_calibration)
    shared = shares_range_across_tokens(config)
    kept = shared and ratio >= BOS_OUTLIER_RATIO
    log.info("first-token / median real-token peak at the cross-attention K/V inputs: %.2f; range shared across "
             "tokens: %s -> BOS split %s", ratio, shared, "kept" if kept else "dropped")
    decided = config if kept else replace(without_bos_handling(config), name=config.name)
    return decided, {"kept": kept, "outlier_ratio": ratio, "threshold": BOS_OUTLIER_RATIO,
                     "range_shared_across_tokens": shared, "layers": layers}


def shares_range_across_tokens(config: QuantConfig) -> bool:
    """Whether the text tokens at a layer's input share one activation range (static or per-tensor)."""
    return config.activation is not None and config.activation.granularity != "token"


# model -> {(base, metric map): table}: the recipes on one base (mixdq-w8a8, mixdq-w4a8) share one analysis
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weight_table(world: BenchSuite, base: QuantConfig, groups: LayerGroups, evaluate, progress: Progress, name: str):
    tables = _TABLES.setdefault(world.fp_model, {})
    key = (repr(base.to_dict()), tuple(sorted(groups.metric_of_kind.items())))
    if key not in tables:
        layers = groups.of(world.fp_model, base)
        advance = progress(f"{name}: weight sensitivity", sum(len(groups.candidates(g, ())) for g in layers))
        tables[key] = measure_sensitivity(world.fp_model, base, groups, evaluate, world.sample_calibration, (),
                                          advance, normalise=False)
    return tables[key]


def validate_points(world: BenchSuite, settings, base: QuantConfig, groups: LayerGroups, points, progress: Progress,
                    name: str) -> list[dict]:
    """Image MSE against FP of each sweep point's allocation on the validation run (seed + 1)."""
    validation = validation_world(settings)
    reference = validation.sample_eval(world.fp_model)
    advance = progress(f"{name}: validation of {len(points)} allocations", len(points))
    rows = []
    for point in points:
        config = config_from_group_bits(world.fp_model, base, groups, point.bits)
        images = validation.sample_eval(quantize(copy.deepcopy(world.fp_model), config, world.sample_calibration))
        rows.append({"mse_vs_fp": torch.mean((images - reference) ** 2).item()})
        advance()
    return rows


def _allocate_activations(world, settings, config, groups, evaluate, target, progress, name):
    layers = list(groups.of(world.fp_model, config))
    advance = progress(f"{name}: activation sensitivity", len(layers) * len(ACTIVATION_BITS))
    table = measure_activation_sensitivity(world.fp_model, config, groups, evaluate, world.sample_calibration,
                                           ACTIVATION_BITS, advance)
    widths = decoupled.allocate_activations(table, parts_of(groups, table.groups), target,
                                            settings.activation_fp_fraction)
    layer_bits = {n: FLOAT_ACTIVATION_BITS if b is None else b for n, b in widths.items()}
    log.info("%s: activations of %s kept in floating point", name, ", ".join(n for n, b in widths.items() if b is None))
    return replace(config, layer_activation_bits=layer_bits), {
        "target_activation_bits": target, "table": table.to_dict(), "bits": layer_bits,
        "kept_in_float": [n for n, b in widths.items() if b is None]}


def _average(bits: dict[str, int], sizes: dict[str, int]) -> float:
    return sum(sizes[g] * b for g, b in bits.items()) / sum(sizes[g] for g in bits)
