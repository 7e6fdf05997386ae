"""Markdown, JSON and the BEV picture for ``effigy bench ada3d``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from effigy.bench.ada3d import Ada3DBenchSettings, run_ada3d_bench
from effigy.bench.contract import Bench, in_folder
from effigy.evaluate.pictures import line_chart
from effigy.evaluate.report import machine_line, markdown_table, write_results
from effigy.metrics.bev import DISTANCE_THRESHOLDS, IOU_THRESHOLDS, bev_corners

COLUMNS = [("variant", "variant"), ("voxels_kept", "voxels kept"), ("bev_occupied", "BEV occupied"),
           ("density", "BEV density after each 2D stage"), ("macs_3d_ratio", "3D MACs vs dense"),
           ("macs_2d_ratio", "2D MACs vs dense"), ("macs_ratio", "backbone MACs vs dense"),
           ("speedup_3d", "3D speed-up"), ("speedup_2d", "2D speed-up"), ("speedup_total", "end-to-end speed-up"),
           ("ms_total", "ms / frame"), ("peak_rss_mib", "peak RSS (MiB)"), ("held_bytes", "held bytes")]
AP_COLUMNS = [("variant", "variant"), ("map_iou", "mAP (rotated IoU)"), ("car_iou", "Car AP@0.7"),
              ("pedestrian_iou", "Ped AP@0.5"), ("cyclist_iou", "Cyc AP@0.5"), ("map_distance", "mAP (centre distance)"),
              ("car_distance", "Car"), ("pedestrian_distance", "Ped"), ("cyclist_distance", "Cyc")]
CLASS_COLOURS = {"Car": (220, 60, 40), "Pedestrian": (40, 140, 220), "Cyclist": (40, 170, 60)}


def table_rows(result: dict) -> list[dict]:
    rows = []
    for row in result["rows"]:
        ap = row["ap"]
        rows.append({**row, "density": ", ".join(f"{d:.3f}" for d in row["density_after_stage"]),
                     **{f"{c.lower()}_{m}": ap[m][c] for c in IOU_THRESHOLDS for m in ("iou", "distance")}})
    return rows


SWEEP_COLUMNS = [("family", "filter"), ("keep_3d", "keep 3D"), ("keep_2d", "keep 2D"), ("voxels_kept", "voxels kept"),
                 ("first_density", "BEV density after 2D stage 1"), ("macs_ratio", "backbone MACs vs dense"),
                 ("ms_total", "ms / frame"), ("speedup_total", "end-to-end speed-up"), ("map_iou", "mAP (rotated IoU)")]
CHOICE_COLUMNS = [("variant", "keep shares"), ("voxels_kept", "voxels kept"),
                  ("first_density", "BEV density after 2D stage 1"), ("within_budget", "within budget"),
                  ("map_iou", "mAP (rotated IoU), validation")]
COSTS = {"macs_ratio": "backbone MACs vs dense", "ms_total": "measured ms / frame"}


def _with_first_density(rows: list[dict]) -> list[dict]:
    return [{**r, "first_density": (r["density_after_stage"] or [1.0])[0]} for r in rows]


def choice_section(result: dict) -> str:
    choice, s = result["choice"], result["settings"]
    keep = f"3D {choice['keep'][0]:g} / 2D {choice['keep'][1]:g}"
    if choice["chosen_on"] == "given":
        return f"## Keep shares\n\nThe main keep shares, {keep}, were given on the command line.\n"
    budget = (f"at most {s['max_voxels']:g} of the voxels and BEV density after the first 2D stage at most "
              f"{s['max_first_density']:g}")
    verdict = "within" if choice["within_budget"] else "no sweep pair is within the budget; the most accurate of all,"
    return (f"## Keep shares chosen on validation\n\nOn {choice['val_frames']} validation frames (seeds the test "
            f"frames never use), the most accurate sweep pair with {budget}: **{keep}** ({verdict} budget).\n\n"
            + markdown_table(_with_first_density(choice["rows"]), CHOICE_COLUMNS) + "\n")


def sweep_section(result: dict) -> str:
    lines = ["## Speed-accuracy sweep (test frames)", "",
             f"![speed-accuracy curve]({_stem(result)}_curve.png)", "",
             "Each filter's curve is its frontier: the sweep pairs more accurate than every cheaper pair of the same "
             "filter. Does Ada3D lie above the baselines? At every cost the sweep sampled (any filter's point), each "
             "filter's best mAP at no more than that cost, compared where both have a point that cheap:", ""]
    for cost, verdicts in result["dominance"].items():
        for family, v in verdicts.items():
            lines.append(f"- {COSTS[cost]}: Ada3D higher than {family} filtering at {v['ada3d_higher']} of "
                         f"{v['compared']} costs compared ({v['baseline_only']} of the {v['costs']} sampled costs are "
                         f"below every Ada3D pair, where only {family} filtering has a point)")
    return "\n".join(lines) + "\n\n" + markdown_table(_with_first_density(result["sweep"]), SWEEP_COLUMNS) + "\n"


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points more accurate than every cheaper one (cost, mAP), cheapest first."""
    best, out = -1.0, []
    for cost, value in sorted(points):
        if value > best:
            out.append((cost, value))
            best = value
    return out


def curve_picture(result: dict, path: Path) -> Path:
    """mAP against backbone MACs and against measured latency: each filter's frontier, dots at its points."""
    panels = {}
    dense = result["rows"][0]
    for cost, title in (("macs_ratio", "vs backbone MACs (share of dense)"), ("ms_total", "vs ms / frame")):
        panels[title] = {f"{family} filtering": [(c, m, m, m) for c, m in frontier(
            [(r[cost], r["map_iou"]) for r in result["sweep"] if r["family"] == family])]
            for family in ("ada3d", "random", "distance")}
        panels[title]["dense detector"] = [(dense[cost], dense["map_iou"], dense["map_iou"], dense["map_iou"])]
    return line_chart(panels, path, "cost", "mAP (rotated IoU)", markers=True, x_ticks=5)


def render_markdown(result: dict, command: str) -> str:
    s = result["settings"]
    rows = table_rows(result)
    return (f"# Ada3D on `{result['model']}`\n\nCommand: `{command}`\n\n"
            f"{s['test_frames']} simulated test frames (seeds from 2,000,000); ground truth with fewer than 5 lidar "
            "points ignored. Keep shares are of each frame's occupied BEV cells (3D: the cells whose voxels enter the "
            "3D backbone; 2D: the cells kept at the 2D input, and again after each 2D stage unless the model filters "
            "its 2D input only). Multiply-adds counted from the rulebooks of what was computed (sparse layers) or the "
            f"whole grid (dense layers). Speed-ups: the median over {s['latency_repeats']} rounds of the ratio to the "
            f"dense detector timed beside each row, frame by frame ({s['latency_frames']} frames, one per call). "
            "Peak RSS: a fresh process per variant (both models loaded). AP: "
            f"rotated BEV IoU at {', '.join(f'{c} {t}' for c, t in IOU_THRESHOLDS.items())}; centre distance averaged "
            f"over {', '.join(f'{d:g}' for d in DISTANCE_THRESHOLDS)} m. {machine_line(result['machine'])}\n\n"
            f"![one test scene]({_stem(result)}_scene.png)\n\n"
            + choice_section(result) + "\n## Cost\n\n" + markdown_table(rows, COLUMNS) + "\n\n## BEV average precision\n\n"
            + markdown_table(rows, AP_COLUMNS) + "\n\n" + sweep_section(result))


def scene_picture(scene: dict, path: Path, scale: int = 6) -> Path:
    """BEV of one frame: kept cells shaded by importance, points in grey, true boxes in white outline,
    detections (score >= 0.3) in their class colour."""
    from PIL import Image, ImageDraw

    config = scene["config"]
    scores = np.array(scene["scores"])
    h, w = scores.shape
    cell = config["voxel_size"][0] * 2 ** (len(config["widths_3d"]) - 1)
    x0, y0 = config["point_range"][0], config["point_range"][1]
    shade = (255 * (1 - np.clip(scores, 0, 1))).astype(np.uint8)
    image = Image.fromarray(np.stack([shade] * 3, -1)[::-1].repeat(scale, 0).repeat(scale, 1)).convert("RGB")
    draw = ImageDraw.Draw(image)

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return ((x - x0) / cell * scale, (h - (y - y0) / cell) * scale)

    for x, y in scene["points"][::3]:
        px, py = to_pixel(x, y)
        draw.point((px, py), fill=(120, 120, 120))
    for box in scene["truth"]:
        draw.polygon([to_pixel(*c) for c in bev_corners(np.array([box]))[0]], outline=(0, 0, 0))
    for cls, (boxes, scores_) in scene["detections"].items():
        for box, s in zip(boxes, scores_):
            if s >= 0.3:
                draw.polygon([to_pixel(*c) for c in bev_corners(np.array([box]))[0]], outline=CLASS_COLOURS[cls])
    image.save(path)
    return path


def _stem(result: dict) -> str:
    return f"ada3d_{result['model'].replace('-', '_')}"


def write_ada3d_report(result: dict, folder: Path, command: str) -> dict[str, Path]:
    """``<folder>/ada3d_<model>.{json,md}``, the scene picture and the speed-accuracy curve."""
    stem = _stem(result)
    scene = result.pop("scene")
    json_path, md_path = write_results(result, render_markdown(result, command), folder, stem)
    return {"json": json_path, "markdown": md_path, "picture": scene_picture(scene, folder / f"{stem}_scene.png"),
            "curve": curve_picture(result, folder / f"{stem}_curve.png")}


BENCH = Bench("ada3d", Ada3DBenchSettings, run_ada3d_bench, in_folder(write_ada3d_report),
              lambda result, s: (result, COLUMNS[:10], f"{s.detector}: Ada3D (seed {s.seed})"),
              model=lambda s: s.detector)
