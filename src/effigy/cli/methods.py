"""The method verbs: quantize, select-widths, accelerate, and evaluate t2i (``demo`` is the quant bench: cli/bench.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer

from effigy.cli import bench
from effigy.cli._common import (
    JSON,
    SEED,
    check_choice,
    command_line,
    console,
    deprecated,
    echo_json,
    finite,
    fresh_run_folder,
    parse_bits,
    progress,
    show,
    writable_file,
    writable_folder,
)
from effigy.errors import EffigyError

evaluate_app = typer.Typer(help="Score a model's outputs per prompt.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command()(bench.demo)  # the quant bench on the shipped DiT: a bench command
    app.command("quantize")(quantize_cmd)
    app.command("select-widths")(select_widths)
    app.command("accelerate")(accelerate_cmd)


def quantize_cmd(
    recipe: str = typer.Option(..., help="Recipe name, e.g. vidit-q-w8a8, vidit-q-w4a8, vidit-q-w4a8-mp or mixdq-w4a8 "
                               "(a mixed-precision recipe runs its search on the model unless --allocation is given)."),
    out: Path = typer.Option(..., help="Folder to write model.safetensors + JSON configs (and allocation.json) into."),
    model: str = typer.Option("dit-digits", help="A zoo model name, a diffusers pipeline folder (its transformer is "
                              "quantized) or a diffusers transformer folder."),
    backend: Optional[str] = typer.Option(None, help="Matmul path: reference | int | fbgemm | int4 | auto "
                                          "(the fastest exact path, timed here)."),
    allocation: Optional[Path] = typer.Option(None, help="Widths from an earlier search (allocation.json, or a "
                                              "bench's *_allocation.json) instead of searching again."),
    widths: Optional[str] = typer.Option(None, help="Store every layer at each of these weight widths (e.g. "
                                         "4,6,8) in one multi-width checkpoint; pick later with select-widths."),
    prompt_file: Optional[Path] = typer.Option(None, help="Calibration and search prompts for a pipeline folder, one "
                                               "per line (default: 16 built-in everyday captions)."),
    prompts_alias: Optional[Path] = typer.Option(None, "--prompts", hidden=True),
    average_bits: Optional[float] = typer.Option(None, min=2.0, max=8.0, callback=finite,
                                                 help="Mixed precision: average weight bits (default: the recipe's)."),
    seed: int = SEED,
    as_json: bool = JSON,
) -> None:
    """Quantize a model with a recipe and save it as safetensors + JSON; mixed-precision recipes search the
    per-layer widths on the model itself (sensitivity analysis + integer program)."""
    from effigy.nn import BACKENDS
    from effigy.recipes import check_recipe_name
    from effigy.recipes.mixed_precision import read_group_bits
    from effigy.workflows.mixed_precision import SearchSettings
    from effigy.workflows.quantize import quantize_to_folder, read_prompts

    prompt_file = deprecated(prompts_alias, "--prompts FILE", "--prompt-file FILE", prompt_file)
    check_recipe_name(recipe)
    if backend is not None:
        check_choice(backend, BACKENDS, "--backend")
    if allocation is not None:
        read_group_bits(allocation, recipe)  # a bad file fails here, before the model loads
    candidates = None if widths is None else parse_bits(widths, "--widths")
    texts = None if prompt_file is None else read_prompts(prompt_file)
    writable_folder(out)
    with progress(not as_json) as reporter:
        summary = quantize_to_folder(model, recipe, out, backend, allocation, candidates, texts,
                                     SearchSettings(average_bits=average_bits), seed, reporter)
    if as_json:
        echo_json(summary)
    elif candidates is not None:
        console.print(f"{model} -> {summary['recipe']} at widths {summary['widths']}: multi-width checkpoint in {out}")
    else:
        if "search" in summary:
            _print_search(summary["search"])
        console.print(f"{model} -> {summary['recipe']}: {summary['fp32_held_bytes']:,} -> {summary['held_bytes']:,} "
                      f"bytes held ({summary['ratio']:.3f}x); saved to {out}")


def _print_search(search: dict) -> None:
    metrics = sorted(set(search["metric_per_group"].values()))
    console.print(f"{search['recipe']}: {search['average_bits']:.2f} average weight bits; layers per width "
                  f"{search['layers_per_width']}; groups scored by {', '.join(metrics)}; predicted loss "
                  f"{search['predicted_loss']:.4g}")
    for name, scores in search.get("measured", {}).items():
        console.print(f"  measured on the validation run, {name.replace('_', ' ')}: "
                      + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
    console.print("  per-layer widths and the whole search record: allocation.json in the output folder")


def select_widths(
    model: Optional[Path] = typer.Option(None, help="A multi-width checkpoint (effigy quantize --widths ...)."),
    checkpoint_alias: Optional[Path] = typer.Option(None, "--checkpoint", hidden=True),
    allocation: Path = typer.Option(..., help="Per-group widths: allocation.json of a search (effigy quantize, or "
                                    "a bench's *_allocation.json)."),
    out: Path = typer.Option(..., help="Folder for the selected, ordinary quantized checkpoint."),
    as_json: bool = JSON,
) -> None:
    """Pick each layer group's width from a multi-width checkpoint (no float model, no recalibration)."""
    from effigy.checkpoint import save
    from effigy.checkpoint.multiwidth import load_multiwidth, multiwidth_info
    from effigy.checkpoint.quantized import model_from_config
    from effigy.nn.quantize import weight_nbytes
    from effigy.recipes import VIDIT_Q_GROUPS
    from effigy.recipes.mixed_precision import config_from_group_bits, read_group_bits

    checkpoint = deprecated(checkpoint_alias, "--checkpoint", "--model", model)
    if checkpoint is None:
        raise EffigyError("select-widths needs --model DIR: a multi-width checkpoint (effigy quantize --widths ...).")
    base, _ = multiwidth_info(checkpoint)  # both inputs checked before the output folder is made
    group_bits = read_group_bits(allocation)
    writable_folder(out)
    chosen = config_from_group_bits(model_from_config(checkpoint), base, VIDIT_Q_GROUPS, group_bits)
    selected = load_multiwidth(checkpoint, chosen.layer_bits)
    save(selected, out)
    if as_json:
        echo_json({"model": str(checkpoint), "allocation": str(allocation), "out": str(out),
                   "counted_weight_bytes": weight_nbytes(selected), "layer_bits": chosen.layer_bits})
        return
    console.print(f"selected widths from {checkpoint} by {allocation}: {weight_nbytes(selected):,} weight bytes; "
                  f"saved to {out}")


def accelerate_cmd(
    model: str = typer.Option("dit-digits", help="A shipped generator (dit-digits, t2i-shapes: DiTFastAttn; "
                              "var-digits: LiteVAR) or a diffusers DiT / PixArt pipeline folder (DiTFastAttn)."),
    threshold: float = typer.Option(0.1, min=0.0, help="DiTFastAttn: search threshold on the relative output error.",
                                    callback=finite),
    plan: Optional[Path] = typer.Option(None, help="Apply this saved plan instead of calibrating a new one."),
    out: Optional[Path] = typer.Option(None, help="Where to save the calibrated plan (default: ditfastattn_plan.json, "
                                       "or litevar_plan.json for var-digits)."),
    recipe: Optional[str] = typer.Option(None, help="Quantize with this recipe first (e.g. vidit-q-w8a8; litevar-w8a8, "
                                         "litevar-w6a6 or litevar-w4a8 for var-digits)."),
    window: float = typer.Option(0.125, help="DiTFastAttn: window as a fraction of the token count.", callback=finite),
    coverage: float = typer.Option(0.95, min=0.01, max=1.0, callback=finite,
                                   help="LiteVAR: share of each block's attention mass MDWA keeps."),
    asc_threshold: float = typer.Option(1.0, min=0.0, callback=finite, help="LiteVAR: ASC shares a (layer, scale) "
                                        "whose CFG halves differ by at most this (relative L1; default chosen on a "
                                        "validation run)."),
    prompt_file: Optional[Path] = typer.Option(None, help="A pipeline folder's calibration prompts, one per line "
                                               "(default: 16 built-in everyday captions, or class ids 0-7)."),
    steps: int = typer.Option(20, min=2, max=50),
    samples_per_class: int = typer.Option(2, min=1, max=1000, help="Shipped models: images per class to check the "
                                          "plan on."),
    seed: int = SEED,
    as_json: bool = JSON,
) -> None:
    """DiTFastAttn (DiTs, shipped or a pipeline folder) or LiteVAR (the VAR): calibrate (or load) a plan, apply it,
    and report attention FLOPs and quality vs no plan."""
    from effigy.evaluate.suites import SamplingSettings
    from effigy.workflows.accelerate import accelerate_ditfastattn
    from effigy.workflows.quantize import read_prompts

    if model == "var-digits":
        _accelerate_var(recipe, plan, out or Path("litevar_plan.json"), coverage, asc_threshold, samples_per_class,
                        seed, as_json)
        return
    texts = None if prompt_file is None else read_prompts(prompt_file)
    out = out or Path("ditfastattn_plan.json")
    settings = SamplingSettings(model=model, steps=steps, samples_per_class=samples_per_class, seed=seed)
    writable_file(out)
    with progress(not as_json) as reporter:
        summary = accelerate_ditfastattn(model, threshold, plan, out, recipe, window, settings, texts, reporter)
    _print_summary(summary, as_json, lambda s: (
        f"{model}{' + ' + recipe if recipe else ''}, plan {s['plan']}: attention FLOPs {s['module_fraction']:.1%} "
        f"of full (QK/AV {s['core_fraction']:.1%}), PSNR vs no plan {s['psnr_vs_no_plan']:.1f} dB; techniques "
        f"{s['technique_counts']}"))


def _print_summary(summary: dict, as_json: bool, line: Callable[[dict], str]) -> None:
    if as_json:
        echo_json(summary)
    else:
        console.print(line(summary))


def _accelerate_var(recipe: str | None, plan: Path | None, out: Path, coverage: float, asc_threshold: float,
                    samples_per_class: int, seed: int, as_json: bool) -> None:
    from effigy.attention.multiscale import LiteVARPlan
    from effigy.recipes import LITEVAR_RECIPES
    from effigy.workflows.accelerate import LiteVARSettings, accelerate_var

    if recipe is not None:
        check_choice(recipe, LITEVAR_RECIPES, "--recipe")
    loaded = None if plan is None else LiteVARPlan.load(plan)  # a bad file fails here, before any model loads
    writable_file(out)
    settings = LiteVARSettings(coverages=(coverage,), asc_threshold=asc_threshold, samples_per_class=samples_per_class,
                               seed=seed, batch_size=100)
    with progress(not as_json) as reporter:
        summary = accelerate_var(settings, loaded, plan or out, recipe, reporter)
    _print_summary(summary, as_json, lambda s: (
        f"var-digits{' + ' + recipe if recipe else ''}, plan {s['plan']}: attention FLOPs (QK,AV) "
        f"{s['core_fraction']:.1%} of full (module {s['module_fraction']:.1%}); class accuracy "
        f"{s['class_accuracy']:.3f} (FP {s['class_accuracy_fp']:.3f}), PSNR vs FP {s['psnr_vs_fp']:.1f} dB; held "
        f"bytes {s['held_bytes']:,} (FP {s['held_bytes_fp']:,})"))


@evaluate_app.command("t2i")
def evaluate_t2i(
    model: str = typer.Option("t2i-shapes", help="Text-to-image model (the shipped shapes model)."),
    prompts: int = typer.Option(60, min=3, max=10000, help="Number of prompts (cycling single / relation / count)."),
    steps: int = typer.Option(20, min=1, max=50),
    guidance: float = typer.Option(4.0, min=0.0, callback=finite),
    split: str = typer.Option("heldout", help="Prompt split: heldout (unseen colour-shape pairs) or train."),
    seed: int = SEED,
    grid: bool = typer.Option(False, "--grid", help="Also write a PNG of prompts and images."),
    out: Optional[Path] = typer.Option(None, help="Results root: files go to <root>/evaluate-t2i/<model>/ (default: "
                                       "a fresh folder under runs/)."),
    as_json: bool = JSON,
) -> None:
    """Per-prompt adherence (attribute checker) and CLIP-score stand-in, plus FID on checker features."""
    from effigy.evaluate.t2i import T2ISuite, run_t2i_eval
    from effigy.evaluate.t2i_report import write_t2i_report

    check_choice(model, ("t2i-shapes",), "--model")
    check_choice(split, ("heldout", "train"), "--split")
    suite = T2ISuite.load()
    with progress(not as_json) as reporter:
        result = run_t2i_eval(suite, prompts, steps, guidance, seed, split, reporter)
    settings = {"model": model, "prompts": prompts, "steps": steps, "guidance": guidance, "split": split, "seed": seed}
    paths = write_t2i_report(result, settings, (out or fresh_run_folder()) / "evaluate-t2i" / model, command_line(),
                             grid)
    if as_json:
        echo_json({"summary": result["summary"], "rows": result["rows"]})
        return
    summary = {"rows": [{"metric": k, "value": v} for k, v in result["summary"].items()]}
    show(summary, [("metric", "metric"), ("value", "value")], f"{model}, {split} prompts (seed {seed})", paths, False)

