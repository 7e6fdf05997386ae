"""Side-by-side quantization benchmark on a shipped model: FP against each recipe, one run.

Every variant samples the same prompts (digits: class labels; text-to-image: held-out captions) from
the same seeded noise, so quality against the FP output (PSNR, SSIM) isolates the quantization
error; the world's task score (class accuracy / prompt adherence) and FID on its features judge
the samples themselves (see :mod:`effigy.evaluate.suites`). Latency and peak memory are
measured in the same process, variants interleaved, and reported as ratios to FP.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from effigy.bench.compiled import CROSSOVER_BATCHES, compiled_rows, crossover
from effigy.bench.variants import RESULT_SCHEMA, Variant, add_changes_vs_baseline, interleaved_ms_per_image
from effigy.evaluate.measure import Progress, machine_facts, no_progress, rss_mib, run_in_fresh_process
from effigy.evaluate.suites import BenchSuite, SamplingSettings, load_suite
from effigy.memory import held_bytes
from effigy.nn import QuantConfig
from effigy.nn.quantize import quantize, weight_nbytes
from effigy.recipes import MIXED_PRECISION_RECIPES, fast_cpu_variant, get_recipe
from effigy.workflows.mixed_precision import SearchSettings, search, suite_runs

MIXED_PRECISION = "vidit-q-w4a8-mp"
COMPILED_RECIPES = ("vidit-q-w8a8", "vidit-q-w4a8")  # what a user compiles: the W8A8 and W4A8 recipes
# also run on the fbgemm integer GEMM: W8 and the int4-weight path (4-bit grid fed to the int8 kernel)
FAST_PATH_RECIPES = ("vidit-q-w8a8", "vidit-q-w4a8")
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
    compiled: tuple[str, ...] = COMPILED_RECIPES  # compiled rows (effigy.compile) of FP and these; () for none
    crossover_batches: tuple[int, ...] = CROSSOVER_BATCHES  # where compiled W8A8 keeps up with compiled FP; () none

    def search_settings(self, recipe: str) -> SearchSettings:
        """The mixed-precision search's settings from the bench's flags (``recipe``: the searched one)."""
        return SearchSettings(average_bits=self.mp_average_bits, candidate_bits=self.mp_candidate_bits,
                              granularity=self.mp_granularity, around=self.mp_around,
                              sensitivity_metric=self.sensitivity_metric, max_moved=self.mp_max_moved,
                              guidance_scale=self.guidance_scale)


def recipe_configs(world: BenchSuite, settings: QuantBenchSettings, progress: Progress = no_progress,
                   fast_path_recipes: tuple[str, ...] = FAST_PATH_RECIPES) -> tuple[list[QuantConfig], dict[str, dict]]:
    """Each recipe's config (mixed-precision recipes searched here, their records returned by name), and the
    fbgemm run of those in ``fast_path_recipes`` if asked."""
    configs, allocations = [], {}
    for name in settings.recipes:
        if name in MIXED_PRECISION_RECIPES:
            config, allocations[name] = search(suite_runs(world, settings, settings.validation_per_class), name,
                                               settings.search_settings(name), progress)
        else:
            config = get_recipe(name)
        configs.append(config)
        if settings.fast_path and name in fast_path_recipes:
            configs.append(fast_cpu_variant(config))
    return configs, allocations


def quantized_variants(world: BenchSuite, configs: list[QuantConfig]) -> list[Variant]:
    """FP first, then a quantized copy per config, calibrated on the suite's calibration run."""
    fp_model = world.fp_model
    return [Variant("fp32", fp_model)] + [
        Variant(c.name, quantize(copy.deepcopy(fp_model), c, world.sample_calibration), c) for c in configs]


@torch.no_grad()
def run_quant_bench(settings: QuantBenchSettings, progress: Progress = no_progress) -> dict:
    world = load_suite(settings.model, settings)
    configs, allocations = recipe_configs(world, settings, progress)
    variants = quantized_variants(world, configs)
    score_variants(world, variants, progress)
    comparisons = paired_comparisons(world, variants, settings.seed, settings.bootstrap_resamples, progress=progress)
    measure_speed_and_memory(variants, world, settings, progress)
    peer = peer_comparison(world, variants, settings) if settings.peer else None
    task = world.task_metric
    add_changes_vs_baseline([v.row for v in variants], (task,))
    compiled, crossover = compiled_sections(world, variants, settings, {"latency_ms_per_image": world.sample_latency},
                                            progress)
    return {
        "benchmark": "quant",
        "schema": RESULT_SCHEMA,
        "model": settings.model,
        "fid_features": world.fid_features,
        "task_metric": task,
        "settings": settings.to_dict(),
        "machine": machine_facts(),
        "recipes": {v.name: v.config.to_dict() for v in variants if v.config is not None},
        "rows": [v.row for v in variants] + [c.row for c in compiled],
        "allocation": allocations.get(MIXED_PRECISION),
        "comparisons": comparisons,
        "peer": peer,
        "crossover": crossover,
        "images": {v.name: v.images for v in variants},
        "grid_index": world.grid_index,
    }


def compiled_sections(world: BenchSuite, variants: list[Variant], settings: QuantBenchSettings,
                      latency_runs: dict, progress: Progress, rows_per_image: int = 2) -> tuple[list[Variant], dict | None]:
    """The compiled rows (FP and ``settings.compiled`` through effigy.compile, timed beside the eager FP) and the
    batches at which the first of them that is W8A8 keeps up with compiled FP (``None`` when not asked)."""
    if not settings.compiled:
        return [], None
    compiled = compiled_rows(variants, settings.compiled, latency_runs, world.denoiser_call(2),
                             settings.latency_repeats, progress)
    w8a8 = next((v for v in variants if v.name in settings.compiled and "w8a8" in v.name), None)
    if not settings.crossover_batches or w8a8 is None:
        return compiled, None
    return compiled, crossover(world.fp_model, w8a8.model, world.denoiser_call, w8a8.name, progress,
                               settings.crossover_batches, rows_per_image=rows_per_image)


def score_variants(world: BenchSuite, variants: list[Variant], progress: Progress = no_progress) -> None:
    """Sample the evaluation run with each variant (FP first) and fill its row: quality, bytes, bits."""
    fp_model = world.fp_model
    fp_weight_bytes = weight_nbytes(fp_model)
    for variant in variants:
        advance = progress(f"sampling {variant.name}", 1)
        variant.images = world.sample_eval(variant.model)
        advance()
        reference = variants[0].images if variant is not variants[0] else None
        variant.row = {
            "variant": variant.name,
            "backend": "float" if variant.config is None else variant.config.backend,
            **world.quality(variant.images, reference),
            "weight_bytes": weight_nbytes(variant.model),
            "held_bytes": held_bytes(variant.model),
            "weight_bytes_ratio": weight_nbytes(variant.model) / fp_weight_bytes,
            "average_weight_bits": average_weight_bits(variant.model),
        }
        if variant.config is not None:  # an effigy recipe (a peer's layers are not QuantLinear)
            quantized_bytes = weight_nbytes(variant.model, only_quantized_targets=True)
            variant.row["quantized_linear_bytes_ratio"] = quantized_bytes / _fp_bytes_of_targets(fp_model, variant.model)
            variant.row["quantized_linear_bytes_ratio_fp16"] = 2 * variant.row["quantized_linear_bytes_ratio"]


def paired_comparisons(world: BenchSuite, variants: list[Variant], seed: int, resamples: int = 1000,
                       pairs: tuple[tuple[str, str], ...] = COMPARISONS, progress: Progress = no_progress) -> list[dict]:
    """Bootstrap intervals of the differences of ``pairs`` (variant, baseline) this run has (against FP, the
    scores measured against FP itself are left out)."""
    images = {v.name: v.images for v in variants}
    fp_images = variants[0].images
    present = [(name, baseline) for name, baseline in pairs if name in images and baseline in images]
    advance = progress(f"paired bootstrap intervals ({resamples:,} resamples)", len(present))
    comparisons = []
    for name, baseline in present:
        comparisons.append({"variant": name, "baseline": baseline, "items": len(fp_images), "resamples": resamples,
                            "differences": world.compare(images[name], images[baseline],
                                                         None if baseline == "fp32" else fp_images, seed=seed,
                                                         resamples=resamples)})
        advance()
    return comparisons


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


def measure_speed_and_memory(variants: list[Variant], world: BenchSuite, settings: QuantBenchSettings,
                             progress: Progress) -> None:
    """Latency: variants interleaved over repeats so that machine noise hits them alike.
    Memory: each variant in a fresh process (load, quantize, sample the latency batch)."""
    measure_latency(variants, world, settings, progress)
    if settings.measure_memory:
        measure_peak_memory(variants, settings, progress)


def measure_latency(variants: list[Variant], world: BenchSuite, settings: QuantBenchSettings, progress: Progress,
                    key: str = "latency_ms_per_image") -> None:
    """Milliseconds per image of the suite's latency run, variants interleaved, into each row's ``key``."""
    advance = progress("timing", settings.latency_repeats + 1)
    ms = interleaved_ms_per_image(variants, world.fp_model, world.sample_latency, settings.latency_repeats, advance)
    for variant in variants:
        variant.row[key] = ms[variant.name]


def measure_peak_memory(variants: list[Variant], settings: QuantBenchSettings, progress: Progress) -> None:
    """Peak RSS of each variant built and run in a fresh process (variants without a config: the FP model)."""
    advance = progress("peak memory (a fresh process each)", len(variants))
    for variant in variants:
        config = None if variant.config is None else variant.config.to_dict()
        variant.row["peak_rss_mib"] = run_in_fresh_process(memory_probe, config, settings.to_dict())["peak_rss_mib"]
        advance()


def memory_probe(config: dict | None, settings: dict) -> dict:
    """In a fresh process: load the shipped model, quantize it as ``config`` says, sample the latency
    batch once, and report the process's peak resident memory."""
    known = SamplingSettings.__dataclass_fields__
    bench = SamplingSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in known})
    world = load_suite(bench.model, bench)
    model = world.fp_model
    if config is not None:
        model = quantize(model, QuantConfig.from_dict(config), world.sample_calibration)
    with torch.no_grad():
        world.sample_latency(model)
    return rss_mib()
