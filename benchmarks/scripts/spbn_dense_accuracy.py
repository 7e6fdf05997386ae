"""How accurate is the detector trained with sparsity-preserving norms from its first step? (issue 44, step 1)

`lidar-centerpoint-spbn` beside the plain `lidar-centerpoint`, both dense (nothing filtered), on the same 100
simulated test frames the Ada3D bench scores: BEV AP per class under rotated IoU and centre distance.

    python benchmarks/scripts/spbn_dense_accuracy.py      # ~2 min on 2 cores

Writes benchmarks/results/checks/spbn_dense_accuracy.{json,md}.
"""
import json
from pathlib import Path

import torch

from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table
from effigy.models.lidar.train import detect, evaluate_detections, simulate_split
from effigy.models.zoo import load_zoo_model

OUT = Path("benchmarks/results/checks")
MODELS = ("lidar-centerpoint", "lidar-centerpoint-spbn")
FRAMES = 100


@torch.no_grad()
def main() -> None:
    frames = simulate_split("test", FRAMES)
    rows = []
    for name in MODELS:
        detector, config = load_zoo_model(name)
        ap = evaluate_detections(detect(detector, frames), frames, config.classes)
        rows.append({"model": name, "norm_2d": config.norm_2d, "map_iou": ap["iou"]["mAP"],
                     "map_distance": ap["distance"]["mAP"], **{f"{c}_iou": ap["iou"][c] for c in config.classes},
                     "ap": ap})
    record = {"script": "benchmarks/scripts/spbn_dense_accuracy.py", "test_frames": FRAMES, "rows": rows,
              "machine": machine_facts()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "spbn_dense_accuracy.json").write_text(json.dumps(record, indent=1) + "\n")
    columns = [("model", "detector"), ("norm_2d", "2D norms"), ("map_iou", "mAP (rotated IoU)"),
               ("Car_iou", "Car AP@0.7"), ("Pedestrian_iou", "Ped AP@0.5"), ("Cyclist_iou", "Cyc AP@0.5"),
               ("map_distance", "mAP (centre distance)")]
    text = ["# The SP-BN detector's dense accuracy (issue 44)", "",
            "`python benchmarks/scripts/spbn_dense_accuracy.py`: both shipped detectors, dense, on the Ada3D bench's "
            f"{FRAMES} simulated test frames (seeds from 2,000,000; ground truth with fewer than 5 points ignored).  ",
            machine_line(record["machine"]), "", markdown_table(rows, columns), ""]
    (OUT / "spbn_dense_accuracy.md").write_text("\n".join(text))


if __name__ == "__main__":
    main()
