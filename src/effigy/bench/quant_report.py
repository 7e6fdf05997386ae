"""Turn a quantization benchmark result into files: JSON, a Markdown table, and a sample grid."""
from __future__ import annotations

import json
from pathlib import Path

from effigy.bench.contract import Bench, at_stem, rows_table
from effigy.bench.quant import QuantBenchSettings, run_quant_bench
from effigy.evaluate.pictures import labelled_grid
from effigy.evaluate.report import machine_line, markdown_table, write_results
from effigy.evaluate.suites import LOWER_IS_BETTER

COLUMNS = [
    ("variant", "variant"),
    ("backend", "matmul"),
    ("class_accuracy", "class acc"),
    ("class_accuracy_change_points", "acc change (pts)"),
    ("adherence", "adherence"),
    ("adherence_change_points", "adherence change (pts)"),
    ("clip_score", "CLIP score"),
    ("fid_features", "FID (features)"),
    ("psnr_vs_fp", "PSNR vs FP (dB)"),
    ("ssim_vs_fp", "SSIM vs FP"),
    ("average_weight_bits", "avg weight bits"),
    ("weight_bytes", "model weight bytes"),
    ("held_bytes", "bytes held"),
    ("quantized_linear_bytes_ratio", "quantized linears / fp32"),
    ("peak_rss_mib", "peak RSS (MiB)"),
    ("latency_ms_per_image", "ms / image"),
    ("latency_ratio_vs_fp", "latency vs FP"),
    ("latency_ratio_vs_fp_compiled", "latency vs FP compiled"),
    ("first_call_s", "first call (s)"),
    ("output_error_vs_eager", "output vs eager"),
]

# what the CLI prints (the results files have every column)
KEY_COLUMNS = [("variant", "variant"), ("class_accuracy", "class acc"), ("adherence", "adherence"),
               ("latency_ratio_vs_fp", "latency vs FP"), ("psnr_vs_fp", "PSNR vs FP (dB)"),
               ("held_bytes", "bytes held"), ("peak_rss_mib", "peak RSS (MiB)")]

PEER_COLUMNS = [("variant", "variant"), ("relative_output_error", "relative output error vs FP"),
                ("latency_ratio_vs_fp", "latency vs FP")]


SENSITIVITY_METRICS = {
    "propagated": "self-attention, MLP, adaLN: squared error of the guided prediction (noise or v) on the replayed FP "
                  "trajectory, each call weighted by its measured gain to the final sample; cross-attention: the "
                  "same for its guidance direction, conditional minus unconditional",
    "samples": "self-attention, MLP, adaLN: 1 - SSIM of the samples vs FP; cross-attention: drop of prompt alignment",
    "denoiser": "self-attention, MLP, adaLN: relative error of the guided prediction (noise or v) on the replayed FP "
                "trajectory; cross-attention: relative error of its guidance direction, conditional minus "
                "unconditional",
}


METRIC_NAMES = {"class_accuracy": "class accuracy", "adherence": "adherence", "clip_score": "CLIP score",
                "fid_features": "FID (features)", "psnr_vs_fp": "PSNR vs FP (dB)", "ssim_vs_fp": "SSIM vs FP"}


def comparison_rows(comparisons: list[dict]) -> list[dict]:
    """One row per (pair, metric): the difference, its interval, and whether the variant is better,
    worse, or within noise of its baseline."""
    rows = []
    for pair in comparisons:
        for metric, d in pair["differences"].items():
            better = (d["difference"] < 0) == (metric in LOWER_IS_BETTER)
            verdict = ("better" if better else "worse") if d["significant"] else "within noise"
            rows.append({"pair": f"{pair['variant']} - {pair['baseline']}", "metric": METRIC_NAMES.get(metric, metric),
                         "difference": d["difference"], "interval": f"[{d['low']:.4g}, {d['high']:.4g}]",
                         "verdict": verdict})
    return rows


def render_comparisons(comparisons: list[dict]) -> str:
    first = comparisons[0]
    confidence = next(iter(first["differences"].values()))["confidence"]
    return (f"\n\n## Paired differences: more than noise?\n\nVariant minus baseline on the same {first['items']} "
            f"evaluation images (same prompts, same noise); {100 * confidence:.0f}% percentile bootstrap interval over "
            f"those images ({first['resamples']:,} resamples; FID recomputed on each). 'within noise': the interval "
            "contains zero.\n\n"
            + markdown_table(comparison_rows(comparisons), [("pair", "variant - baseline"), ("metric", "metric"),
                                                            ("difference", "difference"), ("interval", "interval"),
                                                            ("verdict", "verdict")]))


def _trust_region_text(allocation: dict) -> str:
    """How far the ILP could move from uniform W4: one fixed trust region, or the one the validation run picked."""
    moved = allocation["max_moved"]
    bound = "no trust region" if moved is None else f"trust region: sum(size x |bits - 4|) <= {moved} x all weights"
    if allocation.get("validation"):
        if moved == 0:
            return ", trust region 0: uniform W4 won the validation run below, so the MP row is uniform W4A8"
        return f", {bound} (picked on the validation run below)"
    return f", {bound}"


VALIDATION_COLUMNS = [("max_moved", "trust region"), ("moved_layers", "layers off 4 bits"),
                      ("class_accuracy", "class acc"), ("adherence", "adherence"), ("clip_score", "CLIP score"),
                      ("psnr_vs_fp", "PSNR vs FP (dB)"), ("ssim_vs_fp", "SSIM vs FP"), ("fid_features", "FID (features)"),
                      ("mean_rank", "mean rank")]


def render_validation(allocation: dict, settings: dict) -> str:
    """The allocation of each trust region on the validation run (seed + 1), uniform W4 (trust region 0) first."""
    rows = [{**row, "max_moved": "none" if row["max_moved"] is None else row["max_moved"]}
            for row in allocation["validation"]]
    columns = [c for c in VALIDATION_COLUMNS if c[0] in rows[0]]
    per_class = min(settings["validation_per_class"], settings["samples_per_class"])
    return (f"\n\n## Mixed precision: trust region picked on a validation run\n\nEach trust region's ILP allocation "
            f"sampled at seed {settings['seed'] + 1} ({per_class} per class, other noise than the evaluation); "
            f"kept: {_pick_rule_text(allocation)}.\n\n" + markdown_table(rows, columns))


def _pick_rule_text(allocation: dict) -> str:
    points = 100 * allocation["task_tolerance"]
    return (f"the best mean rank over the quality scores (1 = best on all) among those at most {points:g} point(s) "
            f"below uniform W4's task score and {allocation['psnr_tolerance']:g} dB below its PSNR vs FP (trust "
            "region 0, which may win itself, and wins ties)")


def render_markdown(result: dict, command: str) -> str:
    s, m = result["settings"], result["machine"]
    header = [
        f"# Quantization benchmark: {result['model']}",
        "",
        f"Command: `{command}`  ",
        f"Seed {s['seed']}, {_prompts_line(s)}, {s['steps']} DPM-Solver steps, CFG {s['guidance_scale']}. "
        f"FID on {result['fid_features']} "
        "against real images of the world (digits: all 1,797; shapes: renders of the prompts). "
        f"Latency: {s['latency_samples']} images, median of {s['latency_repeats']} interleaved runs. "
        "Peak RSS: a fresh process that loads, quantizes and samples those images (Python and torch included).  ",
        machine_line(m),
        "",
    ]
    allocation = result.get("allocation")
    if allocation is not None:
        counts: dict[int, int] = {}
        for bits in allocation["assignment"]["bits"].values():
            counts[bits] = counts.get(bits, 0) + 1
        unit = {"layer": "linear layers", "block": "layer groups (block x kind)"}[s["mp_granularity"]]
        spread = ", ".join(f"{n} at {b} bits" for b, n in sorted(counts.items()))
        metrics = SENSITIVITY_METRICS[s["sensitivity_metric"]]
        around = {"float": "one quantized at a time with the rest in FP",
                  "base": "one changed at a time from uniform W4A8"}[s["mp_around"]]
        region = _trust_region_text(allocation)
        header += [f"Mixed precision: metric-decoupled sensitivity of {len(allocation['table']['scores'])} {unit} "
                   f"({metrics}) at {s['mp_candidate_bits']} bits, {around}, {s['sensitivity_steps']}-step runs; "
                   f"ILP at {allocation['average_bits']} average weight bits{region} -> "
                   f"{spread}. Allocation: `*_allocation.json`.", ""]
    columns = [c for c in COLUMNS if any(c[0] in row for row in result["rows"])]
    text = "\n".join(header) + "\n" + markdown_table(result["rows"], columns)
    if allocation is not None and allocation.get("validation"):
        text += render_validation(allocation, s)
    if result.get("comparisons"):
        text += render_comparisons(result["comparisons"])
    text += compiled_sections_text(result)
    peer = result.get("peer")
    if peer is not None:
        text += "\n\n## W8A8 against peers (torchao, bf16, PyTorch's quantize_dynamic): one denoiser call\n\n"
        if peer["library"] is None:
            text += peer["note"] + "\n"
        else:
            text += (f"{peer['library']} `Int8DynamicActivationInt8WeightConfig` and PyTorch's `quantize_dynamic` "
                     "(int8, per-tensor dynamic activations) on the same layers, and the whole model in bf16; one call on "
                     f"{s['latency_samples']} noisy inputs at t=500, median of {s['latency_repeats']} interleaved runs.\n\n"
                     + markdown_table(peer["rows"], PEER_COLUMNS))
    return text


COMPILED_NOTE = ("Rows ending in 'compiled': the model through `effigy.compile` (this CPU's inductor settings, "
                 "docs/kernels.md), timed in a run of their own, interleaved with the eager FP model, so their "
                 "'latency vs FP' is against eager FP and 'latency vs FP compiled' against compiled FP; 'first call' "
                 "is the compile plus one latency run; 'output vs eager': relative distance of one denoiser call from "
                 "the same model run eagerly (kernel rounding). Other rows run eagerly: their timings are eager. "
                 "Compiled rows have no peak RSS here (the compiler's own memory would dominate at this size; the "
                 "compiled models' resident memory is in `effigy bench scale`).")


def compiled_sections_text(result: dict) -> str:
    """What the compiled rows are, and the crossover table, for a result that has them ("" otherwise)."""
    text = "\n\n" + COMPILED_NOTE if any(row.get("compiled") for row in result["rows"]) else ""
    return text + (render_crossover(result["crossover"]) if result.get("crossover") else "")


def render_crossover(section: dict) -> str:
    """Where compiled W8A8 keeps up with compiled FP: one denoiser call per batch, and the sentence."""
    from effigy.bench.compiled import FP, SUFFIX, crossover_sentence

    name = section["variant"] + SUFFIX
    columns = [("images", "images per call"), (f"{FP}{SUFFIX} ms", f"{FP}{SUFFIX} (ms)"), (f"{name} ms", f"{name} (ms)"),
               ("speedup_vs_fp_compiled", "speed-up vs FP compiled")]
    return (f"\n\n## From which batch is compiled W8A8 worth it?\n\nOne denoiser call at each batch, static shapes "
            f"(a graph per batch), median of {section['repeats']} interleaved calls after the compile.\n\n"
            + markdown_table(section["rows"], columns) + "\n\n" + crossover_sentence(section))


def sample_grid(result: dict, path: Path) -> Path:
    """The world's picked samples (digits: one per class) for each variant (rows)."""
    index = result["grid_index"]
    return labelled_grid({name: images[index] for name, images in result["images"].items()}, path)


def write_quant_report(result: dict, directory: Path, stem: str, command: str) -> dict[str, Path]:
    printable = {k: v for k, v in result.items() if k not in ("images", "grid_index")}
    printable["command"] = command
    markdown = render_markdown(result, command)
    json_path, md_path = write_results(printable, markdown, directory, stem)
    paths = {"json": json_path, "markdown": md_path}
    if result.get("allocation") is not None:
        paths["allocation"] = directory / f"{stem}_allocation.json"
        paths["allocation"].write_text(json.dumps(result["allocation"], indent=2))
    paths["grid"] = sample_grid(result, directory / f"{stem}_grid.png")
    return paths


def _prompts_line(s: dict) -> str:
    if s.get("prompts"):
        return f"the prompts of FlashEval subset `{s['prompts']}`"
    return f"{s['samples_per_class']} samples per class (text-to-image: 10 x that many held-out prompts)"


def _crossover_note(result: dict) -> str | None:
    from effigy.bench.compiled import crossover_sentence

    return crossover_sentence(result["crossover"]) if result.get("crossover") else None


BENCH = Bench("quant", QuantBenchSettings, run_quant_bench, at_stem(write_quant_report),
              rows_table(KEY_COLUMNS, lambda result, s: f"{result['model']}: FP vs quantized (seed {s.seed})"),
              note=_crossover_note)
