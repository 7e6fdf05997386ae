"""Markdown, JSON and the BEV picture for ``effigy bench ada3d``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from effigy.bench.ada3d import Ada3DBenchSettings, run_ada3d_bench
from effigy.bench.contract import Bench, in_folder
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


def render_markdown(result: dict, command: str) -> str:
    s = result["settings"]
    rows = table_rows(result)
    return (f"# Ada3D on `{result['model']}`\n\nCommand: `{command}`\n\n"
            f"{s['test_frames']} simulated test frames (seeds from 2,000,000); ground truth with fewer than 5 lidar "
            "points ignored. Keep shares are of each frame's occupied BEV cells (3D: the cells whose voxels enter the "
            "3D backbone; 2D: the cells kept at the 2D input and again after each 2D stage). Multiply-adds counted "
            "from the rulebooks of what was computed (sparse layers) or the whole grid (dense layers). Speed-ups: "
            f"median of {s['latency_repeats']} interleaved rounds over {s['latency_frames']} frames, one frame per "
            "call, against the dense detector. Peak RSS: a fresh process per variant (both models loaded). AP: "
            f"rotated BEV IoU at {', '.join(f'{c} {t}' for c, t in IOU_THRESHOLDS.items())}; centre distance averaged "
            f"over {', '.join(f'{d:g}' for d in DISTANCE_THRESHOLDS)} m. {machine_line(result['machine'])}\n\n"
            f"![one test scene]({_stem(result)}_scene.png)\n\n## Cost\n\n"
            + markdown_table(rows, COLUMNS) + "\n\n## BEV average precision\n\n" + markdown_table(rows, AP_COLUMNS) + "\n")


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
    """``<folder>/ada3d_<model>.{json,md}`` and the scene picture."""
    stem = _stem(result)
    scene = result.pop("scene")
    json_path, md_path = write_results(result, render_markdown(result, command), folder, stem)
    return {"json": json_path, "markdown": md_path, "picture": scene_picture(scene, folder / f"{stem}_scene.png")}


BENCH = Bench("ada3d", Ada3DBenchSettings, run_ada3d_bench, in_folder(write_ada3d_report),
              lambda result, s: (result, COLUMNS[:10], f"{s.detector}: Ada3D (seed {s.seed})"),
              model=lambda s: s.detector)
