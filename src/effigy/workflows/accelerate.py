"""``effigy accelerate``: design an attention plan on a model, apply it, and say what it saves and costs.

DiTFastAttn (https://arxiv.org/abs/2406.08552) on a DiT or PixArt transformer, a shipped one (calibrated on its
suite's calibration run) or a user's diffusers pipeline folder (calibrated by running the pipeline on the
user's prompts); LiteVAR (https://arxiv.org/abs/2411.17178) on the shipped VAR. Either may quantize first with a
recipe, the plan then searched on the quantized model.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from effigy.attention import AttentionPlan, apply_ditfastattn, calibrate_plan, remove_ditfastattn
from effigy.attention.litevar import apply_litevar, remove_litevar, total_flops
from effigy.attention.multiscale import LiteVARPlan, design_litevar_plan
from effigy.errors import PlanError
from effigy.evaluate.measure import Progress, no_progress
from effigy.evaluate.suites import VAR_TOP_K, BenchSuite, SamplingSettings, class_labels, load_suite
from effigy.memory import held_bytes
from effigy.metrics import psnr
from effigy.models.zoo import ZOO
from effigy.nn.quantize import quantize
from effigy.recipes import get_recipe, litevar_attention_quant
from effigy.workflows.quantize import pipeline_sampler, quantization_source

Sampler = Callable[[nn.Module], torch.Tensor]


@dataclass
class PlanRuns:
    """The transformer a plan is designed for, the run it is calibrated on, and the run that judges it."""

    transformer: nn.Module
    calibrate: Sampler
    evaluate: Sampler


def plan_runs(model: str, settings: SamplingSettings, prompts: list[str] | None = None) -> PlanRuns:
    """A shipped generator's suite runs, or a pipeline folder's own runs: calibration on the prompts (seed +
    10000), evaluation on the same prompts with the evaluation seed."""
    if model in ZOO.names("generator"):
        suite = load_suite(model, settings)
        return PlanRuns(suite.fp_model, suite.sample_calibration, suite.sample_eval)
    source = quantization_source(model, prompts, settings.steps)
    if source.pipeline is None:
        raise PlanError(f"DiTFastAttn calibrates by sampling, and {model!r} is a transformer folder without its "
                        "pipeline; pass the pipeline folder (with model_index.json).")
    pipe = source.pipeline
    return PlanRuns(pipe.transformer, pipeline_sampler(pipe, prompts, settings.steps, settings.seed + 10_000),
                    pipeline_sampler(pipe, prompts, settings.steps, settings.seed))


def accelerate_ditfastattn(model: str, threshold: float, plan_path: Path | None, out: Path,
                           recipe: str | None = None, window_fraction: float = 0.125,
                           settings: SamplingSettings | None = None, prompts: list[str] | None = None,
                           progress: Progress = no_progress) -> dict:
    """Calibrate a DiTFastAttn plan on ``model`` (or load ``plan_path``), optionally after quantizing with
    ``recipe`` (the plan is then searched on the quantized model: both methods at once), apply it, and
    compare samples against the same model without a plan.

    Args:
        model: a shipped DiT (``dit-digits``, ``t2i-shapes``) or a diffusers pipeline folder.
        threshold: the search's bound on each step's relative output error.
        plan_path: a saved plan to apply instead of calibrating.
        out: where the calibrated plan is saved.
        recipe: quantize with this recipe first.
        window_fraction: window attention's band as a fraction of the token count.
        settings: steps, seed and sizes of the runs (shipped models: their suite's).
        prompts: a pipeline folder's prompts (default: its built-in set).
        progress: the progress reporter.
    Returns:
        A summary: attention FLOP fractions, technique counts and PSNR vs no plan.
    """
    settings = settings or SamplingSettings(model=model)
    runs = plan_runs(model, settings, prompts)
    transformer = runs.transformer
    if recipe is not None:
        quantize(transformer, get_recipe(recipe), runs.calibrate)
    reference = runs.evaluate(transformer)
    if plan_path is None:
        plan = calibrate_plan(transformer, lambda: runs.calibrate(transformer), threshold, window_fraction,
                              progress=progress("calibrating", settings.steps))
        plan.save(out)
    else:
        plan = AttentionPlan.load(plan_path)
    state = apply_ditfastattn(transformer, plan)
    try:
        images = runs.evaluate(transformer)
    finally:
        remove_ditfastattn(transformer)
    return {"model": model, "recipe": recipe, "plan": str(plan_path or out), "threshold": plan.threshold,
            **state.flops.fractions(), "technique_counts": plan.technique_counts(),
            "psnr_vs_no_plan": psnr(images, reference)}


@dataclass
class LiteVARSettings(SamplingSettings):
    """How a LiteVAR plan is designed on the shipped VAR (the bench's settings extend these)."""

    model: str = "var-digits"
    calibration_per_class: int = 4
    coverages: tuple[float, ...] = (0.95, 0.8)  # MDWA coverage levels; the first is the one a user verb applies
    # drop_mass and asc_threshold: chosen on a validation run (seed 20000) by benchmarks/scripts/litevar_plan_sweep.py
    drop_mass: float = 0.05
    full_scales: int = 3
    asc_threshold: float = 1.0
    top_k: int = VAR_TOP_K


def design_plans(suite: BenchSuite, tokenizer: nn.Module, settings: LiteVARSettings) -> dict[float, LiteVARPlan]:
    """One plan per MDWA coverage, each with ASC decided at ``asc_threshold`` on the same calibration run."""
    labels = class_labels(settings.calibration_per_class)
    return {c: design_litevar_plan(suite.fp_model, tokenizer, labels, c, settings.drop_mass, settings.full_scales,
                                   settings.asc_threshold, settings.guidance_scale, settings.seed + 10_000,
                                   settings.top_k)
            for c in settings.coverages}


def tokenizer_of(suite: BenchSuite) -> nn.Module:
    """The shipped multi-scale tokenizer the VAR in ``suite`` was trained on."""
    from effigy.models.zoo import load_zoo_model

    return load_zoo_model(suite.fp_model.config.tokenizer)[0]


@torch.no_grad()
def accelerate_var(settings: LiteVARSettings, plan: LiteVARPlan | None, plan_file: Path, recipe: str | None = None,
                   progress: Progress = no_progress) -> dict:
    """LiteVAR on the shipped VAR: use ``plan`` (loaded from ``plan_file``), or design one (MDWA at
    ``settings.coverages[0]``, ASC at ``settings.asc_threshold``) and save it to ``plan_file``; optionally
    quantize with a LiteVAR ``recipe`` (its linears packed, its attention simulated at low bits), apply, and
    compare samples against the FP model.

    Returns:
        A summary: attention FLOP fractions, class accuracy and FID of both, PSNR vs FP, held bytes.
    """
    suite = load_suite(settings.model, settings)
    fp_model = suite.fp_model
    advance = progress("calibrating" if plan is None else "checking the plan", 3)
    if plan is None:
        plan = design_plans(suite, tokenizer_of(suite), settings)[settings.coverages[0]]
        plan.save(plan_file)
    else:
        plan.check_model(fp_model)
    advance()
    reference = suite.sample_eval(fp_model)
    advance()
    model, quant = fp_model, None
    if recipe is not None:
        quant = litevar_attention_quant(recipe)
        model = quantize(copy.deepcopy(fp_model), get_recipe(recipe), suite.sample_calibration)
    processors = apply_litevar(model, plan, quant)
    try:
        images = suite.sample_eval(model)
    finally:
        remove_litevar(model)
    advance()
    flops, fp_quality, quality = total_flops(processors), suite.quality(reference, None), suite.quality(images, reference)
    return {"model": settings.model, "recipe": recipe, "plan": str(plan_file), "coverage": plan.coverage,
            "asc_threshold": plan.asc_threshold, "kept_pairs": plan.kept_fraction(), "asc_shared": plan.shared_fraction(),
            "core_fraction": flops["core_flops"] / flops["full_core_flops"],
            "module_fraction": flops["module_flops"] / flops["full_module_flops"],
            "class_accuracy_fp": fp_quality["class_accuracy"], "class_accuracy": quality["class_accuracy"],
            "fid_fp": fp_quality["fid_features"], "fid": quality["fid_features"], "psnr_vs_fp": psnr(images, reference),
            "held_bytes_fp": held_bytes(fp_model), "held_bytes": held_bytes(model)}
