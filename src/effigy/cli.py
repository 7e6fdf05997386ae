"""The ``effigy`` command line: a thin layer over the library (all work happens in effigy.*)."""
from __future__ import annotations

import json
import math
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from effigy.errors import EffigyError

app = typer.Typer(help="effigy: compress generative models, evaluate them cheaply, detect what they produce.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
zoo_app = typer.Typer(help="Shipped models and the commands that trained them.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that write JSON + Markdown under benchmarks/results/.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
app.add_typer(bench_app, name="bench")
evaluate_app = typer.Typer(help="Score a model's outputs per prompt.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")
kv_app = typer.Typer(help="PM-KVQ: progressive mixed-precision KV cache for long generation (SmolLM2-135M).",
                     no_args_is_help=True)
app.add_typer(kv_app, name="kvquant")
console = Console(stderr=True)


@contextmanager
def rich_progress(enabled: bool = True) -> Iterator:
    """A Progress reporter (see effigy.evaluate.measure) drawing one bar per stage."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not enabled, transient=False) as bars:

        def start(description: str, total: int):
            task = bars.add_task(description, total=total)
            return lambda: bars.advance(task)

        yield start


def _command_line() -> str:
    return "effigy " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _print_rows(rows: list[dict], columns: list[tuple[str, str]], title: str) -> None:
    from effigy.evaluate.report import format_value

    table = Table(title=title)
    for _, header in columns:
        table.add_column(header, justify="right" if header != "variant" else "left")
    for row in rows:
        table.add_row(*(format_value(row.get(key)) for key, _ in columns))
    Console().print(table)


def _write_and_show(result: dict, markdown: str, columns, stem: Path, title: str, as_json: bool) -> None:
    """Write ``stem``.json and ``stem``.md, then print the JSON or a table of the rows."""
    from effigy.evaluate.report import write_results

    paths = write_results(result, markdown, stem.parent, stem.name)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print_rows(result["rows"], columns, title)
        console.print(f"wrote {paths[0]} and {paths[1]}")


def _run_quant_bench(settings, out: Path, stem: str, as_json: bool) -> dict:
    from effigy.evaluate.quant_bench import run_quant_bench
    from effigy.evaluate.quant_report import COLUMNS, write_quant_report

    with rich_progress(not as_json) as progress:
        result = run_quant_bench(settings, progress)
    paths = write_quant_report(result, out, stem, _command_line())
    if as_json:
        typer.echo(json.dumps({"rows": result["rows"], "files": {k: str(v) for k, v in paths.items()}}, indent=2))
    else:
        _print_rows(result["rows"], COLUMNS, f"{result['model']}: FP vs quantized (seed {settings.seed})")
    return paths


@app.command()
def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for grid.png, report.md and results.json."),
    samples_per_class: int = typer.Option(20, min=2, help="Samples per digit class for the quality metrics."),
    steps: int = typer.Option(20, min=1, max=200, help="DPM-Solver sampling steps."),
    seed: int = typer.Option(0),
    memory: bool = typer.Option(True, help="Measure peak memory in a fresh process per variant (~10 s each)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable results instead of a table."),
) -> None:
    """FP vs W8A8 and W4A8 quantized shipped digits DiT: image grid, quality, bytes, memory and latency.
    (The mixed-precision search and the peer-library row are in `effigy bench quant`.)"""
    from effigy.evaluate.quant_bench import QuantBenchSettings

    settings = QuantBenchSettings(samples_per_class=samples_per_class, steps=steps, seed=seed, measure_memory=memory,
                                  recipes=("naive-w8a8", "vidit-q-w8a8", "rtn-w4a8", "vidit-q-w4a8"), peer=False)
    paths = _run_quant_bench(settings, out, "report", as_json)
    paths["grid"].replace(out / "grid.png")
    paths["json"].replace(out / "results.json")
    if not as_json:
        console.print(f"wrote {out / 'grid.png'}, {out / 'report.md'} and {out / 'results.json'}")


@bench_app.command("quant")
def bench_quant(
    model: str = typer.Option("dit-digits", help="Shipped model: dit-digits or t2i-shapes."),
    samples_per_class: int = typer.Option(50, min=2),
    steps: int = typer.Option(20, min=1, max=200),
    seed: int = typer.Option(0),
    memory: bool = typer.Option(True, help="Measure peak memory in a fresh process per variant (~10 s each)."),
    mp_bits: float = typer.Option(4.0, help="Average weight bits the mixed-precision allocation may spend."),
    sensitivity_steps: int = typer.Option(10, min=1, max=50, help="Sampling steps of each sensitivity run."),
    mp_candidates: str = typer.Option("3,4,6,8", help="Candidate weight bit-widths of the mixed-precision search."),
    sensitivity_metric: str = typer.Option("denoiser", help="denoiser: errors of the replayed FP denoiser calls; "
                                           "propagated: the same weighted by each call's gain to the final sample; "
                                           "samples: SSIM / alignment of the final samples."),
    mp_around: str = typer.Option("float", help="float: score one layer with the rest in FP; base: with the rest at "
                                  "uniform W4."),
    mp_max_moved: str = typer.Option("0.05,0.1,0.15,0.2,0.3,inf", help="ILP trust regions: sum(size x |bits - 4|) "
                                     "at most this fraction of all weights; 'inf' for none. With several, a "
                                     "validation run (seed + 1) picks one, or uniform W4."),
    mp_granularity: str = typer.Option("layer", help="layer: one width per linear layer; block: per (block, kind) "
                                       "group (attn1 / attn2 / ff / norm1)."),
    bootstrap_resamples: int = typer.Option(1000, min=100, help="Resamples of the paired bootstrap intervals "
                                            "(MP vs uniform W4A8, W8A8 / W4A8 vs FP)."),
    out: Path = typer.Option(Path("benchmarks/results")),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """FP, naive W8A8, ViDiT-Q W8A8 (+ its fbgemm run), RTN W4A8, ViDiT-Q W4A8 and W4A8-MP on a shipped model."""
    from effigy.evaluate.quant_bench import SENSITIVITY_METRIC_NAMES, QuantBenchSettings
    from effigy.recipes.mixed_precision import AROUND, GRANULARITIES

    if sensitivity_metric not in SENSITIVITY_METRIC_NAMES:
        raise typer.BadParameter(f"{sensitivity_metric!r}: choose one of {SENSITIVITY_METRIC_NAMES}",
                                 param_hint="--sensitivity-metric")
    if mp_granularity not in GRANULARITIES:
        raise typer.BadParameter(f"{mp_granularity!r}: choose one of {GRANULARITIES}", param_hint="--mp-granularity")
    if mp_around not in AROUND:
        raise typer.BadParameter(f"{mp_around!r}: choose one of {AROUND}", param_hint="--mp-around")
    settings = QuantBenchSettings(model=model, samples_per_class=samples_per_class, steps=steps, seed=seed, measure_memory=memory,
                                  mp_average_bits=mp_bits, sensitivity_steps=sensitivity_steps,
                                  mp_candidate_bits=_parse_bits(mp_candidates), sensitivity_metric=sensitivity_metric,
                                  mp_granularity=mp_granularity, mp_around=mp_around,
                                  mp_max_moved=_parse_trust_regions(mp_max_moved),
                                  bootstrap_resamples=bootstrap_resamples)
    paths = _run_quant_bench(settings, out, f"quant_{model.replace('-', '_')}", as_json)
    if not as_json:
        console.print("wrote " + ", ".join(str(p) for p in paths.values()))


def _parse_list(text: str, option: str, convert, valid, what: str, example: str, rule: str) -> list:
    """The comma-separated values of one option, each converted and checked, or one clear error."""
    try:
        values = [convert(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise EffigyError(f"{option} {text!r}: give comma-separated {what}, e.g. {example}.") from None
    if not values or not all(valid(v) for v in values):
        raise EffigyError(f"{option} {text!r}: {rule}.")
    return values


def _parse_bits(text: str, option: str = "--mp-candidates") -> tuple[int, ...]:
    bits = _parse_list(text, option, int, lambda b: 2 <= b <= 8, "integers", "3,4,6,8",
                       "every bit-width must lie in 2..8")
    return tuple(sorted(set(bits)))


def _parse_trust_regions(text: str) -> tuple[float | None, ...]:
    regions = _parse_list(text, "--mp-max-moved", float, lambda r: r >= 0, "fractions", "0.05,0.2,inf",
                          "every trust region must be a fraction >= 0 (or inf)")  # NaN fails r >= 0 too
    return tuple(None if math.isinf(r) else r for r in regions)


@bench_app.command("kernels")
def bench_kernels(
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("benchmarks/results")),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """fp32 vs torch._int_mm vs fbgemm int8 GEMM on the digits DiT's layer shapes (exactness checked)."""
    from effigy.evaluate.kernel_bench import KERNEL_COLUMNS, run_kernel_bench
    from effigy.evaluate.report import machine_line, markdown_table

    result = run_kernel_bench(seed=seed)
    result["command"] = _command_line()
    markdown = (f"# Integer matmul paths on this CPU\n\nCommand: `{result['command']}` (seed {seed})  \n"
                f"{machine_line(result['machine'])}\n\n" + markdown_table(result["rows"], KERNEL_COLUMNS))
    _write_and_show(result, markdown, KERNEL_COLUMNS, out / "kernels", "integer matmul paths", as_json)


@bench_app.command("scale")
def bench_scale(
    tokens: str = typer.Option("256", help="Token counts of the DiT-XL/2 calls (square numbers: 256, 1024, 4096)."),
    layer_tokens: str = typer.Option("64,256,1024,4096", help="Token counts of the single-layer section."),
    kv_lengths: str = typer.Option("2048,8192", help="Context lengths of the KV section on SmolLM2 ('' skips it)."),
    variants: str = typer.Option("", help="Comma-separated subset of the model section's variants (default: all "
                                 "that run fast on this CPU); all of them at DiT-XL/2 size need more than 24 GB."),
    repeats: int = typer.Option(3, min=1, max=50),
    memory: bool = typer.Option(True, help="Peak RSS in a fresh process per variant."),
    seed: int = typer.Option(0, min=0, max=2**31 - 1),
    out: Path = typer.Option(Path("benchmarks/results")),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The recipes at DiT-XL/2 size (random weights): speed, bytes held and peak RSS; KV caches at 2k-32k."""
    from effigy.evaluate.scale_bench import VARIANTS, ScaleBenchSettings, run_scale_bench
    from effigy.evaluate.scale_kv import KVScaleSettings
    from effigy.evaluate.scale_report import MODEL_COLUMNS, render_scale

    counts = lambda text, option: tuple(_parse_list(text, option, int, lambda n: 1 <= n <= 65536, "integers",
                                                    "256,1024", "every count must lie in 1..65536"))
    settings = ScaleBenchSettings(tokens=counts(tokens, "--tokens"), repeats=repeats, measure_memory=memory, seed=seed)
    if variants.strip():
        chosen = [v.strip() for v in variants.split(",") if v.strip()]
        unknown = [v for v in chosen if v not in VARIANTS]
        if unknown or "fp32" not in chosen:
            raise EffigyError(f"--variants {variants!r}: include fp32 and choose among {', '.join(VARIANTS)}.")
        settings.variants = tuple(chosen)
    kv = KVScaleSettings(lengths=counts(kv_lengths, "--kv-lengths"), seed=seed) if kv_lengths.strip() else None
    with rich_progress(not as_json) as progress:
        result = run_scale_bench(settings, progress, counts(layer_tokens, "--layer-tokens"), kv)
    result["command"] = _command_line()
    _write_and_show(result, render_scale(result, result["command"]), MODEL_COLUMNS[:6], out / "scale",
                    "recipes at DiT-XL/2 size (random weights)", as_json)


@bench_app.command("t2i-scorers")
def bench_t2i_scorers(
    prompts: int = typer.Option(60, min=6),
    steps: int = typer.Option(20, min=1, max=50),
    guidance: float = typer.Option(4.0, min=0.0),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("benchmarks/results")),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Do the attribute checker and the CLIP-score stand-in rank degraded variants alike (Kendall tau)?"""
    from effigy.evaluate.report import markdown_table
    from effigy.evaluate.t2i import T2ISuite, run_scorer_agreement

    suite = T2ISuite.load()
    with rich_progress(not as_json) as progress:
        result = run_scorer_agreement(suite, prompts, steps, guidance, seed, progress)
    result.update(command=_command_line(), seed=seed, prompts=prompts)
    columns = [("variant", "variant"), ("kind", "kind"), ("adherence", "adherence"), ("clip_score", "CLIP score"),
               ("adherence_single", "single"), ("adherence_relation", "relation"), ("adherence_count", "count")]
    markdown = (f"# Scorer agreement on t2i-shapes\n\nCommand: `{result['command']}` (seed {seed})  \n"
                f"{prompts} held-out prompts per variant. Kendall tau between mean adherence and mean CLIP score "
                f"across the model variants (fewer steps, weaker guidance, weight noise; reference included): "
                f"**{result['kendall_tau']:.3f}** (p = {result['p_value']:.2g}). With the image corruptions (pixel "
                f"noise on finished samples, which the attribute checker reads through by design) as well: "
                f"{result['kendall_tau_all']:.3f} (p = {result['p_value_all']:.2g}). Weight noise: seeded Gaussian "
                "noise of the given fraction of each output channel's weight RMS on every layer the quantization "
                "recipes quantize.\n\n" + markdown_table(result["rows"], columns))
    _write_and_show(result, markdown, columns, out / "t2i_scorer_agreement", f"Kendall tau = {result['kendall_tau']:.3f}",
                    as_json)


@bench_app.command("fastattn")
def bench_fastattn(
    model: str = typer.Option("dit-digits", help="Shipped model: dit-digits or t2i-shapes."),
    thresholds: str = typer.Option("0.025,0.05,0.1,0.2,0.4", help="DiTFastAttn search thresholds to sweep."),
    window: float = typer.Option(0.125, help="Window as a fraction of the token count."),
    samples_per_class: int = typer.Option(10, min=1),
    steps: int = typer.Option(20, min=2, max=50),
    seed: int = typer.Option(0),
    peers: bool = typer.Option(True, help="Also run diffusers' PAB, FasterCache, FirstBlockCache, TaylorSeer and MagCache hooks."),
    out: Path = typer.Option(Path("benchmarks/results")),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """DiTFastAttn threshold sweep vs diffusers cache hooks: attention FLOPs, latency, quality vs FP."""
    from effigy.evaluate.fastattn_bench import FastAttnBenchSettings, run_fastattn_bench
    from effigy.evaluate.fastattn_report import COLUMNS, write_fastattn_report

    settings = FastAttnBenchSettings(model=model, thresholds=_parse_floats(thresholds, "--thresholds"),
                                     window_fraction=window, samples_per_class=samples_per_class, steps=steps,
                                     seed=seed, peers=FastAttnBenchSettings.peers if peers else ())
    with rich_progress(not as_json) as progress:
        result = run_fastattn_bench(settings, progress)
    paths = write_fastattn_report(result, out, f"fastattn_{model.replace('-', '_')}", _command_line())
    if as_json:
        typer.echo(json.dumps({"rows": result["rows"], "files": {k: str(v) for k, v in paths.items()}}, indent=2))
    else:
        _print_rows(result["rows"], COLUMNS, f"{model}: DiTFastAttn and diffusers hooks (seed {seed})")
        console.print("wrote " + ", ".join(str(p) for p in paths.values()))


@app.command("accelerate")
def accelerate_cmd(
    model: str = typer.Option("dit-digits", help="Shipped model: dit-digits or t2i-shapes."),
    threshold: float = typer.Option(0.1, min=0.0, help="Search threshold on the relative output error."),
    plan: Optional[Path] = typer.Option(None, help="Apply this saved plan instead of calibrating a new one."),
    out: Path = typer.Option(Path("ditfastattn_plan.json"), help="Where to save the calibrated plan."),
    recipe: Optional[str] = typer.Option(None, help="Quantize with this recipe first (e.g. vidit-q-w8a8)."),
    window: float = typer.Option(0.125, help="Window as a fraction of the token count."),
    steps: int = typer.Option(20, min=2, max=50),
    samples_per_class: int = typer.Option(2, min=1, help="Images per class to check the plan on."),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """DiTFastAttn: calibrate (or load) a plan, apply it, and report attention FLOPs and quality vs no plan."""
    from effigy.attention import AttentionPlan, apply_ditfastattn, calibrate_plan, remove_ditfastattn
    from effigy.evaluate.fastattn_bench import FastAttnBenchSettings
    from effigy.evaluate.worlds import load_world
    from effigy.metrics import psnr

    settings = FastAttnBenchSettings(model=model, window_fraction=window, steps=steps,
                                     samples_per_class=samples_per_class, seed=seed)
    world = load_world(model, settings)
    transformer = world.fp_model
    if recipe is not None:
        _quantize_in_place(transformer, world, recipe)
    reference = world.sample_eval(transformer)
    if plan is None:
        with rich_progress(not as_json) as progress:
            found = calibrate_plan(transformer, lambda: world.sample_calibration(transformer), threshold, window,
                                   progress=progress("calibrating", steps))
        found.save(out)
    else:
        found = AttentionPlan.load(plan)
    state = apply_ditfastattn(transformer, found)
    images = world.sample_eval(transformer)
    remove_ditfastattn(transformer)
    summary = {"model": model, "recipe": recipe, "plan": str(plan or out), "threshold": found.threshold,
               **state.flops.fractions(), "technique_counts": found.technique_counts(),
               "psnr_vs_no_plan": psnr(images, reference)}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        console.print(f"{model}{' + ' + recipe if recipe else ''}, plan {summary['plan']}: attention FLOPs "
                      f"{summary['module_fraction']:.1%} of full (QK/AV {summary['core_fraction']:.1%}), "
                      f"PSNR vs no plan {summary['psnr_vs_no_plan']:.1f} dB; techniques {summary['technique_counts']}")


def _quantize_in_place(transformer, world, recipe: str) -> None:
    """Quantize first (calibrating on the world's calibration prompts), so the plan is searched on
    and applied to the quantized model: both methods at once."""
    from effigy.api import quantize
    from effigy.recipes import get_recipe

    quantize(transformer, get_recipe(recipe), world.sample_calibration)


def _parse_floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise EffigyError(f"{option} {text!r}: give comma-separated numbers, e.g. 0.05,0.1,0.2.") from None
    if not values or any(v < 0 for v in values):
        raise EffigyError(f"{option} {text!r}: give one or more non-negative numbers.")
    return values


@app.command("quantize")
def quantize_cmd(
    recipe: str = typer.Option(..., help="Recipe name, e.g. vidit-q-w8a8, vidit-q-w4a8 or vidit-q-w4a8-mp."),
    out: Path = typer.Option(..., help="Folder to write model.safetensors + JSON configs into."),
    model: str = typer.Option("dit-digits", help="A zoo model name or a local diffusers model folder."),
    backend: Optional[str] = typer.Option(None, help="Matmul path: reference | int | fbgemm | int4 | auto (the fastest exact path, timed here)."),
    allocation: Optional[Path] = typer.Option(None, help="Bit allocation JSON for a mixed-precision recipe "
                                              "(written by `effigy bench quant` as *_allocation.json)."),
    widths: Optional[str] = typer.Option(None, help="Store every layer at each of these weight widths (e.g. "
                                         "4,6,8) in one multi-width checkpoint; pick later with select-widths."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Quantize a model with a recipe and save it as safetensors + JSON."""
    from dataclasses import replace

    from effigy.api import quantize, save, weight_nbytes
    from effigy.evaluate.calibration import calibration_loop_for, load_model_for_quantization
    from effigy.recipes import get_recipe
    from effigy.recipes.mixed_precision import MIXED_PRECISION_RECIPES, config_from_allocation_file

    float_model = load_model_for_quantization(model)
    if recipe in MIXED_PRECISION_RECIPES and allocation is None:
        raise EffigyError(f"{recipe} needs --allocation FILE: the per-group widths chosen by `effigy bench quant` "
                          f"(e.g. benchmarks/results/quant_dit_digits_allocation.json).")
    if allocation is not None:
        config = config_from_allocation_file(float_model, recipe, allocation)
    else:
        config = get_recipe(recipe)
    if backend is not None:
        config = replace(config, backend=backend)
    if widths is not None:
        from effigy.multiwidth import save_multiwidth

        candidates = _parse_bits(widths, "--widths")
        save_multiwidth(float_model, config, out, candidates, calibration_loop_for(model, config))
        console.print(f"{model} -> {config.name} at widths {list(candidates)}: multi-width checkpoint in {out}")
        return
    from effigy.memory import held_bytes

    fp_bytes = held_bytes(float_model)
    quantized = quantize(float_model, config, calibration_loop_for(model, config))
    save(quantized, out)
    summary = {"model": model, "recipe": config.name, "out": str(out), "fp32_held_bytes": fp_bytes,
               "held_bytes": held_bytes(quantized), "counted_weight_bytes": weight_nbytes(quantized)}
    summary["ratio"] = summary["held_bytes"] / fp_bytes
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        console.print(f"{model} -> {config.name}: {fp_bytes:,} -> {summary['held_bytes']:,} bytes held "
                      f"({summary['ratio']:.3f}x); saved to {out}")


@app.command("select-widths")
def select_widths(
    checkpoint: Path = typer.Option(..., help="A multi-width checkpoint (effigy quantize --widths ...)."),
    allocation: Path = typer.Option(..., help="Per-group widths: *_allocation.json from effigy bench quant."),
    out: Path = typer.Option(..., help="Folder for the selected, ordinary quantized checkpoint."),
) -> None:
    """Pick each layer group's width from a multi-width checkpoint (no float model, no recalibration)."""
    from effigy.api import _model_from_config, save, weight_nbytes
    from effigy.multiwidth import load_multiwidth, multiwidth_info
    from effigy.recipes.mixed_precision import config_from_group_bits, read_group_bits

    base, _ = multiwidth_info(checkpoint)
    chosen = config_from_group_bits(_model_from_config(checkpoint), base, read_group_bits(allocation))
    model = load_multiwidth(checkpoint, chosen.layer_bits)
    save(model, out)
    console.print(f"selected widths from {checkpoint} by {allocation}: {weight_nbytes(model):,} weight bytes; "
                  f"saved to {out}")


@evaluate_app.command("t2i")
def evaluate_t2i(
    model: str = typer.Option("t2i-shapes", help="Text-to-image model (the shipped shapes model)."),
    prompts: int = typer.Option(60, min=3, help="Number of prompts (cycling single / relation / count)."),
    steps: int = typer.Option(20, min=1, max=50),
    guidance: float = typer.Option(4.0, min=0.0),
    split: str = typer.Option("heldout", help="Prompt split: heldout (unseen colour-shape pairs) or train."),
    seed: int = typer.Option(0),
    grid: bool = typer.Option(False, "--grid", help="Also write a PNG of prompts and images."),
    out: Path = typer.Option(Path("benchmarks/results")),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per-prompt adherence (attribute checker) and CLIP-score stand-in, plus FID on checker features."""
    from effigy.evaluate.t2i import T2ISuite, run_t2i_eval
    from effigy.evaluate.t2i_report import write_t2i_report

    if model != "t2i-shapes":
        raise EffigyError(f"model {model!r} is not supported by evaluate t2i yet: use t2i-shapes.")
    suite = T2ISuite.load()
    with rich_progress(not as_json) as progress:
        result = run_t2i_eval(suite, prompts, steps, guidance, seed, split, progress)
    settings = {"model": model, "prompts": prompts, "steps": steps, "guidance": guidance, "split": split, "seed": seed}
    paths = write_t2i_report(result, settings, out, _command_line(), grid)
    if as_json:
        typer.echo(json.dumps({"summary": result["summary"], "rows": result["rows"]}, indent=2))
    else:
        _print_rows([{"metric": k, "value": v} for k, v in result["summary"].items()],
                    [("metric", "metric"), ("value", "value")], f"{model}, {split} prompts (seed {seed})")
        for kind, path in paths.items():
            console.print(f"wrote {kind}: {path}")


@kv_app.command("calibrate")
def kv_calibrate(
    budget_mb: float = typer.Option(..., help="Main KV-cache memory for all layers at the target length (MiB)."),
    target_length: int = typer.Option(2048, min=16, help="Sequence length the budget is planned for."),
    out: Path = typer.Option(Path("kv_allocation.json")),
    sequences: int = typer.Option(4, min=1, max=6, help="Calibration sequences (FP answers to calibration prompts)."),
    length: int = typer.Option(256, min=16, help="Tokens per calibration sequence."),
    interpolate: bool = typer.Option(True, help="Stretch calibration positions to the target length."),
    group_size: int = typer.Option(32),
) -> None:
    """Per-layer KV sensitivity (gradient-weighted) and the block-wise width allocation for a budget."""
    from effigy.evaluate.kv_bench import calibration_text
    from effigy.kvcache.calibrate import allocate_kv_bits, kv_sensitivity
    from effigy.kvcache.progressive import kv_geometry
    from effigy.models.llm import load_smollm2

    model, tokenizer = load_smollm2()
    layers, kv_heads, head_dim = kv_geometry(model.config)
    data = calibration_text(model, tokenizer, sequences, length)
    stretch = max(1.0, target_length / length) if interpolate else 1.0
    with rich_progress() as progress:
        table = kv_sensitivity(model, data, stretch=stretch, group_size=group_size,
                               progress=progress("sensitivity", sequences))
    widths = allocate_kv_bits(table, budget_mb, target_length, kv_heads, head_dim, group_size)
    out.write_text(json.dumps({"budget_mb": budget_mb, "target_length": target_length, "group_size": group_size,
                               "allocation": widths, "table": table.to_dict(), "command": _command_line()}, indent=1))
    console.print(f"widths per layer: {widths}; wrote {out}")


@kv_app.command("generate")
def kv_generate(
    prompt: str = typer.Option(..., help="User message for SmolLM2-135M-Instruct."),
    budget_mb: float = typer.Option(4.0, help="Main KV-cache memory for all layers (MiB)."),
    allocation: Optional[Path] = typer.Option(None, help="kv_allocation.json from `effigy kvquant calibrate`."),
    max_new_tokens: int = typer.Option(256, min=1),
    window: int = typer.Option(128, min=0),
) -> None:
    """Greedy generation with the progressive mixed-precision cache; prints text, bytes and widths."""
    from effigy.evaluate.kv_bench import chat_ids, greedy
    from effigy.kvcache.progressive import PMKVQCache
    from effigy.models.llm import load_smollm2

    kwargs = {}
    if allocation is not None:
        plan = _read_allocation(allocation)
        kwargs = dict(allocation=plan["allocation"], target_length=plan["target_length"],
                      group_size=plan["group_size"])
    model, tokenizer = load_smollm2()
    cache = PMKVQCache(model, budget_mb, window=window, **kwargs)
    new, seconds = greedy(model, chat_ids(tokenizer, prompt), max_new_tokens, cache)
    typer.echo(tokenizer.decode(new[0], skip_special_tokens=True))
    console.print(f"{new.shape[1]} tokens in {seconds:.1f} s; KV bytes held {cache.nbytes:,}; widths {cache.widths()}")


def _read_allocation(path: Path) -> dict:
    try:
        plan = json.loads(path.read_text())
        return {k: plan[k] for k in ("allocation", "target_length", "group_size")}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise EffigyError(f"{path} is not an allocation from `effigy kvquant calibrate` ({error!r}).") from None


@kv_app.command("bench")
def kv_bench(
    trace_tokens: int = typer.Option(2048, min=32, help="Length of each FP chain-of-thought trace."),
    prompts: int = typer.Option(2, min=1, max=4),
    average_bits: str = typer.Option("4,6", help="Budgets as average stored bits per KV element (scales, fp16 "
                                     "window and sink included)."),
    agreement_tokens: int = typer.Option(128, min=8),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("benchmarks/results")),
) -> None:
    """PM-KVQ vs FP16, RTN, KIVI-style and its ablations at equal KV memory on SmolLM2-135M."""
    from effigy.evaluate.kv_bench import KVBenchSettings, run_kv_bench
    from effigy.evaluate.report import markdown_table
    from effigy.models.llm import load_smollm2

    settings = KVBenchSettings(trace_tokens=trace_tokens, prompts=prompts, seed=seed,
                               average_bits=_parse_floats(average_bits, "--average-bits"),
                               agreement_tokens=agreement_tokens)
    model, tokenizer = load_smollm2()
    with rich_progress() as progress:
        result = run_kv_bench(model, tokenizer, settings, progress)
    result["command"] = _command_line()
    columns = [("method", "method"), ("budget_average_bits", "budget (avg bits)"), ("kv_bytes_held", "KV bytes held"),
               ("kv_bytes_counted", "KV bytes counted"),
               ("kl", "teacher-forced KL"), ("perplexity", "perplexity"), ("agreement_tokens", "tokens before divergence"),
               ("retrieval", "retrieval"), ("tokens_per_s_ratio_vs_fp", "tokens/s vs FP cache")]
    markdown = (f"# PM-KVQ on {result['model']}\n\nCommand: `{result['command']}` (seed {seed})  \n"
                f"{prompts} chain-of-thought prompts, FP greedy traces of {trace_tokens} tokens (length "
                f"{result['target_length']} with the prompt); KL(FP || method) and perplexity teacher-forced on "
                f"those traces; KV bytes held: distinct tensor storages reachable from the cache after the trace (effigy.memory.held_bytes), beside the bytes the cache counts; agreement: greedy tokens equal to the FP trace before the first difference (of "
                f"{agreement_tokens}); retrieval: passcode problems the FP model solves "
                f"({result['retrieval_solved_by_fp']}). Calibration: {result['calibration']}. Allocations (bits "
                "per layer): see the JSON.\n\n"
                + markdown_table(result["rows"], columns))
    _write_and_show(result, markdown, columns, out / "kvquant_smollm2", "PM-KVQ at equal KV memory", False)


@zoo_app.command("list")
def zoo_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Shipped models, their weight files and sha256."""
    from effigy.models.zoo import ZOO, read_manifest

    manifest = read_manifest()
    rows = [{"name": n, "description": e.description, "sha256": manifest.get(n, {}).get("sha256", "not trained")[:16]}
            for n, e in ZOO.items()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_rows(rows, [("name", "name"), ("sha256", "sha256 (prefix)"), ("description", "description")], "effigy zoo")


@zoo_app.command("train")
def zoo_train(
    name: str = typer.Argument(..., help="Zoo model to train, e.g. dit-digits."),
    out: Optional[Path] = typer.Option(None, help="Weights folder (default: the package's shipped weights)."),
    steps: Optional[int] = typer.Option(None, help="Override the number of training steps (for quick checks)."),
) -> None:
    """Re-run the seeded training command that produced a shipped model."""
    from effigy.models.zoo import WEIGHTS_DIR, train_zoo_model

    overrides = {} if steps is None else {"train_steps": steps}
    from effigy.models.zoo import zoo_entry

    total = steps or zoo_entry(name).config_cls().train_steps
    with rich_progress() as progress:
        advance = progress(f"training {name}", total)
        path = train_zoo_model(name, out or WEIGHTS_DIR, progress=lambda _s, _l: advance(), **overrides)
    console.print(f"wrote {path}")


def main() -> None:
    try:
        app()
    except EffigyError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
