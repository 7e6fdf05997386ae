"""The mixed-precision pipeline run on a bench suite: sensitivity table, one ILP allocation per trust
region, a validation run that samples each, and the pick (uniform base included).

Generic over the registered :class:`~effigy.recipes.mixed_precision.MixedPrecisionRecipe` (ViDiT-Q's
today; MixDQ's next): the recipe brings its groups and base, this module brings the suite.
"""
from __future__ import annotations

import copy
from dataclasses import replace

from effigy.errors import QuantizationError, UnknownNameError
from effigy.evaluate.measure import Progress
from effigy.evaluate.suites import LOWER_IS_BETTER, BenchSuite, load_suite
from effigy.metrics import ssim
from effigy.mixedprec.pick import PSNR_TOLERANCE, TASK_TOLERANCE, mean_ranks, pick_allocation
from effigy.mixedprec.sensitivity import (
    Evaluator,
    propagation_gains,
    record_denoiser_calls,
    replay_evaluator,
    sample_level_evaluator,
)
from effigy.nn import QuantConfig
from effigy.nn.quantize import quantize
from effigy.recipes import MIXED_PRECISION_RECIPES, get_recipe
from effigy.recipes.mixed_precision import measure_sensitivity, mixed_precision_config
from effigy.registry import Registry

SENSITIVITY_METRIC_NAMES = ("denoiser", "propagated", "samples")


def sensitivity_evaluator(world: BenchSuite, metric: str = "denoiser", guidance_scale: float = 3.0) -> Evaluator:
    """Metric-decoupled losses of a partly quantized model against FP, on the suite's small seeded
    sensitivity run.

    Args:
        world: the suite (its FP model, sensitivity sampler and alignment judge).
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
    run = world.sample_sensitivity
    if metric == "samples":
        return sample_level_evaluator(world.fp_model, run, ssim, world.alignment)
    if not world.guidance_batch:
        raise QuantizationError(f"{world.name} runs without a classifier-free-guidance batch, so the {metric!r} "
                                "sensitivity (guided prediction and guidance direction) does not apply; use "
                                "--sensitivity-metric samples.")
    calls = record_denoiser_calls(world.fp_model, run)
    if metric == "denoiser":
        return replay_evaluator(calls, guidance_scale, [1.0 / len(calls)] * len(calls), relative=True)
    gains = propagation_gains(world.fp_model, run, calls, guidance_scale)
    return replay_evaluator(calls, guidance_scale, gains, relative=False)


def mixed_precision_variant(world: BenchSuite, settings, progress: Progress,
                            recipe: str = "vidit-q-w4a8-mp") -> tuple[QuantConfig, dict]:
    """The registered mixed-precision ``recipe`` searched on ``world`` by its own search (``SEARCHES``)."""
    return SEARCHES.get(MIXED_PRECISION_RECIPES.get(recipe).search)(world, settings, progress, recipe)


def trust_region_variant(world: BenchSuite, settings, progress: Progress,
                         recipe: str = "vidit-q-w4a8-mp") -> tuple[QuantConfig, dict]:
    """Sensitivity table + ILP allocation at ``settings.mp_average_bits``, both returned for the results.

    One allocation per trust region in ``settings.mp_max_moved``; with several, each (and the uniform
    base) samples a validation run and :func:`~effigy.mixedprec.pick.pick_allocation` keeps one.
    """
    method = MIXED_PRECISION_RECIPES.get(recipe)
    base = get_recipe(method.base)
    fp_model = world.fp_model
    n_groups = len(method.groups.of(fp_model, base, settings.mp_granularity))
    advance = progress("sensitivity (group x bits)", n_groups * len(settings.mp_candidate_bits))
    evaluator = sensitivity_evaluator(world, settings.sensitivity_metric, settings.guidance_scale)
    table = measure_sensitivity(fp_model, base, method.groups, evaluator, world.sample_calibration,
                                settings.mp_candidate_bits, advance, around=settings.mp_around,
                                granularity=settings.mp_granularity)
    regions = settings.mp_max_moved if len(settings.mp_max_moved) == 1 else (0.0, *settings.mp_max_moved)
    candidates = [(moved, *mixed_precision_config(fp_model, base, method.groups, table, settings.mp_average_bits,
                                                  recipe, moved)) for moved in regions]
    validation, chosen = None, 0
    if len(candidates) > 1:  # the first, trust region 0, is the uniform base: MP has to beat it on samples
        validation = validate_allocations(world, settings, candidates, progress)
        chosen = pick_allocation(validation, world.task_metric, LOWER_IS_BETTER)
        for row, rank in zip(validation, mean_ranks(validation, LOWER_IS_BETTER)):
            row["mean_rank"] = rank
    moved, config, assignment = candidates[chosen]
    return config, {"average_bits": settings.mp_average_bits, "table": table.to_dict(),
                    "assignment": assignment.to_dict(), "achieved_average_bits": assignment.average_bits(table),
                    "max_moved": moved, "validation": validation, "task_tolerance": TASK_TOLERANCE,
                    "psnr_tolerance": PSNR_TOLERANCE}


def validate_allocations(world: BenchSuite, settings, candidates: list[tuple], progress: Progress) -> list[dict]:
    """Each candidate allocation sampled on the validation run, quantized with the bench's calibration.
    Candidates with the same allocation are sampled once."""
    validation = validation_world(settings)
    advance = progress("validation of the allocations", len(candidates) + 1)
    reference = validation.sample_eval(world.fp_model)
    advance()
    rows, seen = [], {}
    for moved, config, assignment in candidates:
        key = tuple(sorted(assignment.bits.items()))
        if key not in seen:
            model = quantize(copy.deepcopy(world.fp_model), config, world.sample_calibration)
            seen[key] = validation.quality(validation.sample_eval(model), reference)
        rows.append({"max_moved": moved, "moved_layers": sum(b != config.weight.bits for b in assignment.bits.values()),
                     **seen[key]})
        advance()
    return rows


def validation_world(settings) -> BenchSuite:
    """The run that judges mixed-precision candidates: seed + 1 (other noise and other draws of the held-out
    prompts than the evaluation), ``validation_per_class`` per class at most."""
    per_class = min(settings.validation_per_class, settings.samples_per_class)
    return load_suite(settings.model, replace(settings, seed=settings.seed + 1, samples_per_class=per_class))


def _mixdq_variant(world: BenchSuite, settings, progress: Progress, recipe: str) -> tuple[QuantConfig, dict]:
    from effigy.bench.mixdq_search import mixdq_variant

    return mixdq_variant(world, settings, progress, recipe)


SEARCHES: Registry = Registry("mixed-precision search", QuantizationError)
SEARCHES.register("trust-region", trust_region_variant)
SEARCHES.register("mixdq", _mixdq_variant)
