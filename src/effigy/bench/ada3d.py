"""Ada3D on the shipped lidar detector, in one run: the dense detector; Ada3D at several keep shares (3D and 2D
apart and together); the filter on the dense detector with its plain BatchNorms; random and distance filtering
at the main keep shares. Every row: what was kept and computed (voxels, BEV density after each 2D stage,
multiply-adds counted from the rulebooks), BEV AP per class under both matchings, latency of the 3D and 2D
parts and end to end (interleaved), held bytes, and peak RSS in a fresh process.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from effigy.bench.variants import RESULT_SCHEMA
from effigy.evaluate.measure import Progress, machine_facts, no_progress, rss_mib, run_in_fresh_process
from effigy.lidar.ada3d import Ada3D, Ada3DConfig, FilterTally, distance_scores, random_scores
from effigy.memory import held_bytes
from effigy.models.lidar.train import detect, evaluate_detections, simulate_split
from effigy.models.zoo import load_zoo_model


@dataclass
class Ada3DBenchSettings:
    ada3d: str = "lidar-ada3d"  # the Ada3D model; its dense detector is the one it was fine-tuned from
    reference: str = "lidar-centerpoint"  # the plain dense detector, a row of its own when it is not that one
    test_frames: int = 100
    latency_frames: int = 8
    latency_repeats: int = 3
    keeps: tuple[tuple[float, float], ...] = ((0.6, 0.3), (0.8, 0.5), (0.4, 0.2))  # (3D, 2D); the first is the main
    seed: int = 0
    measure_memory: bool = True

    def to_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "detector": self.detector}

    @property
    def detector(self) -> str:
        """The dense detector the Ada3D model was fine-tuned from (its training config names it)."""
        from effigy.models.zoo import shipped_config

        return shipped_config(self.ada3d).detector


@dataclass
class LidarVariant:
    name: str
    family: str
    model: Ada3D
    keep_3d: float = 1.0
    keep_2d: float = 1.0
    row: dict | None = None


def build_variants(settings: Ada3DBenchSettings) -> list[LidarVariant]:
    """The rows of the table, each an ``Ada3D`` wrapper (keep 1 / 1 on plain norms is the dense detector)."""
    detector, _ = load_zoo_model(settings.detector)
    ada3d, _ = load_zoo_model(settings.ada3d)
    main_3d, main_2d = settings.keeps[0]

    def filtered(keep_3d: float, keep_2d: float, sparse: bool = True) -> Ada3D:
        return Ada3D(ada3d.detector, Ada3DConfig(keep_3d, keep_2d, sparse), ada3d.predictor).eval()

    variants = [LidarVariant("dense detector", "dense", Ada3D(detector, Ada3DConfig(1.0, 1.0, False)).eval())]
    if settings.reference != settings.detector:
        reference, _ = load_zoo_model(settings.reference)
        variants.append(LidarVariant(f"plain dense detector ({settings.reference})", "dense reference",
                                     Ada3D(reference, Ada3DConfig(1.0, 1.0, False)).eval()))
    variants += [LidarVariant(f"ada3d 3D {k3:g} / 2D {k2:g}", "ada3d", filtered(k3, k2), k3, k2) for k3, k2 in settings.keeps]
    # nothing filtered in 2D: the map is dense enough there that the dense convolution is the faster way
    variants += [LidarVariant(f"ada3d 3D only {main_3d:g}", "ada3d 3D", filtered(main_3d, 1.0, False), main_3d, 1.0),
                 LidarVariant(f"ada3d 2D only {main_2d:g}", "ada3d 2D", filtered(1.0, main_2d), 1.0, main_2d),
                 LidarVariant("ada3d model, nothing filtered", "ada3d none", filtered(1.0, 1.0, False))]
    plain = Ada3D(detector, Ada3DConfig(main_3d, main_2d, False), ada3d.predictor).eval()
    untuned = ("filter on the dense detector (plain BN)", "no SP-BN") if detector.config.norm_2d == "batch" else \
        ("filter on the dense SP-BN detector, not fine-tuned", "no fine-tuning")
    variants.append(LidarVariant(f"{untuned[0]} {main_3d:g} / {main_2d:g}", untuned[1], plain, main_3d, main_2d))
    for family, scorer in (("random", random_scores(settings.seed)), ("distance", distance_scores)):
        model = filtered(main_3d, main_2d)
        model.scorer = scorer
        variants.append(LidarVariant(f"{family} filtering {main_3d:g} / {main_2d:g}", family, model, main_3d, main_2d))
    return variants


class _Totals:
    """Tallies summed over the batches of a run."""

    def __init__(self) -> None:
        self.sum = FilterTally()

    def add(self, tally: FilterTally) -> None:
        s = self.sum
        s.voxels_in += tally.voxels_in
        s.voxels_kept += tally.voxels_kept
        s.bev_occupied += tally.bev_occupied
        s.bev_cells += tally.bev_cells
        s.macs_3d += tally.macs_3d
        s.macs_2d += tally.macs_2d
        weights = tally.bev_cells
        if not s.density_after_stage:
            s.density_after_stage = [0.0] * len(tally.density_after_stage)
        s.density_after_stage = [a + b * weights for a, b in zip(s.density_after_stage, tally.density_after_stage)]

    def row(self, frames: int) -> dict:
        s = self.sum
        return {"voxels_kept": s.voxels_kept / max(1, s.voxels_in), "bev_occupied": s.bev_occupied / max(1, s.bev_cells),
                "density_after_stage": [d / max(1, s.bev_cells) for d in s.density_after_stage],
                "macs_3d_per_frame": s.macs_3d / frames, "macs_2d_per_frame": s.macs_2d / frames}


@torch.no_grad()
def score(variants: list[LidarVariant], frames: list, progress: Progress) -> None:
    advance = progress("detecting the test frames", len(variants))
    for variant in variants:
        totals = _Totals()

        def run(points, model=variant.model, totals=totals):
            out = model(points)
            totals.add(model.tally)
            return out

        detections = detect(variant.model.detector, frames, forward=run)
        ap = evaluate_detections(detections, frames, variant.model.detector.config.classes)
        variant.row = {"variant": variant.name, "family": variant.family, "keep_3d": variant.keep_3d,
                       "keep_2d": variant.keep_2d, **totals.row(len(frames)), "ap": ap,
                       "map_iou": ap["iou"]["mAP"], "map_distance": ap["distance"]["mAP"],
                       "held_bytes": held_bytes(variant.model)}
        advance()
    dense = variants[0].row
    for variant in variants:
        row = variant.row
        row["macs_3d_ratio"] = row["macs_3d_per_frame"] / dense["macs_3d_per_frame"]
        row["macs_2d_ratio"] = row["macs_2d_per_frame"] / dense["macs_2d_per_frame"]
        row["macs_ratio"] = ((row["macs_3d_per_frame"] + row["macs_2d_per_frame"])
                             / (dense["macs_3d_per_frame"] + dense["macs_2d_per_frame"]))


@torch.no_grad()
def time_variants(variants: list[LidarVariant], frames: list, repeats: int, progress: Progress) -> None:
    """Median seconds per frame of the 3D part, the 2D part and end to end, all variants interleaved per round."""
    points = [torch.from_numpy(f.points) for f in frames]
    seconds: dict[str, list[tuple[float, float, float]]] = {v.name: [] for v in variants}
    advance = progress("timing", repeats + 1)
    for round_index in range(repeats + 1):  # round 0 warms up
        for variant in variants:
            parts = np.zeros(3)
            for frame in points:
                start = time.perf_counter()
                variant.model([frame])
                total = time.perf_counter() - start
                parts += (variant.model.tally.seconds_3d, variant.model.tally.seconds_2d, total)
            if round_index:
                seconds[variant.name].append(tuple(parts / len(points)))
        advance()
    dense = np.median(np.array(seconds[variants[0].name]), axis=0)
    for variant in variants:
        median = np.median(np.array(seconds[variant.name]), axis=0)
        variant.row.update({"ms_3d": 1000 * median[0], "ms_2d": 1000 * median[1], "ms_total": 1000 * median[2],
                            "speedup_3d": dense[0] / median[0], "speedup_2d": dense[1] / median[1],
                            "speedup_total": dense[2] / median[2]})


def memory_probe(settings: dict, name: str, frames: int) -> dict:
    """In a fresh process: build the variants, run the named one on ``frames`` test frames, report peak RSS."""
    bench = Ada3DBenchSettings(**{k: tuple(tuple(x) for x in v) if k == "keeps" else v for k, v in settings.items()
                                  if k in Ada3DBenchSettings.__dataclass_fields__})
    variant = next(v for v in build_variants(bench) if v.name == name)
    data = simulate_split("test", frames, workers=1)
    before = rss_mib()["rss_mib"]
    with torch.no_grad():
        for frame in data:
            variant.model([torch.from_numpy(frame.points)])
    return {"peak_rss_mib": rss_mib()["peak_rss_mib"], "rss_before_mib": before}


def run_ada3d_bench(settings: Ada3DBenchSettings, progress: Progress = no_progress) -> dict:
    """``effigy bench ada3d``: every row above, one run, one machine.

    Returns:
        The result dict (rows, settings, machine, one scene for the picture).
    """
    variants = build_variants(settings)
    frames = simulate_split("test", settings.test_frames)
    score(variants, frames, progress)
    time_variants(variants, frames[: settings.latency_frames], settings.latency_repeats, progress)
    if settings.measure_memory:
        advance = progress("peak memory (a fresh process each)", len(variants))
        for variant in variants:
            variant.row.update(run_in_fresh_process(memory_probe, settings.to_dict(), variant.name,
                                                    settings.latency_frames))
            advance()
    return {"benchmark": "ada3d", "schema": RESULT_SCHEMA, "model": settings.detector, "settings": settings.to_dict(),
            "machine": machine_facts(), "rows": [v.row for v in variants],
            "scene": scene_for_picture(variants[1], frames[0])}


@torch.no_grad()
def scene_for_picture(variant: LidarVariant, frame) -> dict:
    """One test frame under the main Ada3D variant: points, kept BEV cells, predicted and true boxes."""
    model = variant.model
    from effigy.models.lidar.centerpoint import voxelize
    from effigy.models.lidar.targets import decode

    points = [torch.from_numpy(frame.points)]
    voxels = voxelize(points, model.detector.config)
    scores = model.scores(voxels)[0]
    detections = decode(model(points), model.detector.config)[0]
    return {"points": frame.points[:, :2].tolist(), "scores": scores.tolist(),
            "truth": frame.boxes.tolist(), "labels": frame.labels,
            "detections": {c: (b.tolist(), s.tolist()) for c, (b, s) in detections.items()},
            "config": model.detector.config.to_dict(), "keep": [variant.keep_3d, variant.keep_2d]}
