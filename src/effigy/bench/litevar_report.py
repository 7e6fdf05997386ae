"""Markdown, JSON and pictures for ``effigy bench litevar``."""
from __future__ import annotations

from pathlib import Path

import torch

from effigy.attention.multiscale import LiteVARPlan
from effigy.bench.contract import Bench, in_folder, rows_table
from effigy.bench.litevar import LiteVARBenchSettings, run_litevar_bench
from effigy.evaluate.pictures import labelled_grid
from effigy.evaluate.report import machine_line, markdown_table, write_results

COLUMNS = [("variant", "variant"), ("attention_kept_core_fraction", "attn pairs kept (QK,AV)"),
           ("attention_core_flops_fraction", "attn FLOPs computed (QK,AV)"),
           ("attention_flops_fraction", "attn FLOPs (module)"), ("latency_ratio_vs_fp", "latency vs FP"),
           ("class_accuracy", "class acc."), ("fid_features", "FID"), ("psnr_vs_fp", "PSNR vs FP (dB)"),
           ("ssim_vs_fp", "SSIM vs FP"), ("held_bytes", "held bytes"), ("weight_bytes_ratio", "weight bytes / FP"),
           ("peak_rss_mib", "peak RSS (MiB)")]
DIT_COLUMNS = [("model", "model"), ("class_accuracy", "class acc."), ("fid_features", "FID"),
               ("latency_ms_per_image", "ms / image"), ("held_bytes", "held bytes"), ("parameters", "parameters")]


def interval_rows(result: dict) -> list[dict]:
    """Each variant's class accuracy (points) and FID change against FP, with 95% paired intervals."""
    rows = []
    for comparison in result["comparisons"]:
        d = comparison["differences"]
        acc, fid = d["class_accuracy"], d["fid_features"]
        rows.append({"variant": comparison["variant"],
                     "accuracy_change": f"{100 * acc['difference']:+.2f} [{100 * acc['low']:+.2f}, "
                                        f"{100 * acc['high']:+.2f}]",
                     "fid_change": f"{fid['difference']:+.3f} [{fid['low']:+.3f}, {fid['high']:+.3f}]",
                     "fid_not_worse_beyond_noise": fid["low"] <= 0})
    return rows


def plan_rows(result: dict) -> list[dict]:
    rows = []
    for coverage, data in result["plans"].items():
        plan = LiteVARPlan.from_dict(data)
        rows.append({"coverage": coverage, "kept_pairs": plan.kept_fraction(), "asc_threshold": plan.asc_threshold,
                     "asc_shared": plan.shared_fraction(),
                     "disagreement_by_scale": ", ".join(f"{sum(c) / len(c):.3f}" for c in zip(*plan.cfg_disagreement))})
    return rows


def render_markdown(result: dict, command: str) -> str:
    s = result["settings"]
    text = (f"# LiteVAR on `{result['model']}`\n\nCommand: `{command}`\n\n"
            f"{10 * s['samples_per_class']} images ({s['samples_per_class']} per class), CFG {s['guidance_scale']:g} "
            f"(scale-dependent), top-k {s['top_k'] or 'off'}, seed {s['seed']}; plans calibrated on "
            f"{10 * s['calibration_per_class']} other samples (seed {s['seed'] + 10_000}). FID on {result['fid_features']}. "
            "Attention FLOPs count what each variant's attention processors computed (QK,AV: the attention core; "
            "module: q/k/v/out projections too); MDWA runs as one masked attention call that computes every pair, so "
            "the pairs its plan keeps are a column of their own (benchmarks/results/checks/mdwa_kernels.md: no "
            "kernel that skips pairs is faster at this size on CPU). Quantized rows (`litevar-*`) hold packed weights (reference "
            "dequantizing kernel) and run attention with *simulated* (fake-quantized) per-token queries / keys and "
            f"8-bit probabilities. Latency: {s['latency_samples']} images, median of {s['latency_repeats']} "
            "interleaved runs. Peak RSS: a fresh process per model (FP and quantized rows). "
            f"{machine_line(result['machine'])}\n\n## All variants\n\n" + markdown_table(result["rows"], COLUMNS) + "\n\n"
            "## Against FP, paired 95% bootstrap intervals over the images\n\n"
            + markdown_table(interval_rows(result), [("variant", "variant"), ("accuracy_change", "class acc. change (points)"),
                                                     ("fid_change", "FID change"),
                                                     ("fid_not_worse_beyond_noise", "FID not worse beyond noise")])
            + "\n\n## Plans\n\n" + markdown_table(plan_rows(result), [
                ("coverage", "MDWA coverage"), ("kept_pairs", "kept (query, key) pairs"),
                ("asc_threshold", "ASC threshold"), ("asc_shared", "ASC shared (layer, scale)"),
                ("disagreement_by_scale", "CFG disagreement per scale (mean over layers)")]))
    tok = result["tokenizer"]
    text += (f"\n\n## The tokenizer (`var-digits-vqvae`) on the held-out digits\n\nReconstruction PSNR "
             f"{tok['heldout_psnr_db']:.2f} dB; codes used per scale (of {tok['codebook_size']}): "
             + ", ".join(f"{s}x{s}: {n}" for s, n in zip(tok["scales"], tok["codes_used"])) + ".")
    if result.get("dit_vs_var"):
        text += ("\n\n## The DiT and the VAR on the same digits, labels and judges\n\n"
                 + markdown_table(result["dit_vs_var"], DIT_COLUMNS))
    return text + "\n"


def mask_heat_map(plan: LiteVARPlan, path: Path, cell: int = 3) -> Path:
    """The kept share of each (query, key) pair over layers and heads, as a [tokens x tokens] picture:
    black = always kept, white = never (above the block-causal diagonal: not attended by design)."""
    from PIL import Image, ImageDraw

    tokens = sum(s * s for s in plan.scales)
    kept = torch.zeros(tokens, tokens)
    starts = [sum(s * s for s in plan.scales[:k]) for k in range(len(plan.scales))]
    heads = 0
    for layer in range(len(plan.windows)):
        for head in range(len(plan.windows[layer])):
            heads += 1
            for q, side in enumerate(plan.scales):
                keys = plan.key_indices(layer, head, q)
                for local in range(side * side):
                    row = starts[q] + local
                    if keys is None:
                        kept[row, : starts[q] + side * side] += 1
                    else:
                        kept[row, keys[local]] += 1
    pixels = (255 * (1 - kept / heads)).round().byte().numpy()
    image = Image.fromarray(pixels).resize((tokens * cell, tokens * cell), Image.NEAREST).convert("RGB")
    canvas = Image.new("RGB", (tokens * cell + 10, tokens * cell + 40), "white")
    canvas.paste(image, (5, 35))
    draw = ImageDraw.Draw(canvas)
    draw.text((5, 2), f"MDWA coverage {plan.coverage:g}: kept share of each (query, key) pair", fill="black")
    draw.text((5, 16), f"scales {plan.scales}; rows = queries, columns = keys; black = kept", fill="black")
    for start in starts[1:]:
        draw.line((5, 35 + start * cell, 5 + tokens * cell, 35 + start * cell), fill=(200, 60, 60))
        draw.line((5 + start * cell, 35, 5 + start * cell, 35 + tokens * cell), fill=(200, 60, 60))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def write_litevar_report(result: dict, directory: Path, command: str) -> dict[str, Path]:
    stem = f"litevar_{result['model'].replace('-', '_')}"
    result["command"] = command
    images, index = result.pop("images"), result.pop("grid_index")
    grid = labelled_grid({name: batch[index] for name, batch in images.items()}, directory / f"{stem}_grid.png")
    masks = {c: mask_heat_map(LiteVARPlan.from_dict(p), directory / f"{stem}_masks_c{c}.png")
             for c, p in result["plans"].items()}
    json_path, md_path = write_results(result, render_markdown(result, command), directory, stem)
    return {"json": json_path, "markdown": md_path, "grid": grid, **{f"masks c={c}": p for c, p in masks.items()}}


BENCH = Bench("litevar", LiteVARBenchSettings, run_litevar_bench, in_folder(write_litevar_report),
              rows_table(COLUMNS[:8], lambda result, s: f"var-digits: LiteVAR (seed {s.seed})"))
