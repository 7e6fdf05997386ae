"""Side-by-side quantization benchmark on the shipped digits DiT: FP against each recipe, one run.

Every variant samples the same class labels from the same seeded noise, so quality against the FP
output (PSNR, SSIM) isolates the quantization error; class accuracy (shipped digits classifier) and
FID on that classifier's 128-d features judge the samples themselves. Latency and peak memory are
measured in the same process, variants interleaved, and reported as ratios to FP.
"""
from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from effigy.api import quantize, weight_nbytes
from effigy.evaluate.measure import Progress, machine_facts, median_seconds, no_progress, rss_mib, run_in_fresh_process
from effigy.metrics import fid_from_features, psnr, ssim
from effigy.models import dit_digits
from effigy.models.zoo import load_zoo_model
from effigy.nn import QuantConfig
from effigy.recipes import fast_cpu_variant, get_recipe
from effigy.worlds.digits import NUM_CLASSES, load_digits_images

FID_FEATURES = "digits-classifier penultimate layer (128-d)"


@dataclass
class QuantBenchSettings:
    recipes: tuple[str, ...] = ("naive-w8a8", "vidit-q-w8a8")
    fast_path: bool = True
    samples_per_class: int = 50
    steps: int = 20
    guidance_scale: float = 3.0
    seed: int = 0
    batch_size: int = 100
    latency_samples: int = 20
    latency_repeats: int = 3
    calibration_per_class: int = 2
    measure_memory: bool = True  # a fresh process per variant (~10 s each)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class Variant:
    name: str
    model: nn.Module
    config: QuantConfig | None = None
    images: torch.Tensor | None = None
    row: dict = field(default_factory=dict)


def class_labels(per_class: int) -> torch.Tensor:
    return torch.arange(NUM_CLASSES).repeat_interleave(per_class)


def generate(model, config, labels, settings: QuantBenchSettings, advance: Callable[[], None]) -> torch.Tensor:
    """Sample in fixed batches; batch i always uses seed + i, so every variant sees the same noise."""
    chunks = []
    for i, start in enumerate(range(0, len(labels), settings.batch_size)):
        batch = labels[start : start + settings.batch_size]
        chunks.append(
            dit_digits.sample(model, config, batch, settings.steps, settings.guidance_scale, settings.seed + i,
                              step_callback=lambda _s: advance())
        )
    return torch.cat(chunks)


def make_calib_loop(dit_config, settings: QuantBenchSettings) -> Callable[[nn.Module], None]:
    """Static recipes calibrate on real sampling trajectories (other seeds than the evaluation)."""
    labels = class_labels(settings.calibration_per_class)
    return lambda model: dit_digits.sample(model, dit_config, labels, settings.steps, settings.guidance_scale,
                                           settings.seed + 10_000)


def build_variants(fp_model, dit_config, settings: QuantBenchSettings) -> list[Variant]:
    """FP plus each recipe (and the fast integer-kernel variant of the last one, if asked)."""
    configs = [get_recipe(name) for name in settings.recipes]
    if settings.fast_path and configs and configs[-1].activation is not None:
        configs.append(fast_cpu_variant(configs[-1]))
    calib_loop = make_calib_loop(dit_config, settings)
    variants = [Variant("fp32", fp_model)]
    for config in configs:
        variants.append(Variant(config.name, quantize(copy.deepcopy(fp_model), config, calib_loop), config))
    return variants


@torch.no_grad()
def run_quant_bench(settings: QuantBenchSettings, progress: Progress = no_progress) -> dict:
    fp_model, dit_config = load_zoo_model("dit-digits")
    classifier, _ = load_zoo_model("digits-classifier")
    real_images, _ = load_digits_images(dit_config.sample_size)
    real_features = classifier.features(real_images)
    labels = class_labels(settings.samples_per_class)
    variants = build_variants(fp_model, dit_config, settings)
    fp_weight_bytes = weight_nbytes(fp_model)

    for variant in variants:
        advance = progress(f"sampling {variant.name}", settings.steps * -(-len(labels) // settings.batch_size))
        variant.images = generate(variant.model, dit_config, labels, settings, advance)
        accuracy = (classifier(variant.images).argmax(1) == labels).float().mean().item()
        fid = fid_from_features(classifier.features(variant.images), real_features)
        variant.row = {
            "variant": variant.name,
            "backend": "float" if variant.config is None else variant.config.backend,
            "class_accuracy": accuracy,
            "fid_features": fid,
            "psnr_vs_fp": psnr(variant.images, variants[0].images) if variant.config else None,
            "ssim_vs_fp": ssim(variant.images, variants[0].images) if variant.config else None,
            "weight_bytes": weight_nbytes(variant.model),
            "weight_bytes_ratio": weight_nbytes(variant.model) / fp_weight_bytes,
        }
        if variant.config is not None:
            quantized_bytes = weight_nbytes(variant.model, only_quantized_targets=True)
            variant.row["quantized_linear_bytes_ratio"] = quantized_bytes / _fp_bytes_of_targets(fp_model, variant.model)

    _measure_speed_and_memory(variants, dit_config, settings, progress)
    fp_row = variants[0].row
    for variant in variants:
        variant.row["latency_ratio_vs_fp"] = variant.row["latency_ms_per_image"] / fp_row["latency_ms_per_image"]
        variant.row["fid_increase_vs_fp"] = variant.row["fid_features"] - fp_row["fid_features"]
        variant.row["accuracy_change_points"] = 100 * (variant.row["class_accuracy"] - fp_row["class_accuracy"])
    return {
        "benchmark": "quant",
        "model": "dit-digits",
        "fid_features": FID_FEATURES,
        "settings": settings.to_dict(),
        "machine": machine_facts(),
        "recipes": {v.name: v.config.to_dict() for v in variants if v.config is not None},
        "rows": [v.row for v in variants],
        "images": {v.name: v.images for v in variants},
    }


def _fp_bytes_of_targets(fp_model: nn.Module, quantized: nn.Module) -> int:
    """fp32 bytes of exactly the layers the recipe quantized (weights and biases)."""
    from effigy.nn import QuantLinear

    names = [n for n, m in quantized.named_modules() if isinstance(m, QuantLinear)]
    return sum(sum(p.numel() * p.element_size() for p in fp_model.get_submodule(n).parameters()) for n in names)


def _measure_speed_and_memory(variants, dit_config, settings, progress: Progress) -> None:
    """Latency: variants interleaved over repeats so that machine noise hits them alike.
    Memory: each variant in a fresh process (load, quantize, sample the latency batch)."""
    labels = class_labels(max(1, settings.latency_samples // NUM_CLASSES))
    run = lambda v: dit_digits.sample(v.model, dit_config, labels, settings.steps, settings.guidance_scale, settings.seed)
    advance = progress("timing and memory", len(variants) * (settings.latency_repeats + 2))
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for variant in variants:
        run(variant)  # warm-up: weight caches, fbgemm prepacking
        advance()
    for _ in range(settings.latency_repeats):
        for variant in variants:
            times[variant.name].append(median_seconds(lambda: run(variant), repeats=1))  # one timed run per round
            advance()
    for variant in variants:
        variant.row["latency_ms_per_image"] = 1000 * statistics.median(times[variant.name]) / len(labels)
        if settings.measure_memory:
            config = None if variant.config is None else variant.config.to_dict()
            variant.row["peak_rss_mib"] = run_in_fresh_process(memory_probe, config, settings.to_dict())["peak_rss_mib"]
        advance()


def memory_probe(config: dict | None, settings: dict) -> dict:
    """In a fresh process: load the shipped DiT, quantize it as ``config`` says, sample the latency
    batch once, and report the process's peak resident memory."""
    bench = QuantBenchSettings(**{**settings, "recipes": tuple(settings["recipes"])})
    model, dit_config = load_zoo_model("dit-digits")
    if config is not None:
        model = quantize(model, QuantConfig.from_dict(config), make_calib_loop(dit_config, bench))
    labels = class_labels(max(1, bench.latency_samples // NUM_CLASSES))
    with torch.no_grad():
        dit_digits.sample(model, dit_config, labels, bench.steps, bench.guidance_scale, bench.seed)
    return rss_mib()
