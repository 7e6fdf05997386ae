"""LiteVAR on the shipped digits VAR, in one run: MDWA at two coverage levels, ASC, both, each LiteVAR
quantization recipe, everything combined, and FastVAR-style token pruning as the peer.

Every variant samples the same labels from the same seeds as FP, so PSNR / SSIM against FP isolate the
approximation; class accuracy and FID on the digits classifier's features judge the samples, with paired
bootstrap intervals against FP. Attention FLOPs are counted by LiteVAR processors on every variant (FP runs a
plan that keeps everything, which is dense attention bit for bit), latency is measured with all variants
interleaved, peak RSS in a fresh process per quantized variant. A last table puts the VAR beside the digits
DiT on the same judges.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn

from effigy.attention.litevar import AttentionQuant, apply_litevar, remove_litevar, total_flops
from effigy.attention.multiscale import LiteVARPlan
from effigy.bench.peers.fastvar import install_fastvar, remove_fastvar
from effigy.bench.quant import average_weight_bits, measure_peak_memory
from effigy.bench.variants import RESULT_SCHEMA, Variant, add_changes_vs_baseline, interleaved_ms_per_image
from effigy.errors import BenchError
from effigy.evaluate.measure import Progress, interleaved_medians, machine_facts, no_progress
from effigy.evaluate.suites import BenchSuite, SamplingSettings, load_suite
from effigy.memory import held_bytes
from effigy.nn.quantize import quantize, weight_nbytes
from effigy.recipes import LITEVAR_RECIPES, get_recipe, litevar_attention_quant
from effigy.workflows.accelerate import LiteVARSettings, design_plans, tokenizer_of


@dataclass
class LiteVARBenchSettings(LiteVARSettings):
    """The plan design's settings (MDWA at two coverage levels; the first is combined with ASC) and the bench's."""

    samples_per_class: int = 50
    batch_size: int = 100
    recipes: tuple[str, ...] = LITEVAR_RECIPES
    combined_recipe: str = "litevar-w8a8"
    fastvar_keep: tuple[float, ...] = (0.5, 0.25)
    measure_memory: bool = True
    bootstrap_resamples: int = 1000
    compare_dit: bool = True


def litevar_variant(name: str, family: str, plan: LiteVARPlan, quant: AttentionQuant | None = None,
                    model: nn.Module | None = None, config: object = None, setting: object = None) -> Variant:
    """A variant whose attention runs through LiteVAR processors with ``plan`` (and ``quant``)."""
    def install(target: nn.Module):
        processors = apply_litevar(target, plan, quant)
        return lambda: total_flops(processors)

    return Variant(name, model, config, family, setting, install=install, remove=remove_litevar)


def fastvar_variant(plan: LiteVARPlan, keep: float) -> Variant:
    """FastVAR pruning, with dense attention counted by a keep-everything LiteVAR plan."""
    def install(target: nn.Module):
        processors = apply_litevar(target, plan)
        install_fastvar(target, keep)
        return lambda: total_flops(processors)

    def remove(target: nn.Module):
        remove_fastvar(target)
        remove_litevar(target)

    return Variant(f"fastvar keep={keep:g}", family="fastvar", setting=keep, install=install, remove=remove)


def _without_asc(plan: LiteVARPlan) -> LiteVARPlan:
    return replace(plan, cfg_shared=[])


def _asc_only(plan: LiteVARPlan, full: LiteVARPlan) -> LiteVARPlan:
    return replace(full, cfg_shared=plan.cfg_shared, asc_threshold=plan.asc_threshold,
                   cfg_disagreement=plan.cfg_disagreement)


def build_variants(suite: BenchSuite, plans: dict[float, LiteVARPlan], settings: LiteVARBenchSettings) -> list[Variant]:
    fp_model = suite.fp_model
    full = LiteVARPlan.full(fp_model)
    main = plans[settings.coverages[0]]
    variants = [litevar_variant("fp", "fp", full)]
    variants += [litevar_variant(f"mdwa c={c:g}", "mdwa", _without_asc(p), setting=c) for c, p in plans.items()]
    variants += [litevar_variant(f"asc t={settings.asc_threshold:g}", "asc", _asc_only(main, full),
                                 setting=settings.asc_threshold),
                 litevar_variant(f"mdwa c={settings.coverages[0]:g} + asc", "mdwa+asc", main)]
    for recipe in settings.recipes:
        config = get_recipe(recipe)
        model = quantize(copy.deepcopy(fp_model), config, suite.sample_calibration)
        variants.append(litevar_variant(recipe, "quant", full, litevar_attention_quant(recipe), model, config))
    if settings.combined_recipe:
        config = get_recipe(settings.combined_recipe)
        model = quantize(copy.deepcopy(fp_model), config, suite.sample_calibration)
        variants.append(litevar_variant(f"{settings.combined_recipe} + mdwa + asc", "combined", main,
                                        litevar_attention_quant(settings.combined_recipe), model, config))
    variants += [fastvar_variant(full, keep) for keep in settings.fastvar_keep]
    return variants


def score(suite: BenchSuite, variants: list[Variant], progress: Progress) -> None:
    """Sample the evaluation run with each variant (FP first): quality, attention FLOPs, bytes."""
    fp_bytes = weight_nbytes(suite.fp_model)
    advance = progress("sampling variants", len(variants))
    for variant in variants:
        with variant.active(suite.fp_model) as (model, read_flops):
            variant.images = suite.sample_eval(model)
            flops = read_flops()
        reference = variants[0].images if variant is not variants[0] else None
        variant.row = {"variant": variant.name, "family": variant.family, "setting": variant.setting,
                       **suite.quality(variant.images, reference), **flops,
                       "held_bytes": held_bytes(model), "weight_bytes_ratio": weight_nbytes(model) / fp_bytes,
                       "average_weight_bits": average_weight_bits(model),
                       "attention_simulated": variant.family in ("quant", "combined")}
        advance()
    fp = variants[0].row
    for variant in variants:
        variant.row["attention_flops_fraction"] = variant.row["module_flops"] / fp["module_flops"]
        variant.row["attention_core_flops_fraction"] = variant.row["core_flops"] / fp["core_flops"]
        variant.row["attention_kept_core_fraction"] = variant.row["kept_core_flops"] / fp["core_flops"]


def compare_with_fp(suite: BenchSuite, variants: list[Variant], settings: LiteVARBenchSettings) -> list[dict]:
    """Paired bootstrap intervals of every variant's class accuracy and FID change against FP."""
    fp = variants[0].images
    return [{"variant": v.name, "baseline": "fp", "items": len(fp), "resamples": settings.bootstrap_resamples,
             "differences": suite.compare(v.images, fp, None, seed=settings.seed,
                                          resamples=settings.bootstrap_resamples)}
            for v in variants[1:]]


@torch.no_grad()
def dit_beside_var(var_suite: BenchSuite, var_row: dict, settings: LiteVARBenchSettings, progress: Progress) -> list[dict]:
    """The digits DiT at its default settings and the VAR, on the same labels and judges: quality, latency
    per image (the two timed interleaved) and bytes held."""
    dit_settings = SamplingSettings(model="dit-digits", samples_per_class=settings.samples_per_class,
                                    seed=settings.seed, latency_samples=settings.latency_samples)
    dit = load_suite("dit-digits", dit_settings)
    advance = progress("digits DiT beside the VAR", 2)
    dit_images = dit.sample_eval(dit.fp_model)
    advance()
    seconds, outputs = interleaved_medians({"dit": lambda: dit.sample_latency(dit.fp_model),
                                             "var": lambda: var_suite.sample_latency(var_suite.fp_model)},
                                            settings.latency_repeats)
    advance()
    var_model = var_suite.fp_model
    dit_quality = dit.quality(dit_images, None)

    def row(name: str, key: str, model: nn.Module, quality: dict) -> dict:
        return {"model": name, "class_accuracy": quality["class_accuracy"], "fid_features": quality["fid_features"],
                "latency_ms_per_image": 1000 * seconds[key] / len(outputs[key]), "held_bytes": held_bytes(model),
                "parameters": sum(p.numel() for p in model.parameters())}

    return [row("dit-digits (20 DPM-Solver steps, CFG 3)", "dit", dit.fp_model, dit_quality),
            row(f"var-digits ({len(var_model.scales)} scales, CFG {settings.guidance_scale:g}, top-k {settings.top_k})",
                "var", var_model, var_row)]


def run_litevar_bench(settings: LiteVARBenchSettings, progress: Progress = no_progress) -> dict:
    """``effigy bench litevar``: every row above, one run, one machine.

    Returns:
        The result dict (rows, paired comparisons, plans, images for the pictures).
    """
    if not settings.coverages:
        raise BenchError("give at least one MDWA coverage (--coverages).")
    suite = load_suite(settings.model, settings)
    tokenizer = tokenizer_of(suite)
    with torch.no_grad():
        plans = design_plans(suite, tokenizer, settings)
        variants = build_variants(suite, plans, settings)
        score(suite, variants, progress)
    comparisons = compare_with_fp(suite, variants, settings)
    advance = progress("timing", settings.latency_repeats + 1)
    ms = interleaved_ms_per_image(variants, suite.fp_model, suite.sample_latency, settings.latency_repeats, advance)
    for variant in variants:
        variant.row["latency_ms_per_image"] = ms[variant.name]
    if settings.measure_memory:  # the weights' memory: FP and each quantized model (attention hooks hold no weights)
        measure_peak_memory([v for v in variants if v.family == "fp" or v.config is not None], settings, progress)
    rows = [v.row for v in variants]
    add_changes_vs_baseline(rows, ("class_accuracy",))
    return {"benchmark": "litevar", "schema": RESULT_SCHEMA, "model": settings.model, "fid_features": suite.fid_features,
            "settings": settings.to_dict(), "machine": machine_facts(), "tokenizer": tokenizer_quality(tokenizer),
            "rows": rows, "comparisons": comparisons,
            "plans": {str(c): p.to_dict() for c, p in plans.items()},
            "dit_vs_var": dit_beside_var(suite, rows[0], settings, progress) if settings.compare_dit else None,
            "images": {v.name: v.images for v in variants}, "grid_index": suite.grid_index}


@torch.no_grad()
def tokenizer_quality(tokenizer: nn.Module) -> dict:
    """Codebook usage per scale and reconstruction PSNR of the tokenizer on the held-out digits."""
    from effigy.models.var.tokenizer import codebook_usage
    from effigy.worlds.digits import load_digits_images, split_indices

    images, _ = load_digits_images(tokenizer.config.image_size)
    usage = codebook_usage(tokenizer, images[split_indices(len(images))[1]])
    return {"scales": list(tokenizer.scales), "codebook_size": tokenizer.config.codebook_size,
            "codes_used": usage.codes_used, "heldout_psnr_db": usage.psnr}
