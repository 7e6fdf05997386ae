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
from effigy.recipes.mixed_precision import layer_groups, measure_sensitivity, mixed_precision_config
from effigy.worlds.digits import NUM_CLASSES, load_digits_images

FID_FEATURES = "digits-classifier penultimate layer (128-d)"


MIXED_PRECISION = "vidit-q-w4a8-mp"


@dataclass
class QuantBenchSettings:
    recipes: tuple[str, ...] = ("naive-w8a8", "vidit-q-w8a8", "rtn-w4a8", "vidit-q-w4a8", MIXED_PRECISION)
    fast_path: bool = True  # adds the fbgemm integer-kernel run of vidit-q-w8a8
    mp_average_bits: float = 4.0  # the MP budget: the same average weight bits as uniform W4
    mp_candidate_bits: tuple[int, ...] = (3, 4, 6, 8)
    sensitivity_per_class: int = 2  # sensitivity runs sample 2 images per class ...
    sensitivity_steps: int = 10  # ... with 10 steps (other seeds than the evaluation)
    samples_per_class: int = 50
    steps: int = 20
    guidance_scale: float = 3.0
    seed: int = 0
    batch_size: int = 100
    latency_samples: int = 20
    latency_repeats: int = 3
    calibration_per_class: int = 2
    measure_memory: bool = True  # a fresh process per variant (~10 s each)
    peer: bool = True  # compare W8A8 with torchao's on one denoiser call, if torchao is installed

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


def make_calib_loop(dit_config, settings: QuantBenchSettings, steps: int | None = None,
                    per_class: int | None = None) -> Callable[[nn.Module], None]:
    """Static and balanced recipes calibrate on real sampling trajectories (other seeds than the evaluation)."""
    labels = class_labels(per_class or settings.calibration_per_class)
    return lambda model: dit_digits.sample(model, dit_config, labels, steps or settings.steps,
                                           settings.guidance_scale, settings.seed + 10_000)


def sensitivity_evaluator(fp_model, dit_config, classifier, settings: QuantBenchSettings):
    """Metric-decoupled losses of a partly quantized model against FP on a small seeded batch:
    visual = 1 - SSIM vs the FP samples; alignment = mean drop of the classifier's probability of
    the requested class (how well the adaLN class conditioning survives)."""
    labels = class_labels(settings.sensitivity_per_class)
    draw = lambda m: dit_digits.sample(m, dit_config, labels, settings.sensitivity_steps, settings.guidance_scale,
                                       settings.seed + 20_000)
    reference = draw(fp_model)
    p_reference = classifier(reference).softmax(1)[torch.arange(len(labels)), labels]

    def evaluate(model: nn.Module) -> dict[str, float]:
        images = draw(model)
        p = classifier(images).softmax(1)[torch.arange(len(labels)), labels]
        return {"visual": 1 - ssim(images, reference), "alignment": (p_reference - p).mean().item()}

    return evaluate


def mixed_precision_variant(fp_model, dit_config, classifier, settings: QuantBenchSettings,
                            progress: Progress) -> tuple[QuantConfig, dict]:
    """Sensitivity table + ILP allocation at ``mp_average_bits``, both returned for the results."""
    base = get_recipe("vidit-q-w4a8")
    calib_loop = make_calib_loop(dit_config, settings, settings.sensitivity_steps, per_class=1)  # cheap: ranks only
    n_groups = len(layer_groups(fp_model, base))
    advance = progress("sensitivity (group x bits)", n_groups * len(settings.mp_candidate_bits))
    table = measure_sensitivity(fp_model, base, sensitivity_evaluator(fp_model, dit_config, classifier, settings),
                                calib_loop, settings.mp_candidate_bits, advance)
    config, assignment = mixed_precision_config(fp_model, base, table, settings.mp_average_bits, MIXED_PRECISION)
    return config, {"average_bits": settings.mp_average_bits, "table": table.to_dict(),
                    "assignment": assignment.to_dict(), "achieved_average_bits": assignment.average_bits(table)}


def build_variants(fp_model, dit_config, classifier, settings: QuantBenchSettings,
                   progress: Progress = no_progress) -> tuple[list[Variant], dict | None]:
    """FP plus each recipe (the fbgemm run of vidit-q-w8a8 if asked; the MP recipe allocated here)."""
    configs, allocation = [], None
    for name in settings.recipes:
        if name == MIXED_PRECISION:
            config, allocation = mixed_precision_variant(fp_model, dit_config, classifier, settings, progress)
            configs.append(config)
        else:
            configs.append(get_recipe(name))
        if settings.fast_path and name == "vidit-q-w8a8":
            configs.append(fast_cpu_variant(configs[-1]))
    calib_loop = make_calib_loop(dit_config, settings)
    variants = [Variant("fp32", fp_model)]
    for config in configs:
        variants.append(Variant(config.name, quantize(copy.deepcopy(fp_model), config, calib_loop), config))
    return variants, allocation


@torch.no_grad()
def run_quant_bench(settings: QuantBenchSettings, progress: Progress = no_progress) -> dict:
    fp_model, dit_config = load_zoo_model("dit-digits")
    classifier, _ = load_zoo_model("digits-classifier")
    real_images, _ = load_digits_images(dit_config.sample_size)
    real_features = classifier.features(real_images)
    labels = class_labels(settings.samples_per_class)
    variants, allocation = build_variants(fp_model, dit_config, classifier, settings, progress)
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
            "average_weight_bits": average_weight_bits(variant.model),
        }
        if variant.config is not None:
            quantized_bytes = weight_nbytes(variant.model, only_quantized_targets=True)
            variant.row["quantized_linear_bytes_ratio"] = quantized_bytes / _fp_bytes_of_targets(fp_model, variant.model)

    _measure_speed_and_memory(variants, dit_config, settings, progress)
    peer = peer_comparison(fp_model, variants, settings) if settings.peer else None
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
        "allocation": allocation,
        "peer": peer,
        "images": {v.name: v.images for v in variants},
    }


def peer_comparison(fp_model, variants: list[Variant], settings: QuantBenchSettings) -> dict:
    """effigy's W8A8 rows next to torchao's W8A8 on one denoiser call (see :mod:`peer_bench`)."""
    import importlib.metadata

    from effigy.evaluate.peer_bench import TORCHAO_PIN, compare_one_call, torchao_w8a8

    ours = {v.name: v.model for v in variants if v.config is not None and "w8a" in v.name and "naive" not in v.name}
    config = get_recipe("vidit-q-w8a8")
    theirs = torchao_w8a8(fp_model, config.include, config.ignore)
    if theirs is None:
        return {"library": None, "note": f"torchao is not installed (pip install --no-deps {TORCHAO_PIN})", "rows": []}
    g = torch.Generator().manual_seed(settings.seed)
    n = settings.latency_samples
    inputs = {"hidden_states": torch.randn(n, 1, fp_model.config.sample_size, fp_model.config.sample_size, generator=g),
              "timestep": torch.full((n,), 500), "class_labels": torch.arange(n) % NUM_CLASSES}
    rows = compare_one_call(fp_model, {**ours, "torchao-w8a8-dynamic": theirs}, inputs, settings.latency_repeats)
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
    bench = QuantBenchSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
    model, dit_config = load_zoo_model("dit-digits")
    if config is not None:
        model = quantize(model, QuantConfig.from_dict(config), make_calib_loop(dit_config, bench))
    labels = class_labels(max(1, bench.latency_samples // NUM_CLASSES))
    with torch.no_grad():
        dit_digits.sample(model, dit_config, labels, bench.steps, bench.guidance_scale, bench.seed)
    return rss_mib()
