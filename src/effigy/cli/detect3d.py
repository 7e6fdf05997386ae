"""``effigy detect3d ...``: the simulated lidar world, the shipped detector, and Ada3D filtering."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effigy.cli._common import JSON, console, echo_json, print_rows, progress, writable_folder
from effigy.errors import EffigyError

app = typer.Typer(help="Lidar 3D detection: simulate frames, evaluate the detector, filter with Ada3D.",
                  no_args_is_help=True)
SPLITS = ("train", "val", "test")


@app.command("simulate")
def simulate(
    out: Path = typer.Option(..., help="KITTI object root to write (velodyne/, label_2/, calib/, ImageSets/)."),
    split: str = typer.Option("test", help="Simulated split: train, val or test (disjoint seeds)."),
    frames: int = typer.Option(20, min=1, max=100_000),
) -> None:
    """Simulate frames of a split and write them in the KITTI layout."""
    from effigy.cli._common import check_choice
    from effigy.models.lidar.train import simulate_split
    from effigy.worlds.kitti import export_kitti

    check_choice(split, SPLITS, "--split")
    writable_folder(out)
    if any(out.iterdir()):
        raise EffigyError(f"--out {out} is not empty; simulate into a new folder (frame ids start at 000000).")
    with progress() as reporter:
        advance = reporter(f"simulating {frames} {split} frames", 1)
        data = simulate_split(split, frames)
        advance()
    export_kitti(data, out, split)
    console.print(f"wrote {frames} frames to {out} (KITTI layout, ImageSets/{split}.txt)")


@app.command("eval")
def evaluate(
    model: str = typer.Option("lidar-centerpoint", help="A dense detector (lidar-centerpoint, lidar-centerpoint-spbn) "
                              "or an Ada3D model (lidar-ada3d, lidar-ada3d-spbn: filtered)."),
    kitti: Optional[Path] = typer.Option(None, help="A KITTI object root to evaluate on instead of simulated frames."),
    split: Optional[str] = typer.Option(None, help="With --kitti: the ImageSets split to read (default: every frame)."),
    frames: int = typer.Option(50, min=1, max=100_000, help="Simulated test frames (or the most read from --kitti)."),
    keep_3d: Optional[float] = typer.Option(None, min=0.01, max=1.0, help="Ada3D models: share of occupied BEV "
                                            "cells whose voxels enter the 3D backbone (default: the model's own)."),
    keep_2d: Optional[float] = typer.Option(None, min=0.01, max=1.0, help="Ada3D models: share of occupied BEV cells "
                                            "kept in 2D (default: the model's own)."),
    as_json: bool = JSON,
) -> None:
    """BEV AP per class (rotated IoU and centre distance) of a shipped lidar model; for an Ada3D model also what
    the filter kept."""
    from dataclasses import replace

    import torch

    from effigy.cli._common import check_choice
    from effigy.lidar.ada3d import Ada3D, detect_and_tally
    from effigy.models.lidar.train import detect, evaluate_detections, simulate_split
    from effigy.models.zoo import ZOO, load_zoo_model
    from effigy.worlds.kitti import import_kitti

    check_choice(model, ZOO.names("lidar"), "--model")
    data = import_kitti(kitti, split, frames, labelled=True) if kitti is not None else None
    loaded, _ = load_zoo_model(model)
    filtered = None
    if isinstance(loaded, Ada3D):
        config = replace(loaded.config, keep_3d=keep_3d or loaded.config.keep_3d,
                         keep_2d=keep_2d or loaded.config.keep_2d)
        filtered = Ada3D(loaded.detector, config, loaded.predictor).eval()
    detector = loaded if filtered is None else filtered.detector
    with progress(not as_json) as reporter:
        advance = reporter("detecting", 2)
        data = data if data is not None else simulate_split("test", frames)
        advance()
        with torch.no_grad():
            detections, kept = detect_and_tally(filtered, data) if filtered else (detect(detector, data), None)
        advance()
    ap = evaluate_detections(detections, data, detector.config.classes)
    rows = [{"matching": m, **{k: round(v, 4) for k, v in ap[m].items()}} for m in ("iou", "distance")]
    summary = {"model": model, "frames": len(data), "ap": ap, "voxels_kept": kept.voxels_kept if kept else None,
               "keep": [filtered.config.keep_3d, filtered.config.keep_2d] if filtered else None}
    if as_json:
        echo_json(summary)
        return
    print_rows(rows, [("matching", "matching"), *[(c, c) for c in (*detector.config.classes, "mAP")]],
               f"{model} on {len(data)} frames" + (f", voxels kept {summary['voxels_kept']:.2f}" if kept else ""))
