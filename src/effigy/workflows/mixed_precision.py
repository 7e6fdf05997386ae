"""The mixed-precision searches of ViDiT-Q (https://arxiv.org/abs/2406.02540) and MixDQ
(https://arxiv.org/abs/2405.17873) on any denoiser: a shipped model's suite or a user's diffusers pipeline.

A search takes the float model and its seeded runs (:class:`SearchRuns`: calibration, a small sensitivity run,
a validation run with its judge) and a registered :class:`~effigy.recipes.mixed_precision.MixedPrecisionRecipe`,
and returns the concrete :class:`~effigy.nn.QuantConfig` and the record of how it was found. Which search runs
is the recipe's ``search``: ``trust-region`` (ViDiT-Q's: metric-decoupled sensitivity, one ILP per trust region
around the uniform base, the pick on the validation run) or ``mixdq`` (MixDQ's: decoupled content / quality
tables, the sweep of per-part programs, the pick by MSE, then the activation widths). Benches compare what the
search produces; :mod:`effigy.workflows.quantize` runs it for ``effigy quantize``.
"""
from __future__ import annotations

import copy
import logging
import re
import weakref
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from effigy.errors import QuantizationError, UnknownNameError
from effigy.evaluate.measure import Progress, no_progress
from effigy.evaluate.report import SettingsRecord
from effigy.evaluate.suites import LOWER_IS_BETTER, BenchSuite, SamplingSettings, load_suite
from effigy.metrics import ssim
from effigy.mixedprec import decoupled
from effigy.mixedprec.decoupled import RATIOS
from effigy.mixedprec.pick import PSNR_TOLERANCE, TASK_TOLERANCE, mean_ranks, pick_allocation
from effigy.mixedprec.sensitivity import (
    Evaluator,
    Run,
    decoupled_evaluator,
    propagation_gains,
    record_denoiser_calls,
    replay_evaluator,
    sample_level_evaluator,
)
from effigy.mixedprec.table import SensitivityTable
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
    mixed_precision_config,
)
from effigy.registry import Registry

log = logging.getLogger(__name__)

SENSITIVITY_METRIC_NAMES = ("denoiser", "propagated", "samples")
BOS_OUTLIER_RATIO = 2.0  # first token's input peak over the median token's, above which its K / V keep fp16
CalibrationLoop = Callable[[nn.Module], None]


@dataclass
class ValidationRun:
    """A seeded run, other than the sensitivity run, on which candidate allocations are sampled and judged."""

    sample: Run
    quality: Callable[[torch.Tensor, torch.Tensor], dict]  # images, FP images -> mean scores (psnr_vs_fp, ...)


@dataclass
class SearchRuns:
    """What a search samples with: the float model and its seeded runs.

    ``validation`` is built when the search first needs it (a single trust region needs none).
    ``uncond_first``: the order of a classifier-free-guidance batch (diffusers' text pipelines put the
    unconditional half first; effigy's suites and DiTPipeline the conditional half).
    """

    fp_model: nn.Module
    calibrate: CalibrationLoop
    sensitivity: Run
    validation: Callable[[], ValidationRun]
    task_metric: str = "ssim_vs_fp"
    guidance_batch: bool = True
    uncond_first: bool = False
    alignment: Callable[[torch.Tensor], torch.Tensor] | None = None  # per-image prompt alignment, if judged


@dataclass
class SearchSettings(SettingsRecord):
    """How a search runs. ``average_bits`` None: the recipe's own target (the base's width for ViDiT-Q-MP)."""

    average_bits: float | None = None
    candidate_bits: tuple[int, ...] = (3, 4, 6, 8)  # trust-region: the widths a layer may take
    granularity: str = "layer"  # trust-region: one width per linear layer, or "block" (per block and kind)
    around: str = "float"  # trust-region: one layer quantized with the rest in FP, or "base" (the rest at W4)
    sensitivity_metric: str = "denoiser"  # trust-region: or "propagated" / "samples" (see sensitivity_evaluator)
    # trust-region: ILP trust regions around the uniform base (None: no limit); with several, the validation
    # run picks one (see pick_allocation)
    max_moved: tuple[float | None, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, None)
    guidance_scale: float = 3.0
    ratios: tuple[float, ...] = RATIOS  # mixdq: content / quality splits of the weight budget
    activation_fp_fraction: float = 0.01  # mixdq: share of activations kept in floating point


SEARCHES: Registry = Registry("mixed-precision search", QuantizationError)


@torch.no_grad()
def search(runs: SearchRuns, recipe: str, settings: SearchSettings | None = None,
           progress: Progress = no_progress, single_metric: bool = False) -> tuple[QuantConfig, dict]:
    """The registered mixed-precision ``recipe`` made concrete for ``runs.fp_model`` by its own search.

    Args:
        runs: the float model and its seeded runs (:func:`suite_runs`, :func:`effigy.workflows.quantize.pipeline_runs`).
        recipe: a registered mixed-precision recipe (``vidit-q-w4a8-mp``, ``mixdq-w4a8``, ``mixdq-w3.66a16``, ...).
        settings: the search's settings (defaults: the published ones, as ``effigy bench quant`` runs them).
        progress: the progress reporter.
        single_metric: MixDQ's decoupling ablation (every layer scored by SQNR in one program).
    Returns:
        (the config, the record of the search: tables, candidates, validation and the choice).
    """
    method = MIXED_PRECISION_RECIPES.get(recipe)
    return SEARCHES.get(method.search)(runs, recipe, settings or SearchSettings(), progress, single_metric)


def target_bits(recipe: str, settings: SearchSettings) -> float:
    """The average weight width the search aims at."""
    method = MIXED_PRECISION_RECIPES.get(recipe)
    if settings.average_bits is not None:
        return settings.average_bits
    return method.weight_bits if method.weight_bits is not None else get_recipe(method.base).weight.bits


def sensitivity_evaluator(runs: SearchRuns, metric: str = "denoiser", guidance_scale: float = 3.0) -> Evaluator:
    """Metric-decoupled losses of a partly quantized model against FP, on the small seeded sensitivity run.

    Args:
        runs: the float model, its sensitivity run and (for ``"samples"``) its alignment judge.
        metric: ``"denoiser"`` (default): the FP run's calls replayed, relative squared errors averaged
            over the calls; ``"propagated"``: each call weighted by its measured gain to the final sample;
            ``"samples"``: 1 - SSIM and the drop in alignment of the final samples. docs/notes/vidit-q.md
            says why the default won.
        guidance_scale: the classifier-free guidance of the run.
    Returns:
        ``evaluate(model) -> {"visual": loss, "alignment": loss}``.
    """
    if metric not in SENSITIVITY_METRIC_NAMES:
        raise UnknownNameError(f"sensitivity metric must be one of {SENSITIVITY_METRIC_NAMES}, got {metric!r}")
    run = runs.sensitivity
    if metric == "samples":
        if runs.alignment is None:
            raise QuantizationError("the 'samples' sensitivity needs a prompt-alignment judge, and this model has "
                                    "none; use the 'denoiser' sensitivity.")
        return sample_level_evaluator(runs.fp_model, run, ssim, runs.alignment)
    if not runs.guidance_batch:
        raise QuantizationError(f"this model runs without a classifier-free-guidance batch, so the {metric!r} "
                                "sensitivity (guided prediction and guidance direction) does not apply; use the "
                                "'samples' sensitivity.")
    calls = record_denoiser_calls(runs.fp_model, run)
    if metric == "denoiser":
        return replay_evaluator(calls, guidance_scale, [1.0 / len(calls)] * len(calls), relative=True,
                                uncond_first=runs.uncond_first)
    gains = propagation_gains(runs.fp_model, run, calls, guidance_scale, uncond_first=runs.uncond_first)
    return replay_evaluator(calls, guidance_scale, gains, relative=False, uncond_first=runs.uncond_first)


def trust_region_search(runs: SearchRuns, recipe: str, settings: SearchSettings, progress: Progress,
                        _single_metric: bool = False) -> tuple[QuantConfig, dict]:
    """ViDiT-Q's search: sensitivity table + ILP allocation at the target average width.

    One allocation per trust region in ``settings.max_moved``; with several, each (and the uniform base)
    samples the validation run and :func:`~effigy.mixedprec.pick.pick_allocation` keeps one.
    """
    method = MIXED_PRECISION_RECIPES.get(recipe)
    base = get_recipe(method.base)
    average = target_bits(recipe, settings)
    fp_model = runs.fp_model
    n_groups = len(method.groups.of(fp_model, base, settings.granularity))
    advance = progress("sensitivity (group x bits)", n_groups * len(settings.candidate_bits))
    evaluator = sensitivity_evaluator(runs, settings.sensitivity_metric, settings.guidance_scale)
    table = measure_sensitivity(fp_model, base, method.groups, evaluator, runs.calibrate, settings.candidate_bits,
                                advance, around=settings.around, granularity=settings.granularity)
    regions = settings.max_moved if len(settings.max_moved) == 1 else (0.0, *settings.max_moved)
    candidates = [(moved, *mixed_precision_config(fp_model, base, method.groups, table, average, recipe, moved))
                  for moved in regions]
    validation, chosen = None, 0
    if len(candidates) > 1:  # the first, trust region 0, is the uniform base: MP has to beat it on samples
        validation = validate_allocations(runs, candidates, progress)
        chosen = pick_allocation(validation, runs.task_metric, LOWER_IS_BETTER)
        for row, rank in zip(validation, mean_ranks(validation, LOWER_IS_BETTER)):
            row["mean_rank"] = rank
    moved, config, assignment = candidates[chosen]
    log.info("%s: trust region %s chosen (%d layers off the base width)", recipe, moved,
             sum(b != config.weight.bits for b in assignment.bits.values()))
    return config, {"average_bits": average, "table": table.to_dict(), "assignment": assignment.to_dict(),
                    "achieved_average_bits": assignment.average_bits(table), "max_moved": moved,
                    "validation": validation, "task_tolerance": TASK_TOLERANCE, "psnr_tolerance": PSNR_TOLERANCE}


def validate_allocations(runs: SearchRuns, candidates: list[tuple], progress: Progress) -> list[dict]:
    """Each candidate allocation sampled on the validation run, calibrated on the calibration run.
    Candidates with the same allocation are sampled once."""
    validation = runs.validation()
    advance = progress("validation of the allocations", len(candidates) + 1)
    reference = validation.sample(runs.fp_model)
    advance()
    rows, seen = [], {}
    for moved, config, assignment in candidates:
        key = tuple(sorted(assignment.bits.items()))
        if key not in seen:
            model = quantize(copy.deepcopy(runs.fp_model), config, runs.calibrate)
            seen[key] = validation.quality(validation.sample(model), reference)
        rows.append({"max_moved": moved, "moved_layers": sum(b != config.weight.bits for b in assignment.bits.values()),
                     **seen[key]})
        advance()
    return rows


def recipe_variant_name(recipe: str, target: float) -> str:
    """The recipe's name, with its weight width replaced when the search runs it at another target."""
    method = MIXED_PRECISION_RECIPES.get(recipe)
    return recipe if target == method.weight_bits else re.sub(r"-w[\d.]+", f"-w{target:g}", recipe, count=1)


def check_target(model: nn.Module, recipe: str, average: float) -> None:
    """One clear error when ``average`` weight bits lie outside what ``recipe``'s candidate widths reach on
    ``model`` (every content layer at the lowest width to every layer at the highest)."""
    method = MIXED_PRECISION_RECIPES.get(recipe)
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


def mixdq_search(runs: SearchRuns, recipe: str, settings: SearchSettings, progress: Progress,
                 single_metric: bool = False) -> tuple[QuantConfig, dict]:
    """MixDQ's search: metric-decoupled weight sensitivities, the outer sweep of per-part integer programs, the
    pick by image MSE against FP on the validation run, the first-token decision, then the activation widths
    given the chosen weights.

    Args:
        runs: the float model and its runs.
        recipe: a registered MixDQ recipe.
        settings: ``average_bits`` overrides the recipe's target; ``ratios``, ``activation_fp_fraction``.
        progress: the progress reporter.
        single_metric: the decoupling ablation (every layer scored by SQNR, one program).
    Returns:
        (config, allocation record with both tables, the sweep and its validation).
    """
    method = MIXED_PRECISION_RECIPES.get(recipe)
    groups = method.groups.with_single_metric(QUALITY) if single_metric else method.groups
    base = get_recipe(method.base)
    target = target_bits(recipe, settings)
    name = recipe_variant_name(recipe, target) + ("-single-metric" if single_metric else "")
    fp_model = runs.fp_model
    evaluate = decoupled_evaluator(fp_model, runs.sensitivity, record_denoiser_calls(fp_model, runs.sensitivity), ssim)
    table = _weight_table(runs, base, groups, evaluate, progress, name)
    parts = parts_of(groups, table.groups)
    points = decoupled.sweep(table, parts, CONTENT, QUALITY, target, tuple(settings.ratios))
    validation = validate_points(runs, base, groups, points, progress, name)
    best = min(range(len(points)), key=lambda i: (validation[i]["mse_vs_fp"], i))
    config = config_from_group_bits(fp_model, base, groups, points[best].bits, name)
    record = {"name": name, "target_weight_bits": target, "weight_table": table.to_dict(), "parts": parts,
              "sweep": [p.to_dict() | v for p, v in zip(points, validation)], "chosen": best,
              "assignment": {"bits": points[best].bits},
              "achieved_average_bits": _average(points[best].bits, table.sizes)}
    config, record["bos"] = _decide_bos_handling(runs, config)
    if base.activation is not None and method.activation_bits is not None:
        config, record["activations"] = _allocate_activations(runs, settings, config, groups, evaluate,
                                                               method.activation_bits, progress, name)
    return config, record


def _decide_bos_handling(runs: SearchRuns, config: QuantConfig) -> tuple[QuantConfig, dict]:
    """Keep the first token's half-precision K / V path only where the first token can skew the other tokens'
    quantization: its input peak stands out (MixDQ's measurement) *and* the layers quantize their input with a
    range shared across tokens. Per-token dynamic ranges, or weight-only quantization, give every token its
    own range, so an outlier first token costs the others nothing and the split would hold fp16 weights for
    nothing."""
    layers = [n for n in find_targets(runs.fp_model, config.include, config.ignore) if config.splits_first_token(n)]
    if not layers:
        return config, {"kept": False, "reason": "the recipe splits no layer"}
    ratio = first_token_outlier_ratio(runs.fp_model, layers, runs.calibrate)
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


def _weight_table(runs: SearchRuns, base: QuantConfig, groups: LayerGroups, evaluate, progress: Progress, name: str):
    tables = _TABLES.setdefault(runs.fp_model, {})
    key = (repr(base.to_dict()), tuple(sorted(groups.metric_of_kind.items())))
    if key not in tables:
        layers = groups.of(runs.fp_model, base)
        advance = progress(f"{name}: weight sensitivity", sum(len(groups.candidates(g, ())) for g in layers))
        tables[key] = measure_sensitivity(runs.fp_model, base, groups, evaluate, runs.calibrate, (), advance,
                                          normalise=False)
    return tables[key]


def validate_points(runs: SearchRuns, base: QuantConfig, groups: LayerGroups, points, progress: Progress,
                    name: str) -> list[dict]:
    """Image MSE against FP of each sweep point's allocation on the validation run."""
    validation = runs.validation()
    reference = validation.sample(runs.fp_model)
    advance = progress(f"{name}: validation of {len(points)} allocations", len(points))
    rows = []
    for point in points:
        config = config_from_group_bits(runs.fp_model, base, groups, point.bits)
        images = validation.sample(quantize(copy.deepcopy(runs.fp_model), config, runs.calibrate))
        rows.append({"mse_vs_fp": torch.mean((images - reference) ** 2).item()})
        advance()
    return rows


def _allocate_activations(runs, settings, config, groups, evaluate, target, progress, name):
    layers = list(groups.of(runs.fp_model, config))
    advance = progress(f"{name}: activation sensitivity", len(layers) * len(ACTIVATION_BITS))
    table = measure_activation_sensitivity(runs.fp_model, config, groups, evaluate, runs.calibrate,
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


SEARCHES.register("trust-region", trust_region_search)
SEARCHES.register("mixdq", mixdq_search)


def suite_runs(world: BenchSuite, settings: SamplingSettings, validation_per_class: int = 10) -> SearchRuns:
    """The runs of a shipped model's suite: its calibration and sensitivity runs, and a validation run on
    seed + 1 (other noise and other draws of the held-out prompts than the evaluation) of at most
    ``validation_per_class`` per class, judged by the suite's own quality scores."""
    def validation() -> ValidationRun:
        per_class = min(validation_per_class, settings.samples_per_class)
        suite = load_suite(settings.model, replace(settings, seed=settings.seed + 1, samples_per_class=per_class))
        return ValidationRun(suite.sample_eval, suite.quality)

    return SearchRuns(world.fp_model, world.sample_calibration, world.sample_sensitivity, validation,
                      world.task_metric, world.guidance_batch, alignment=world.alignment)


@dataclass
class ShippedSearchSettings(SamplingSettings):
    """A shipped model's suite as the benches run its search (``effigy bench quant``; ``effigy bench mixdq`` for the
    few-step student): the same settings give the same allocation."""

    calibration_per_class: int = 2
    samples_per_class: int = 20
    sensitivity_per_class: int = 2
    sensitivity_steps: int = 10
    validation_per_class: int = 10


# the few-step student samples in 4 steps without a CFG batch: its search scores samples (bench mixdq's settings)
SHIPPED_OVERRIDES = {"t2i-shapes-lcm": ({"steps": 4, "sensitivity_steps": 4},
                                        {"sensitivity_metric": "samples", "max_moved": (0.05, 0.1, 0.2, None)})}


def shipped_search(name: str, seed: int = 0, average_bits: float | None = None) -> tuple[SearchRuns, SearchSettings]:
    """The runs and search settings of the shipped generator ``name``, as its bench runs them."""
    suite_overrides, search_overrides = SHIPPED_OVERRIDES.get(name, ({}, {}))
    settings = ShippedSearchSettings(model=name, seed=seed, **suite_overrides)
    runs = suite_runs(load_suite(name, settings), settings, settings.validation_per_class)
    return runs, SearchSettings(average_bits=average_bits, **search_overrides)
