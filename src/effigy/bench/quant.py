"""Side-by-side quantization benchmark on a shipped model: FP against each recipe, one run.

Every variant samples the same prompts (digits: class labels; text-to-image: held-out captions) from
the same seeded noise, so quality against the FP output (PSNR, SSIM) isolates the quantization
error; the world's task score (class accuracy / prompt adherence) and FID on its features judge
the samples themselves (see :mod:`effigy.evaluate.suites`). Latency and peak memory are
measured in the same process, variants interleaved, and reported as ratios to FP.
"""
from __future__ import annotations

import copy
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from effigy.attention.search import relative_l2
from effigy.errors import UnknownNameError
from effigy.evaluate.measure import Progress, machine_facts, median_seconds, no_progress, rss_mib, run_in_fresh_process
from effigy.evaluate.suites import LOWER_IS_BETTER, BenchSuite, SamplingSettings, load_suite
from effigy.memory import held_bytes
from effigy.metrics import ssim
from effigy.nn import QuantConfig
from effigy.nn.quantize import quantize, weight_nbytes
from effigy.recipes import fast_cpu_variant, get_recipe
from effigy.recipes.mixed_precision import layer_groups, measure_sensitivity, mixed_precision_config

MIXED_PRECISION = "vidit-q-w4a8-mp"
# also run on the fbgemm integer GEMM: W8 and the int4-weight path (4-bit grid fed to the int8 kernel)
FAST_PATH_RECIPES = ("vidit-q-w8a8", "vidit-q-w4a8")
SENSITIVITY_METRIC_NAMES = ("denoiser", "propagated", "samples")  # see sensitivity_evaluator
# (variant, baseline) pairs whose paired differences get bootstrap intervals: is MP better than uniform W4
# beyond noise, and do W8A8 / W4A8 differ from FP beyond noise?
COMPARISONS = ((MIXED_PRECISION, "vidit-q-w4a8"), ("vidit-q-w8a8", "fp32"), ("vidit-q-w4a8", "fp32"))


@dataclass
class QuantBenchSettings(SamplingSettings):
    recipes: tuple[str, ...] = ("naive-w8a8", "vidit-q-w8a8", "rtn-w4a8", "vidit-q-w4a8", "vidit-q-w4a8-ts",
                                MIXED_PRECISION)
    fast_path: bool = True  # adds the fbgemm integer-kernel runs of vidit-q-w8a8 and vidit-q-w4a8
    mp_average_bits: float = 4.0  # the MP budget: the same average weight bits as uniform W4
    mp_candidate_bits: tuple[int, ...] = (3, 4, 6, 8)
    mp_granularity: str = "layer"  # one width per linear layer, or "block": per (block, kind) group
    sensitivity_metric: str = "denoiser"  # or "propagated" / "samples" (see sensitivity_evaluator)
    mp_around: str = "float"  # sensitivity of one layer with the rest in FP, or "base": the rest at uniform W4
    # ILP trust regions around uniform W4 (fraction of weights x bits moved; None: no limit). With more than
    # one, a validation run (seed + 1) picks the allocation: see pick_allocation
    mp_max_moved: tuple[float | None, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, None)
    validation_per_class: int = 10  # validation run size (at most samples_per_class)
    sensitivity_per_class: int = 2  # sensitivity runs sample 2 images per class ...
    sensitivity_steps: int = 10  # ... with 10 steps (other seeds than the evaluation)
    samples_per_class: int = 50
    calibration_per_class: int = 2
    measure_memory: bool = True  # a fresh process per variant (~10 s each)
    peer: bool = True  # compare W8A8 with torchao's on one denoiser call, if torchao is installed
    bootstrap_resamples: int = 1000  # intervals of the paired differences (COMPARISONS)


@dataclass
class Variant:
    name: str
    model: nn.Module
    config: QuantConfig | None = None
    images: torch.Tensor | None = None
    row: dict = field(default_factory=dict)


def sensitivity_evaluator(world: BenchSuite, metric: str = "denoiser", guidance_scale: float = 3.0):
    """Metric-decoupled losses of a partly quantized model against FP, on the world's small seeded
    sensitivity run.

    ``metric="denoiser"`` (default) replays the FP run's denoiser calls (teacher-forced on the FP trajectory):
    visual = relative squared error of the guided prediction (noise or v), alignment = relative squared error
    of the guidance direction (conditional minus unconditional: the part of the prediction that
    carries the prompt), averaged over the calls. Errors are measured where the layer acts, so they
    are smooth in the width and nearly additive across groups.
    ``metric="propagated"`` weights each call's squared errors by that call's measured gain to the
    final sample (see :func:`propagation_gains`), so the sum estimates the squared change of the final
    samples, relative to their size (alignment: the guided change a direction error makes). Every call
    counting alike looked wrong (an error at the first, high-noise call moves the final sample far
    more than one at the last), but the gains (first call 7x on the shapes model) let the first two
    calls decide alone, and the allocation lost more visual quality than the unweighted one.
    ``metric="samples"`` scores the final samples: visual = 1 - SSIM vs the FP samples; alignment =
    mean drop of the per-image prompt alignment (digits: the classifier's probability of the
    requested class; text-to-image: the CLIP-score stand-in). On 20-image runs a group's change is
    swamped by how trajectories diverge (widening a group "hurt" as often as it helped), and the
    allocation built on it lost to uniform W4A8.
    """
    if metric not in SENSITIVITY_METRIC_NAMES:
        raise UnknownNameError(f"sensitivity metric must be one of {SENSITIVITY_METRIC_NAMES}, got {metric!r}")
    if metric == "samples":
        return _sample_level_evaluator(world)
    calls = record_denoiser_calls(world.fp_model, world.sample_sensitivity)
    if metric == "denoiser":
        return _replay_evaluator(calls, guidance_scale, [1.0 / len(calls)] * len(calls), relative=True)
    return _replay_evaluator(calls, guidance_scale, propagation_gains(world, calls, guidance_scale), relative=False)


def _sample_level_evaluator(world: BenchSuite):
    reference = world.sample_sensitivity(world.fp_model)
    aligned = world.alignment(reference)

    def evaluate(model: nn.Module) -> dict[str, float]:
        images = world.sample_sensitivity(model)
        return {"visual": 1 - ssim(images, reference), "alignment": (aligned - world.alignment(images)).mean().item()}

    return evaluate


def _replay_evaluator(calls: list[tuple], guidance_scale: float, weights: list[float], relative: bool):
    """Weighted sum over the replayed calls of the squared errors of the guided prediction (visual) and of
    the guidance direction (alignment; scaled by the guidance so both are changes of the guided
    prediction), relative to the FP call's own size or absolute."""
    def error(x: torch.Tensor, reference: torch.Tensor) -> float:
        return _relative_error(x, reference) if relative else (x - reference).pow(2).sum().item()

    scale = 1.0 if relative else guidance_scale ** 2

    def evaluate(model: nn.Module) -> dict[str, float]:
        visual = alignment = 0.0
        for weight, (args, kwargs, fp_eps) in zip(weights, calls):
            (guided, direction), (fp_guided, fp_direction) = (_cfg_parts(model(*args, **kwargs).sample, guidance_scale),
                                                              _cfg_parts(fp_eps, guidance_scale))
            visual += weight * error(guided, fp_guided)
            alignment += weight * scale * error(direction, fp_direction)
        return {"visual": visual, "alignment": alignment}

    return evaluate


def propagation_gains(world: BenchSuite, calls: list[tuple], guidance_scale: float, size: float = 0.05,
                      seed: int = 0) -> list[float]:
    """For each denoiser call of the FP sensitivity run: |change of the final samples|^2 / |kick|^2 when
    only that call's guided prediction is kicked by small seeded noise (``size`` x its std), divided by
    |final samples|^2, so that a gain-weighted sum of per-call squared errors estimates the relative
    squared change of the final samples.

    One extra FP run per call. Measured with 10 steps: digits DiT, the first call ~100x the last;
    shapes model, the first two calls 7.2 and 1.4, the rest below 0.07 (before the division).
    """
    reference = world.sample_sensitivity(world.fp_model)
    generator = torch.Generator().manual_seed(seed)
    gains = []
    for index, (_args, _kwargs, fp_eps) in enumerate(calls):
        guided = _cfg_parts(fp_eps, guidance_scale)[0]
        kick = size * guided.std() * torch.randn(guided.shape, generator=generator)
        with _kicked_call(world.fp_model, index, torch.cat([kick, kick])):  # both halves: guided moves by kick
            kicked = world.sample_sensitivity(world.fp_model)
        gains.append((kicked - reference).pow(2).sum().item() / kick.pow(2).sum().item())
    size_of_final = reference.pow(2).sum().item()
    return [gain / size_of_final for gain in gains]


@contextmanager
def _kicked_call(model: nn.Module, index: int, kick: torch.Tensor):
    """Adds ``kick`` to the output of the model's ``index``-th forward call inside the block."""
    count = [0]

    def add(module, args, output):
        if count[0] == index:
            output.sample = output.sample + kick
        count[0] += 1
        return output

    handle = model.register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def record_denoiser_calls(model: nn.Module, run: Callable[[nn.Module], object]) -> list[tuple]:
    """(args, kwargs, output sample) of every forward call of ``model`` during ``run(model)``."""
    calls, pending = [], []

    def before(module, args, kwargs):
        pending.append((args, kwargs))

    def after(module, args, kwargs, output):
        calls.append((*pending.pop(), output.sample.detach().clone()))

    handles = [model.register_forward_pre_hook(before, with_kwargs=True),
               model.register_forward_hook(after, with_kwargs=True)]
    try:
        run(model)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _cfg_parts(eps: torch.Tensor, guidance_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(guided prediction, guidance direction) of a ``[cond; uncond]`` batch."""
    cond, uncond = eps.chunk(2)
    return uncond + guidance_scale * (cond - uncond), cond - uncond


def _relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Squared relative L2 error: squared, so that independent groups' errors add up for the ILP."""
    return relative_l2(x, reference) ** 2


def mixed_precision_variant(world: BenchSuite, settings: QuantBenchSettings,
                            progress: Progress) -> tuple[QuantConfig, dict]:
    """Sensitivity table + ILP allocation at ``mp_average_bits``, both returned for the results.

    One allocation per trust region in ``mp_max_moved``; with several, each (and uniform W4) samples a
    validation run and :func:`pick_allocation` keeps one (uniform W4 included). The sensitivity model
    does not say how far from uniform its additive errors still hold, and that distance differed between
    the shipped models, so it is checked on samples.
    """
    base = get_recipe("vidit-q-w4a8")
    fp_model = world.fp_model
    n_groups = len(layer_groups(fp_model, base, settings.mp_granularity))
    advance = progress("sensitivity (group x bits)", n_groups * len(settings.mp_candidate_bits))
    evaluator = sensitivity_evaluator(world, settings.sensitivity_metric, settings.guidance_scale)
    table = measure_sensitivity(fp_model, base, evaluator, world.sample_calibration, settings.mp_candidate_bits,
                                advance, around=settings.mp_around, granularity=settings.mp_granularity)
    regions = settings.mp_max_moved if len(settings.mp_max_moved) == 1 else (0.0, *settings.mp_max_moved)
    candidates = [(moved, *mixed_precision_config(fp_model, base, table, settings.mp_average_bits, MIXED_PRECISION,
                                                  moved)) for moved in regions]
    validation, chosen = None, 0
    if len(candidates) > 1:  # the first, trust region 0, is uniform W4: MP has to beat it on samples
        validation = validate_allocations(world, settings, candidates, progress)
        chosen = pick_allocation(validation, world.task_metric)
        for row, rank in zip(validation, mean_ranks(validation)):
            row["mean_rank"] = rank
    moved, config, assignment = candidates[chosen]
    return config, {"average_bits": settings.mp_average_bits, "table": table.to_dict(),
                    "assignment": assignment.to_dict(), "achieved_average_bits": assignment.average_bits(table),
                    "max_moved": moved, "validation": validation, "task_tolerance": TASK_TOLERANCE,
                    "psnr_tolerance": PSNR_TOLERANCE}


def validate_allocations(world: BenchSuite, settings: QuantBenchSettings, candidates: list[tuple],
                         progress: Progress) -> list[dict]:
    """Each candidate allocation sampled on the validation run: the bench's world at seed + 1 (other noise,
    and other draws of the held-out prompts, than the evaluation), quantized with the bench's calibration.
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


def validation_world(settings: QuantBenchSettings) -> BenchSuite:
    """The run that judges mixed-precision candidates: seed + 1 (other noise and other draws of the held-out
    prompts than the evaluation), ``validation_per_class`` per class at most."""
    per_class = min(settings.validation_per_class, settings.samples_per_class)
    return load_suite(settings.model, replace(settings, seed=settings.seed + 1, samples_per_class=per_class))


TASK_TOLERANCE = 0.01  # an allocation may score at most this much below uniform W4's task score (1 point) ...
PSNR_TOLERANCE = 0.1  # ... and at most this much below its PSNR vs FP (dB)
RANKED_SCORES = ("class_accuracy", "adherence", "clip_score", "fid_features", "psnr_vs_fp", "ssim_vs_fp")


def pick_allocation(rows: list[dict], task_metric: str, task_tolerance: float = TASK_TOLERANCE,
                    psnr_tolerance: float = PSNR_TOLERANCE) -> int:
    """Index of the validation row to keep: among those no worse than row 0 (uniform W4) beyond the tolerances
    on the task score (class accuracy / adherence) and on PSNR vs FP, the best mean rank over every quality
    score the rows have (task, CLIP, FID, PSNR, SSIM); uniform W4 wins ties, and may win outright.

    Metric-decoupled allocation trades a little of one score for another (6-bit cross-attention paid with
    3-bit keys: alignment and FID up, PSNR a hair down), so one score alone cannot judge it; the mean rank
    counts each score once, whatever its scale. An allocation has to earn its place against uniform W4
    on samples, not only in the sensitivity model."""
    floors = {task_metric: rows[0][task_metric] - task_tolerance, "psnr_vs_fp": rows[0]["psnr_vs_fp"] - psnr_tolerance}
    allowed = [i for i, row in enumerate(rows) if all(row[key] >= floor for key, floor in floors.items())]
    ranks = mean_ranks(rows)
    return min(allowed, key=lambda i: (ranks[i], i))


def mean_ranks(rows: list[dict]) -> list[float]:
    """Each row's rank (1 = best, ties averaged) on every score of RANKED_SCORES all rows have, averaged."""
    keys = [k for k in RANKED_SCORES if all(row.get(k) is not None for row in rows)]
    ranks = [rankdata([row[k] if k in LOWER_IS_BETTER else -row[k] for row in rows]) for k in keys]
    return [float(np.mean([r[i] for r in ranks])) for i in range(len(rows))]


def build_variants(world: BenchSuite, settings: QuantBenchSettings,
                   progress: Progress = no_progress) -> tuple[list[Variant], dict | None]:
    """FP plus each recipe (the fbgemm run of vidit-q-w8a8 if asked; the MP recipe allocated here)."""
    configs, allocation = [], None
    for name in settings.recipes:
        if name == MIXED_PRECISION:
            config, allocation = mixed_precision_variant(world, settings, progress)
            configs.append(config)
        else:
            configs.append(get_recipe(name))
        if settings.fast_path and name in FAST_PATH_RECIPES:
            configs.append(fast_cpu_variant(configs[-1]))
    fp_model = world.fp_model
    variants = [Variant("fp32", fp_model)]
    for config in configs:
        variants.append(Variant(config.name, quantize(copy.deepcopy(fp_model), config, world.sample_calibration), config))
    return variants, allocation


@torch.no_grad()
def run_quant_bench(settings: QuantBenchSettings, progress: Progress = no_progress) -> dict:
    world = load_suite(settings.model, settings)
    fp_model = world.fp_model
    variants, allocation = build_variants(world, settings, progress)
    fp_weight_bytes = weight_nbytes(fp_model)

    for variant in variants:
        advance = progress(f"sampling {variant.name}", 1)
        variant.images = world.sample_eval(variant.model)
        advance()
        reference = variants[0].images if variant.config else None
        variant.row = {
            "variant": variant.name,
            "backend": "float" if variant.config is None else variant.config.backend,
            **world.quality(variant.images, reference),
            "weight_bytes": weight_nbytes(variant.model),
            "held_bytes": held_bytes(variant.model),
            "weight_bytes_ratio": weight_nbytes(variant.model) / fp_weight_bytes,
            "average_weight_bits": average_weight_bits(variant.model),
        }
        if variant.config is not None:
            quantized_bytes = weight_nbytes(variant.model, only_quantized_targets=True)
            variant.row["quantized_linear_bytes_ratio"] = quantized_bytes / _fp_bytes_of_targets(fp_model, variant.model)

    comparisons = paired_comparisons(world, variants, settings.seed, settings.bootstrap_resamples)
    measure_speed_and_memory(variants, world, settings, progress)
    peer = peer_comparison(world, variants, settings) if settings.peer else None
    fp_row = variants[0].row
    task = world.task_metric
    for variant in variants:
        variant.row["latency_ratio_vs_fp"] = variant.row["latency_ms_per_image"] / fp_row["latency_ms_per_image"]
        variant.row["fid_increase_vs_fp"] = variant.row["fid_features"] - fp_row["fid_features"]
        variant.row[f"{task}_change_points"] = 100 * (variant.row[task] - fp_row[task])
    return {
        "benchmark": "quant",
        "model": settings.model,
        "fid_features": world.fid_features,
        "task_metric": task,
        "settings": settings.to_dict(),
        "machine": machine_facts(),
        "recipes": {v.name: v.config.to_dict() for v in variants if v.config is not None},
        "rows": [v.row for v in variants],
        "allocation": allocation,
        "comparisons": comparisons,
        "peer": peer,
        "images": {v.name: v.images for v in variants},
        "grid_index": world.grid_index,
    }


def paired_comparisons(world: BenchSuite, variants: list[Variant], seed: int, resamples: int = 1000) -> list[dict]:
    """Bootstrap intervals of the differences named in COMPARISONS, for the pairs this run has (against
    FP, the scores measured against FP itself are left out)."""
    images = {v.name: v.images for v in variants}
    fp_images = variants[0].images
    return [{"variant": name, "baseline": baseline, "items": len(fp_images), "resamples": resamples,
             "differences": world.compare(images[name], images[baseline], None if baseline == "fp32" else fp_images,
                                          seed=seed, resamples=resamples)}
            for name, baseline in COMPARISONS if name in images and baseline in images]


def peer_comparison(world: BenchSuite, variants: list[Variant], settings: QuantBenchSettings) -> dict:
    """effigy's W8A8 rows next to torchao's W8A8 on one denoiser call (see :mod:`peer_bench`)."""
    import importlib.metadata

    from effigy.bench.peers.quantizers import (
        TORCHAO_PIN,
        Bf16Call,
        compare_one_call,
        quantize_dynamic_int8,
        torchao_w8a8,
    )
    from effigy.nn import find_targets

    fp_model = world.fp_model
    ours = {v.name: v.model for v in variants if v.config is not None and "w8a" in v.name and "naive" not in v.name}
    config = get_recipe("vidit-q-w8a8")
    theirs = torchao_w8a8(fp_model, config.include, config.ignore)
    if theirs is None:
        return {"library": None, "note": f"torchao is not installed (pip install --no-deps {TORCHAO_PIN})", "rows": []}
    inputs = world.denoiser_call(settings.latency_samples)
    targets = find_targets(fp_model, config.include, config.ignore)
    peers = {"torchao-w8a8-dynamic": theirs, "bf16": Bf16Call(copy.deepcopy(fp_model)),
             "quantize_dynamic int8": quantize_dynamic_int8(copy.deepcopy(fp_model), targets)}
    rows = compare_one_call(fp_model, {**ours, **peers}, inputs, settings.latency_repeats)
    return {"library": f"torchao {importlib.metadata.version('torchao')}", "rows": rows}


def average_weight_bits(model: nn.Module) -> float | None:
    """Nominal weight bits of the quantized linears, averaged by parameter count (None for FP)."""
    from effigy.nn import QuantLinear

    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    if not layers:
        return None
    sizes = [m.in_features * m.out_features for m in layers]
    return sum(m.weight_spec.bits * n for m, n in zip(layers, sizes)) / sum(sizes)


def _fp_bytes_of_targets(fp_model: nn.Module, quantized: nn.Module) -> int:
    """fp32 bytes of exactly the layers the recipe quantized (weights and biases)."""
    from effigy.nn import find_targets
    from effigy.nn.quantize import CONFIG_ATTR

    config = getattr(quantized, CONFIG_ATTR)
    targets = find_targets(fp_model, config.include, config.ignore)
    return sum(p.numel() * p.element_size() for layer in targets.values() for p in layer.parameters())


def measure_speed_and_memory(variants, world: BenchSuite, settings, progress: Progress) -> None:
    """Latency: variants interleaved over repeats so that machine noise hits them alike.
    Memory: each variant in a fresh process (load, quantize, sample the latency batch)."""
    images = len(world.sample_latency(variants[0].model))
    advance = progress("timing and memory", len(variants) * (settings.latency_repeats + 2))
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for variant in variants:
        world.sample_latency(variant.model)  # warm-up: weight caches, fbgemm prepacking
        advance()
    for _ in range(settings.latency_repeats):
        for variant in variants:
            times[variant.name].append(median_seconds(lambda: world.sample_latency(variant.model), repeats=1))
            advance()
    for variant in variants:
        variant.row["latency_ms_per_image"] = 1000 * statistics.median(times[variant.name]) / images
        if settings.measure_memory:
            config = None if variant.config is None else variant.config.to_dict()
            variant.row["peak_rss_mib"] = run_in_fresh_process(memory_probe, config, settings.to_dict())["peak_rss_mib"]
        advance()


def memory_probe(config: dict | None, settings: dict) -> dict:
    """In a fresh process: load the shipped model, quantize it as ``config`` says, sample the latency
    batch once, and report the process's peak resident memory."""
    bench = QuantBenchSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
    world = load_suite(bench.model, bench)
    model = world.fp_model
    if config is not None:
        model = quantize(model, QuantConfig.from_dict(config), world.sample_calibration)
    with torch.no_grad():
        world.sample_latency(model)
    return rss_mib()
