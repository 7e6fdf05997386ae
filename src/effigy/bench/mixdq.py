"""MixDQ's benchmark on the few-step student ``t2i-shapes-lcm``: FP, uniform W8A8 / W4A8 / W4A16, ViDiT-Q W4A8
and its mixed precision, the three MixDQ recipes, the BOS and decoupling ablations and a peer library's
weight-only int8, one run, the same prompts and noise; paired bootstrap intervals for the pairs the
acceptance bars name; latency at 1 and 4 steps, variants interleaved; held bytes and peak RSS.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from effigy.bench.quant import (
    QuantBenchSettings,
    compiled_sections,
    measure_latency,
    measure_peak_memory,
    paired_comparisons,
    quantized_variants,
    recipe_configs,
    score_variants,
)
from effigy.bench.variants import RESULT_SCHEMA, Variant, add_changes_vs_baseline
from effigy.evaluate.measure import Progress, machine_facts, no_progress
from effigy.evaluate.suites import load_suite
from effigy.mixedprec.decoupled import RATIOS
from effigy.recipes import MIXED_PRECISION_RECIPES
from effigy.recipes.mixdq import CROSS_ATTENTION_KV, without_bos_handling
from effigy.workflows.mixed_precision import SearchSettings, search, suite_runs

MIXDQ_RECIPES = ("mixdq-w8a8", "mixdq-w4a8", "mixdq-w3.66a16")
ABLATED = "mixdq-w4a8"
PAIRS = (("mixdq-w8a8", "fp32"), ("vidit-q-w8a8", "fp32"), ("mixdq-w4a8", "rtn-w4a8"), ("mixdq-w4a8", "vidit-q-w4a8"),
         ("mixdq-w4a8", "vidit-q-w4a8-mp"), ("mixdq-w3.66a16", "rtn-w4a16"), ("mixdq-w4a8", "mixdq-w4a8-no-bos"),
         ("mixdq-w4a8-bos", "mixdq-w4a8"), ("mixdq-w4a8", "mixdq-w4a8-single-metric"),
         ("torchao-int8-weight-only", "fp32"))


@dataclass
class MixDQBenchSettings(QuantBenchSettings):
    """The student at 4 LCM steps; ViDiT-Q-MP scored on samples (the student has no CFG batch to split)."""

    model: str = "t2i-shapes-lcm"
    steps: int = 4
    samples_per_class: int = 20  # 200 held-out prompts
    recipes: tuple[str, ...] = ("vidit-q-w8a8", "rtn-w4a8", "vidit-q-w4a8", "vidit-q-w4a8-mp", "rtn-w4a16",
                                *MIXDQ_RECIPES)
    fast_path_recipes: tuple[str, ...] = ("vidit-q-w8a8", "mixdq-w8a8")
    compiled: tuple[str, ...] = ("vidit-q-w8a8", "mixdq-w8a8", "mixdq-w4a8")
    sensitivity_metric: str = "samples"
    sensitivity_steps: int = 4
    mp_max_moved: tuple[float | None, ...] = (0.05, 0.1, 0.2, None)
    mixdq_bits: float | None = None  # overrides the MixDQ recipes' own weight targets (one recipe then)
    mp_ratios: tuple[float, ...] = RATIOS
    activation_fp_fraction: float = 0.01
    ablations: bool = True
    latency_steps: tuple[int, ...] = (1, 4)
    latency_samples: int = 20
    peer: bool = True

    def search_settings(self, recipe: str) -> SearchSettings:
        """ViDiT-Q-MP at ``mp_average_bits``; the MixDQ recipes at their own targets, or ``mixdq_bits``."""
        searched = replace(super().search_settings(recipe), ratios=self.mp_ratios,
                           activation_fp_fraction=self.activation_fp_fraction)
        if MIXED_PRECISION_RECIPES.get(recipe).search == "mixdq":
            return replace(searched, average_bits=self.mixdq_bits)
        return searched


@torch.no_grad()
def run_mixdq_bench(settings: MixDQBenchSettings, progress: Progress = no_progress) -> dict:
    world = load_suite(settings.model, settings)
    configs, allocations = recipe_configs(world, settings, progress, settings.fast_path_recipes)
    if settings.ablations and ABLATED in allocations:
        chosen = next(c for c in configs if c.name == allocations[ABLATED]["name"])
        configs.append(flipped_bos_handling(chosen))
        single, allocations[f"{ABLATED}-single-metric"] = search(
            suite_runs(world, settings, settings.validation_per_class), ABLATED, settings.search_settings(ABLATED),
            progress, single_metric=True)
        configs.append(single)
    variants = quantized_variants(world, configs)
    peer = weight_only_peer(world) if settings.peer else None
    if isinstance(peer, Variant):
        variants.append(peer)
    score_variants(world, variants, progress)
    for variant in variants:
        variant.row.update(world.breakdown(variant.images))
    chance = world.chance(variants[0].images)
    renamed = {r: allocations[r]["name"] for r in MIXDQ_RECIPES if r in allocations}
    pairs = tuple(tuple(_renamed(n, renamed) for n in pair) for pair in PAIRS)
    comparisons = paired_comparisons(world, variants, settings.seed, settings.bootstrap_resamples, pairs, progress)
    latency_runs = {f"latency_ms_per_image_{steps}_steps": load_suite(settings.model, replace(settings, steps=steps))
                    for steps in settings.latency_steps}
    for key, suite in latency_runs.items():
        measure_latency(variants, suite, settings, progress, key)
    if settings.measure_memory:
        measure_peak_memory([v for v in variants if v.config is not None or v.name == "fp32"], settings, progress)
    if isinstance(peer, Variant):  # its parameters are torchao tensor subclasses: only the held bytes are measured
        for key in ("weight_bytes", "weight_bytes_ratio"):
            peer.row.pop(key, None)
    rows = [v.row for v in variants]
    add_changes_vs_baseline(rows, (world.task_metric,))
    for row in rows:
        for steps in settings.latency_steps:
            row[f"latency_ratio_vs_fp_{steps}_steps"] = (row[f"latency_ms_per_image_{steps}_steps"]
                                                         / rows[0][f"latency_ms_per_image_{steps}_steps"])
    compiled_settings = replace(settings, compiled=tuple(_renamed(n, renamed) for n in settings.compiled))
    compiled, crossover = compiled_sections(world, variants, compiled_settings,
                                            {k: suite.sample_latency for k, suite in latency_runs.items()}, progress,
                                            rows_per_image=1)  # the student runs without CFG
    rows += [c.row for c in compiled]
    return {
        "benchmark": "mixdq", "schema": RESULT_SCHEMA, "model": settings.model, "fid_features": world.fid_features,
        "task_metric": world.task_metric, "settings": settings.to_dict(), "machine": machine_facts(),
        "recipes": {v.name: v.config.to_dict() for v in variants if v.config is not None},
        "rows": rows, "chance": chance, "allocations": allocations, "comparisons": comparisons, "crossover": crossover,
        "peer": peer if isinstance(peer, dict) else {"library": peer.setting, "rows": [peer.name]},
        "images": {v.name: v.images for v in variants}, "grid_index": world.grid_index,
        "grid_labels": world.grid_labels,
    }


def flipped_bos_handling(config):
    """The BOS ablation: the same widths with the first-token split the search did not choose."""
    if config.fp_first_token:
        return without_bos_handling(config)
    return replace(config, fp_first_token=CROSS_ATTENTION_KV, name=f"{config.name}-bos")


def _renamed(name: str, renamed: dict[str, str]) -> str:
    """A pair's member under the name the run gave it (a MixDQ recipe at another target than its own)."""
    for recipe, actual in renamed.items():
        if name.startswith(recipe):
            return actual + name.removeprefix(recipe)
    return name


def weight_only_peer(world) -> Variant | dict:
    """torchao's int8 weight-only quantization of the layers effigy quantizes, as a sampled row, or the note
    saying why it is absent."""
    from effigy.bench.peers.quantizers import TORCHAO_PIN, torchao_weight_only

    model, library = torchao_weight_only(world.fp_model)
    if model is None:
        return {"library": None, "note": f"torchao is not installed (pip install --no-deps {TORCHAO_PIN})"}
    return Variant("torchao-int8-weight-only", model, family="peer", setting=library)
