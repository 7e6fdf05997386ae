"""Where does Ada3D's accuracy go on the SP-BN detector? (issue 44)

On validation frames (never the bench's test frames), each filter step apart on the dense SP-BN detector
(`lidar-centerpoint-spbn`, not fine-tuned) and on the shipped fine-tuned `lidar-ada3d-spbn`: 3D filtering
alone, the 2D input filter with and without re-filtering after each stage, and an oracle that scores cells by
the ground-truth boxes (the predictor's training target) instead of the predictor. mAP (rotated IoU), voxels
kept, BEV density after each 2D stage, and how many cells the objects' footprints cover against the 2D budget.

    python benchmarks/scripts/ada3d_diagnosis.py      # ~5 min on 2 cores

Writes benchmarks/results/checks/ada3d_diagnosis.{json,md}.
"""
import json
from dataclasses import replace
from pathlib import Path

import torch

from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table
from effigy.lidar.ada3d import Ada3D, Ada3DConfig, detect_and_tally
from effigy.lidar.training import importance_target
from effigy.models.lidar.train import evaluate_detections, simulate_split
from effigy.models.zoo import load_zoo_model

OUT = Path("benchmarks/results/checks")
FRAMES = 100
KEEP = (0.55, 0.3)


class Oracle:
    """Scores each BEV cell by the ground-truth target of the frames being detected (an upper bound on what a
    predictor trained on that target can tell)."""

    def __init__(self, frames: list, detector) -> None:
        self.by_address = {f.points.__array_interface__["data"][0]: f for f in frames}
        self.detector, self.batch = detector, []

    def __call__(self, voxels, config) -> torch.Tensor:
        frames = self.batch
        return importance_target([f.boxes for f in frames], [f.labels for f in frames], self.detector)[:, 0]

    def wrap(self, model: Ada3D):
        def forward(points):
            self.batch = [self.by_address[p.numpy().__array_interface__["data"][0]] for p in points]
            return model(points)
        return forward


def footprint_cells(frames: list, detector) -> float:
    """Mean count per frame of BEV cells inside the importance target's reach (target > 0.1)."""
    target = importance_target([f.boxes for f in frames], [f.labels for f in frames], detector)
    return float((target > 0.1).sum() / len(frames))


@torch.no_grad()
def row(name: str, model: Ada3D, frames: list, oracle: Oracle | None = None) -> dict:
    forward = None
    if oracle is not None:
        model.scorer = oracle
        forward = oracle.wrap(model)
    detections, kept = detect_and_tally(model, frames, forward)
    ap = evaluate_detections(detections, frames, model.detector.config.classes)
    totals = kept.row(len(frames))
    return {"variant": name, "voxels_kept": totals["voxels_kept"],
            "density": ", ".join(f"{d:.3f}" for d in totals["density_after_stage"]) or "dense",
            "occupied_cells": kept.sum.bev_occupied / len(frames), "map_iou": ap["iou"]["mAP"],
            **{f"{c}_iou": ap["iou"][c] for c in model.detector.config.classes}}


def main() -> None:
    frames = simulate_split("val", FRAMES)
    dense, _ = load_zoo_model("lidar-centerpoint-spbn")
    tuned, _ = load_zoo_model("lidar-ada3d-spbn")
    k3, k2 = KEEP

    def on(detector, keep_3d, keep_2d, refilter=True, sparse=True):
        return Ada3D(detector, Ada3DConfig(keep_3d, keep_2d, sparse, refilter), tuned.predictor).eval()

    rows = [row("dense SP-BN detector", on(dense, 1.0, 1.0, sparse=False), frames),
            row(f"SP-BN detector, 3D filter only {k3:g}", on(dense, k3, 1.0, sparse=False), frames),
            row(f"SP-BN detector, 2D input only {k2:g}", on(dense, 1.0, k2, refilter=False), frames),
            row(f"SP-BN detector, 2D {k2:g} re-filtered after each stage", on(dense, 1.0, k2), frames),
            row(f"SP-BN detector, {k3:g} / {k2:g} (2D input only)", on(dense, k3, k2, refilter=False), frames),
            row(f"SP-BN detector, oracle scores, {k3:g} / {k2:g} (2D input only)",
                on(dense, k3, k2, refilter=False), frames, Oracle(frames, dense)),
            row("lidar-ada3d-spbn, nothing filtered", replace_config(tuned, 1.0, 1.0), frames),
            row(f"lidar-ada3d-spbn at its keep shares ({tuned.config.keep_3d:g} / {tuned.config.keep_2d:g})", tuned, frames),
            row("lidar-ada3d-spbn, oracle scores at its keep shares", replace_config(tuned, tuned.config.keep_3d,
                                                                                   tuned.config.keep_2d), frames,
                Oracle(frames, dense))]
    record = {"script": "benchmarks/scripts/ada3d_diagnosis.py", "val_frames": FRAMES, "rows": rows,
              "object_footprint_cells_per_frame": footprint_cells(frames, dense), "machine": machine_facts()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ada3d_diagnosis.json").write_text(json.dumps(record, indent=1) + "\n")
    columns = [("variant", "variant"), ("voxels_kept", "voxels kept"), ("density", "BEV density after each 2D stage"),
               ("occupied_cells", "occupied BEV cells / frame"), ("map_iou", "mAP (rotated IoU)"),
               ("Car_iou", "Car AP@0.7"), ("Pedestrian_iou", "Ped AP@0.5"), ("Cyclist_iou", "Cyc AP@0.5")]
    text = ["# Where Ada3D's accuracy goes on the SP-BN detector (issue 44)", "",
            f"`python benchmarks/scripts/ada3d_diagnosis.py`: {FRAMES} simulated validation frames (seeds from "
            "1,000,000; the bench's test frames are never used here). The predictor is the shipped "
            "`lidar-ada3d-spbn`'s in every row but the oracle ones, which score cells by the ground-truth target the "
            f"predictor is trained on. The objects' footprints (target > 0.1) cover "
            f"{record['object_footprint_cells_per_frame']:.0f} BEV cells per frame.  ",
            machine_line(record["machine"]), "", markdown_table(rows, columns), ""]
    (OUT / "ada3d_diagnosis.md").write_text("\n".join(text))


def replace_config(model: Ada3D, keep_3d: float, keep_2d: float) -> Ada3D:
    sparse = keep_3d < 1 or keep_2d < 1
    config = replace(model.config, keep_3d=keep_3d, keep_2d=keep_2d, sparse_2d=sparse)
    return Ada3D(model.detector, config, model.predictor).eval()


if __name__ == "__main__":
    main()
