"""Markdown, JSON and pictures for ``effigy bench fastattn``."""
from __future__ import annotations

from pathlib import Path

from effigy.attention.plan import TECHNIQUES
from effigy.bench.contract import Bench, at_stem, rows_table
from effigy.bench.fastattn import FastAttnBenchSettings, run_fastattn_bench
from effigy.evaluate.pictures import category_maps, labelled_grid
from effigy.evaluate.report import markdown_table, write_results

COLUMNS = [("variant", "variant"), ("attention_flops_fraction", "attn FLOPs (module)"),
           ("attention_core_flops_fraction", "attn FLOPs (QK,AV)"), ("latency_ratio_vs_fp", "latency vs FP"),
           ("psnr_vs_fp", "PSNR vs FP (dB)"), ("ssim_vs_fp", "SSIM vs FP")]
TASK_COLUMNS = [("class_accuracy", "class acc."), ("adherence", "adherence"), ("fid_features", "FID (features)"),
                ("fid_increase_vs_fp", "FID increase")]
PSNR_BANDS = ((40.0, None), (35.0, 40.0), (30.0, 35.0), (25.0, 30.0), (None, 25.0))
TECHNIQUE_COLOURS = {"share_step": (38, 70, 83), "window_residual_cfg": (42, 157, 143),
                     "window_residual": (138, 201, 38), "full_cfg": (244, 162, 97), "full": (231, 111, 81)}


def _band_label(low, high) -> str:
    if low is None:
        return f"< {high:g} dB"
    return f">= {low:g} dB" if high is None else f"{low:g}-{high:g} dB"


def equal_quality_rows(rows: list[dict]) -> list[dict]:
    """Per PSNR band, each method's cheapest setting (fewest attention FLOPs) inside the band."""
    table = []
    for low, high in PSNR_BANDS:
        inside = [r for r in rows if r["psnr_vs_fp"] is not None
                  and (low is None or r["psnr_vs_fp"] >= low) and (high is None or r["psnr_vs_fp"] < high)]
        for family in dict.fromkeys(r["family"] for r in inside):
            best = min((r for r in inside if r["family"] == family), key=lambda r: r["attention_flops_fraction"])
            table.append({"band": _band_label(low, high), **best})
    return table


def render_markdown(result: dict, command: str) -> str:
    s, rows = result["settings"], result["rows"]
    task = [c for c in TASK_COLUMNS if any(c[0] in r for r in rows)]
    text = (f"# DiTFastAttn vs diffusers cache hooks on `{result['model']}`\n\n"
            f"Command: `{command}`\n\n"
            f"{s['steps']} DPM-Solver steps, CFG {s['guidance_scale']} (conditional and unconditional in one batch), "
            f"seed {s['seed']}" + (f", prompts of FlashEval subset `{s['prompts']}`" if s.get("prompts") else "") +
            f"; window = {s['window_fraction']:g} of the tokens; search error `{s['metric']}` on the "
            f"transformer output, calibrated on other seeds than the evaluation. FID on {result['fid_features']}. "
            f"Attention FLOPs count what each variant's self-attention processors really computed (module: q/k/v/out "
            f"projections + QK^T + AV; core: QK^T + AV only). FirstBlockCache and TaylorSeer also skip MLPs, so their "
            f"latency can fall further than their attention FLOPs. Latency: {s['latency_samples']} images, median of "
            f"{s['latency_repeats']} interleaved runs on {result['machine']['cpu']}."
            + (f" The `{s['compose_recipe']} + ditfastattn` row quantizes first and searches its plan on the "
               "quantized model; its PSNR against FP holds both errors." if s.get("compose_recipe") else "")
            + "\n\n"
            "## All variants\n\n" + markdown_table(rows, COLUMNS + task) + "\n\n"
            "## Side by side at equal quality (cheapest setting of each method per PSNR band)\n\n"
            + markdown_table(equal_quality_rows(rows), [("band", "PSNR band")] + COLUMNS + task) + "\n\n"
            "## DiTFastAttn plans: share of (step, block) slots per technique\n\n")
    plan_rows = []
    for threshold, plan in result["plans"].items():
        cells = sum(len(r) for r in plan["techniques"])
        counts = {t: sum(row.count(t) for row in plan["techniques"]) / cells for t in TECHNIQUES}
        plan_rows.append({"threshold": float(threshold), **counts})
    return text + markdown_table(plan_rows, [("threshold", "threshold")] + [(t, t) for t in TECHNIQUES])


def picked_thresholds(result: dict) -> list[str]:
    """Three plans for the pictures: the lowest, middle and highest threshold."""
    keys = list(result["plans"])
    return list(dict.fromkeys([keys[0], keys[len(keys) // 2], keys[-1]]))


def write_fastattn_report(result: dict, directory: Path, stem: str, command: str) -> dict[str, Path]:
    printable = {k: v for k, v in result.items() if k not in ("images", "grid_columns")}
    printable["command"] = command
    json_path, md_path = write_results(printable, render_markdown(result, command), directory, stem)
    picked = picked_thresholds(result)
    columns = result["grid_columns"]
    grid_rows = {"fp": result["images"]["fp"][columns]}
    for key in picked:
        row = next(r for r in result["rows"] if r["family"] == "ditfastattn" and r["setting"] == float(key))
        grid_rows[f"t={key} ({row['attention_flops_fraction']:.0%} FLOPs)"] = result["images"][row["variant"]][columns]
    grid = labelled_grid(grid_rows, directory / f"{stem}_grid.png")
    maps = category_maps({f"t={key}": result["plans"][key]["techniques"] for key in picked}, TECHNIQUE_COLOURS,
                         directory / f"{stem}_plans.png", "rows: denoising steps (first at top); columns: blocks")
    return {"json": json_path, "markdown": md_path, "grid": grid, "plans": maps}


BENCH = Bench("fastattn", FastAttnBenchSettings, run_fastattn_bench, at_stem(write_fastattn_report),
              rows_table(COLUMNS, lambda result, s: f"{s.model}: DiTFastAttn and diffusers hooks (seed {s.seed})"))
