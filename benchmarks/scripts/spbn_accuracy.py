"""How accurate are the detector trained with sparsity-preserving norms from its first step, and Ada3D on it?
(issue 44, first steps)

`lidar-centerpoint-spbn` beside the plain `lidar-centerpoint`, both dense, and the two Ada3D models at the main
keep shares each was fine-tuned with (`lidar-ada3d` on the plain detector, `lidar-ada3d-spbn` on the SP-BN one), on the
same 100 simulated test frames the Ada3D bench scores: BEV AP per class under rotated IoU and centre distance,
and the share of voxels kept. Accuracy only: the costs and speed are the bench's (`effigy bench ada3d`).

    python benchmarks/scripts/spbn_accuracy.py      # ~4 min on 2 cores

Writes benchmarks/results/checks/spbn_accuracy.{json,md}.
"""
import json
from pathlib import Path

import torch

from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table
from effigy.lidar.ada3d import Ada3D, detect_and_tally
from effigy.models.lidar.train import detect, evaluate_detections, simulate_split
from effigy.models.zoo import load_zoo_model

OUT = Path("benchmarks/results/checks")
MODELS = ("lidar-centerpoint", "lidar-centerpoint-spbn", "lidar-ada3d", "lidar-ada3d-spbn")
FRAMES = 100


@torch.no_grad()
def evaluate(name: str, frames: list) -> dict:
    loaded, _ = load_zoo_model(name)
    voxels_kept = 1.0
    if isinstance(loaded, Ada3D):
        detections, kept = detect_and_tally(loaded, frames)  # at the keep shares it was fine-tuned with
        c = loaded.config
        keep = f"{c.keep_3d:g} / {c.keep_2d:g}" + ("" if c.refilter_2d else " (2D input only)")
        detector, voxels_kept = loaded.detector, kept.voxels_kept
    else:
        detector, detections, keep = loaded, detect(loaded, frames), "dense"
    ap = evaluate_detections(detections, frames, detector.config.classes)
    norms = {"batch": "batch", "sparsity-preserving": "sparsity-preserving from the first step"}[detector.config.norm_2d]
    if isinstance(loaded, Ada3D) and detector.config.norm_2d == "batch":
        norms = "batch, converted to sparsity-preserving and fine-tuned"
    return {"model": name, "norm_2d": norms, "keep": keep,
            "voxels_kept": voxels_kept, "map_iou": ap["iou"]["mAP"],
            "map_distance": ap["distance"]["mAP"], **{f"{c}_iou": ap["iou"][c] for c in detector.config.classes},
            "ap": ap}


def main() -> None:
    frames = simulate_split("test", FRAMES)
    rows = [evaluate(name, frames) for name in MODELS]
    record = {"script": "benchmarks/scripts/spbn_accuracy.py", "test_frames": FRAMES, "rows": rows,
              "machine": machine_facts()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "spbn_accuracy.json").write_text(json.dumps(record, indent=1) + "\n")
    columns = [("model", "model"), ("norm_2d", "2D norms"), ("keep", "kept (3D / 2D)"), ("voxels_kept", "voxels kept"),
               ("map_iou", "mAP (rotated IoU)"), ("Car_iou", "Car AP@0.7"), ("Pedestrian_iou", "Ped AP@0.5"),
               ("Cyclist_iou", "Cyc AP@0.5"), ("map_distance", "mAP (centre distance)")]
    text = ["# The SP-BN detector and Ada3D on it: accuracy (issue 44)", "",
            "`python benchmarks/scripts/spbn_accuracy.py`: the shipped detectors dense and the shipped Ada3D models at "
            f"the keep shares each was fine-tuned with, on the Ada3D bench's {FRAMES} simulated test frames (seeds from "
            "2,000,000; ground truth with fewer than 5 points ignored). Accuracy only; costs and speed are the bench's.  ",
            machine_line(record["machine"]), "", markdown_table(rows, columns), ""]
    (OUT / "spbn_accuracy.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
