"""DiTFastAttn threshold sweep beside diffusers' own caching hooks, on a shipped DiT, in one run.

Every variant samples the same prompts from the same seeded noise as FP, so PSNR/SSIM against FP
isolate the approximation; task quality (class accuracy or prompt adherence) and FID on the world's
features judge the samples. Attention FLOPs are counted from what each variant's processors really
computed; latency is measured with all variants interleaved, as a ratio to FP.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effigy.attention import AttentionPlan, apply_ditfastattn, calibrate_plan, remove_ditfastattn
from effigy.bench.peers.diffusers_caches import DiffusersCache, count_attention, magcache_ratios
from effigy.bench.variants import RESULT_SCHEMA, Variant, add_changes_vs_baseline, interleaved_latency
from effigy.evaluate.measure import Progress, machine_facts, no_progress
from effigy.evaluate.suites import BenchSuite, SamplingSettings, load_suite
from effigy.nn.hooks import attach_hook, detach_hook

DEFAULT_PEERS = (("pab", 2), ("pab", 3), ("pab", 5), ("fastercache", 2), ("fastercache", 3),
                 ("fbc", 0.03), ("fbc", 0.1), ("fbc", 0.3), ("taylorseer", 2), ("taylorseer", 3), ("taylorseer", 5),
                 ("magcache", 0.03), ("magcache", 0.1), ("magcache", 0.3))


@dataclass
class FastAttnBenchSettings(SamplingSettings):
    thresholds: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2, 0.4)
    window_fraction: float = 0.125
    metric: str = "rel_l1"
    peers: tuple[tuple[str, float], ...] = DEFAULT_PEERS
    compose_recipe: str | None = "vidit-q-w8a8"  # one row: quantize, then a plan searched on the quantized model
    compose_threshold: float = 0.1


def fp_variant() -> Variant:
    handles = {}

    def install(model):
        tally, handles["undo"] = count_attention(model)
        return lambda: _tally_totals(tally)

    return Variant("fp", family="fp", install=install, remove=lambda model: handles.pop("undo")())


def ditfastattn_variant(plan: AttentionPlan, prefix: str = "", model: nn.Module | None = None) -> Variant:
    def install(model):
        state = apply_ditfastattn(model, plan)
        return lambda: {**_tally_totals(state.flops), "by_technique": dict(state.flops.module)}

    family = f"{prefix}ditfastattn"
    return Variant(f"{family} t={plan.threshold:g}", model, family=family, setting=plan.threshold, install=install,
                   remove=remove_ditfastattn)


def composed_variant(world: BenchSuite, settings: FastAttnBenchSettings) -> Variant:
    """ViDiT-Q then DiTFastAttn: the plan is searched on the quantized model, both applied at once."""
    import copy

    from effigy.nn.quantize import quantize
    from effigy.recipes import get_recipe

    quantized = quantize(copy.deepcopy(world.fp_model), get_recipe(settings.compose_recipe), world.sample_calibration)
    plan = calibrate_plan(quantized, lambda: world.sample_calibration(quantized), settings.compose_threshold,
                          settings.window_fraction, settings.metric, cfg=True)
    return ditfastattn_variant(plan, f"{settings.compose_recipe} + ", quantized)


def peer_variant(method: str, setting: float, steps: int, mag_ratios: list[float] | None = None) -> Variant:
    cache = DiffusersCache(method, setting, steps, mag_ratios=mag_ratios)
    handles = {}

    def install(model):
        attach_hook(model, cache)
        tally, handles["undo"] = count_attention(model)
        return lambda: _tally_totals(tally)

    def remove(model):
        handles.pop("undo")()
        detach_hook(model, cache.name)

    return Variant(f"{cache.name} {setting:g}", family=cache.name, setting=setting, install=install, remove=remove)


def _tally_totals(tally) -> dict:
    return {"module_flops": sum(tally.module.values()), "core_flops": sum(tally.core.values())}


@torch.no_grad()
def run_fastattn_bench(settings: FastAttnBenchSettings, progress: Progress = no_progress) -> dict:
    world = load_suite(settings.model, settings)
    model = world.fp_model
    advance = progress("calibrating plans", len(settings.thresholds) * settings.steps)
    plans = [calibrate_plan(model, lambda: world.sample_calibration(model), t, settings.window_fraction,
                            settings.metric, cfg=True, progress=advance) for t in settings.thresholds]
    ratios = None
    if any(method == "magcache" for method, _ in settings.peers):  # its calibration: FP runs, calibration prompts
        ratios = magcache_ratios(model, lambda: world.sample_calibration(model), settings.steps)
    variants = [fp_variant(), *map(ditfastattn_variant, plans),
                *(peer_variant(m, s, settings.steps, ratios) for m, s in settings.peers)]
    if settings.compose_recipe:
        variants.append(composed_variant(world, settings))
    rows, images = [], {}
    advance = progress("sampling variants", len(variants))
    for variant in variants:
        with variant.active(model) as (target, read_flops):
            images[variant.name] = world.sample_eval(target)
            flops = read_flops()
        reference = images["fp"] if variant.family != "fp" else None
        rows.append({"variant": variant.name, "family": variant.family, "setting": variant.setting, **flops,
                     **world.quality(images[variant.name], reference)})
        advance()
    advance = progress("timing", settings.latency_repeats + 1)
    seconds = interleaved_latency(variants, model, world.sample_latency, settings.latency_repeats, advance)
    for row, variant in zip(rows, variants):
        row["latency_s"] = seconds[variant.name]
    _add_flop_fractions(rows)
    add_changes_vs_baseline(rows)
    return {"benchmark": "fastattn", "schema": RESULT_SCHEMA, "model": settings.model, "fid_features": world.fid_features,
            "settings": settings.to_dict(), "machine": machine_facts(), "rows": rows,
            "plans": {p.threshold: p.to_dict() for p in plans}, "magcache_ratios": ratios, "images": images,
            "grid_columns": world.grid_index}


def _add_flop_fractions(rows: list[dict]) -> None:
    fp = rows[0]
    for row in rows:
        row["attention_flops_fraction"] = row["module_flops"] / fp["module_flops"]
        row["attention_core_flops_fraction"] = row["core_flops"] / fp["core_flops"]
        by = row.pop("by_technique", None)
        if by is not None:
            row["flops_by_technique"] = {t: v / fp["module_flops"] for t, v in by.items()}
