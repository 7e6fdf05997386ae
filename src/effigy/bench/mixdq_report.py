"""MixDQ's bench result as files: JSON, a Markdown page (rows, allocations, paired differences) and a grid
picture with the prompt above each column."""
from __future__ import annotations

import json
from pathlib import Path

from effigy.bench.contract import Bench, at_stem, rows_table
from effigy.bench.mixdq import MixDQBenchSettings, run_mixdq_bench
from effigy.bench.quant_report import _crossover_note, compiled_sections_text, render_comparisons
from effigy.evaluate.pictures import labelled_grid
from effigy.evaluate.report import machine_line, markdown_table, write_results

COLUMNS = [
    ("variant", "variant"), ("backend", "matmul"), ("adherence", "adherence"),
    ("adherence_change_points", "adherence change (pts)"), ("adherence_single", "single"),
    ("adherence_relation", "relation"), ("adherence_count", "count"), ("clip_score", "CLIP score"),
    ("fid_features", "FID (features)"), ("psnr_vs_fp", "PSNR vs FP (dB)"), ("ssim_vs_fp", "SSIM vs FP"),
    ("average_weight_bits", "avg weight bits"), ("held_bytes", "bytes held"),
    ("quantized_linear_bytes_ratio_fp16", "quantized linears / fp16"), ("peak_rss_mib", "peak RSS (MiB)"),
    ("latency_ratio_vs_fp_1_steps", "latency vs FP, 1 step"), ("latency_ratio_vs_fp_4_steps", "latency vs FP, 4 steps"),
    ("latency_ratio_vs_fp_compiled_4_steps", "vs FP compiled, 4 steps"), ("first_call_s", "first call (s)"),
    ("output_error_vs_eager", "output vs eager"),
]
KEY_COLUMNS = [("variant", "variant"), ("adherence", "adherence"), ("latency_ratio_vs_fp_4_steps", "latency vs FP, 4 steps"),
               ("ssim_vs_fp", "SSIM vs FP"), ("fid_features", "FID (features)"), ("held_bytes", "bytes held")]


def allocation_summary(name: str, record: dict) -> dict:
    """One line of the allocations table: target, achieved bits, widths per part, activations kept in FP."""
    bits = record["assignment"]["bits"]
    per_part = []
    for part, layers in record["parts"].items():
        counts: dict[int, int] = {}
        for layer in layers:
            counts[bits[layer]] = counts.get(bits[layer], 0) + 1
        per_part.append(f"{part}: " + ", ".join(f"{n}x{b}" for b, n in sorted(counts.items())))
    activations = record.get("activations") or {}
    chosen = record["sweep"][record["chosen"]]
    return {"recipe": name, "target": record["target_weight_bits"], "achieved": record["achieved_average_bits"],
            "sweep": f"{len(record['sweep'])} allocations; picked average {chosen['average']}, ratio {chosen['ratio']}",
            "widths": "; ".join(per_part), "fp_activations": ", ".join(activations.get("kept_in_float", [])) or "-"}


def render_markdown(result: dict, command: str) -> str:
    s = result["settings"]
    rows = result["rows"]
    lines = [
        f"# MixDQ benchmark: {result['model']}", "",
        f"Command: `{command}`  ",
        f"Seed {s['seed']}, {10 * s['samples_per_class']} held-out prompts (single / relation / count), {s['steps']} "
        f"LCM steps (guidance distilled into the student). FID on {result['fid_features']} against renders of the "
        f"prompts. Latency: {s['latency_samples']} images at {' and '.join(map(str, s['latency_steps']))} step(s), "
        f"median of {s['latency_repeats']} interleaved runs. Peak RSS: a fresh process per variant.  ",
        machine_line(result["machine"]), "",
        "Chance level of adherence (FP images scored against the next prompt of their kind): "
        + ", ".join(f"{k.split(' ')[0].removeprefix('adherence_')} {v:.3f}" for k, v in result["chance"].items()
                    if "shuffled" in k) + ". Bytes held: every tensor storage the model reaches (unquantized "
        "embedders and projections in fp32 included); quantized linears / fp16: the quantized layers' held bytes "
        "(packed weights, scales, any first-token fp16 path) over the same layers in fp16.", "",
    ]
    columns = [c for c in COLUMNS if any(c[0] in row for row in rows)]
    text = "\n".join(lines) + "\n" + markdown_table(rows, columns)
    summaries = [allocation_summary(n, r) for n, r in result["allocations"].items() if "sweep" in r]
    if summaries:
        text += ("\n\n## MixDQ allocations\n\nWeights: one program per part (content: attn2 + ff, SSIM; quality: "
                 "attn1, SQNR), each part's mean within +/-0.02 bits of its target, swept over the overall average "
                 "and the content / quality ratio; picked by image MSE against FP on the validation run (seed + 1). "
                 "Activations given the weights; the most sensitive 1% of each part's activation layers in FP. "
                 "Tables and sweeps: `*_allocation.json`.\n\n"
                 + markdown_table(summaries, [("recipe", "recipe"), ("target", "target bits"),
                                              ("achieved", "achieved bits"), ("sweep", "sweep"),
                                              ("widths", "layers x width per part"),
                                              ("fp_activations", "activations in FP")]))
    if result.get("comparisons"):
        text += render_comparisons(result["comparisons"])
    text += compiled_sections_text(result)
    peer = result.get("peer") or {}
    if peer.get("library") is None and peer.get("note"):
        text += f"\n\nPeer: {peer['note']}\n"
    return text


def write_mixdq_report(result: dict, directory: Path, stem: str, command: str) -> dict[str, Path]:
    printable = {k: v for k, v in result.items() if k not in ("images", "grid_index", "allocations")}
    printable["command"] = command
    json_path, md_path = write_results(printable, render_markdown(result, command), directory, stem)
    paths = {"json": json_path, "markdown": md_path, "allocation": directory / f"{stem}_allocation.json"}
    paths["allocation"].write_text(json.dumps(result["allocations"], indent=2) + "\n")
    index = result["grid_index"]
    paths["grid"] = labelled_grid({n: images[index] for n, images in result["images"].items()},
                                  directory / f"{stem}_grid.png", column_labels=result.get("grid_labels"))
    return paths


BENCH = Bench("mixdq", MixDQBenchSettings, run_mixdq_bench, at_stem(write_mixdq_report),
              rows_table(KEY_COLUMNS, lambda result, s: f"{s.model}: MixDQ (seed {s.seed})"), note=_crossover_note)
