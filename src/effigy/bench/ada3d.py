"""Ada3D on the shipped lidar detector, in one run. The main keep shares are chosen on validation frames (the
most accurate sweep pair within the voxel and first-stage density budget); then, on the test frames: the dense
detector; Ada3D at the main shares (3D and 2D apart and together); the filter on the dense detector without
fine-tuning; random and distance filtering at the main shares; and the sweep, Ada3D, random and distance
filtering at every keep pair, for the speed-accuracy curve. Every row: what was kept and computed (voxels, BEV
density after each 2D stage, multiply-adds counted from the rulebooks), BEV AP per class under both matchings,
latency of the 3D and 2D parts and end to end (all rows interleaved), held bytes, and (main rows) peak RSS in a
fresh process.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from effigy.bench.variants import RESULT_SCHEMA
from effigy.evaluate.measure import Progress, machine_facts, no_progress, rss_mib, run_in_fresh_process
from effigy.lidar.ada3d import Ada3D, Ada3DConfig, detect_and_tally, distance_scores, random_scores
from effigy.memory import held_bytes
from effigy.models.lidar.centerpoint import CenterPoint
from effigy.models.lidar.train import evaluate_detections, simulate_split
from effigy.models.zoo import load_zoo_model

log = logging.getLogger(__name__)


@dataclass
class Ada3DBenchSettings:
    ada3d: str = "lidar-ada3d"  # the Ada3D model; its dense detector is the one it was fine-tuned from
    reference: str = "lidar-centerpoint"  # the plain dense detector, a row of its own when it is not that one
    test_frames: int = 100
    val_frames: int = 100  # validation frames (never scored on test) on which the main keep shares are chosen
    latency_frames: int = 8
    latency_repeats: int = 3
    keeps: tuple[tuple[float, float], ...] = ()  # (3D, 2D) rows; the first is the main one; none: chosen on val
    sweep_3d: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # the 0.4-0.8, and one cheaper
    sweep_2d: tuple[float, ...] = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5)  # the 0.2-0.5, and one cheaper
    max_voxels: float = 0.6  # the main keep's budget: share of voxels kept ...
    max_first_density: float = 0.3  # ... and BEV density after the first 2D stage (the paper's operating point)
    seed: int = 0
    measure_memory: bool = True

    def to_dict(self) -> dict:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "detector": self.detector}

    @property
    def detector(self) -> str:
        """The dense detector the Ada3D model was fine-tuned from (its training config names it)."""
        from effigy.models.zoo import shipped_config

        return shipped_config(self.ada3d).detector

    @property
    def sweep(self) -> list[tuple[float, float]]:
        return [(k3, k2) for k3 in self.sweep_3d for k2 in self.sweep_2d]


@dataclass
class LidarVariant:
    name: str
    family: str
    model: Ada3D
    keep_3d: float = 1.0
    keep_2d: float = 1.0
    row: dict | None = None


@dataclass
class Models:
    """The loaded models every variant wraps."""

    detector: CenterPoint
    ada3d: Ada3D
    reference: CenterPoint | None

    @classmethod
    def load(cls, settings: Ada3DBenchSettings) -> Models:
        reference = None if settings.reference == settings.detector else load_zoo_model(settings.reference)[0]
        return cls(load_zoo_model(settings.detector)[0], load_zoo_model(settings.ada3d)[0], reference)

    def filtered(self, keep_3d: float, keep_2d: float, sparse: bool = True,
                 scorer: Callable | None = None) -> Ada3D:
        """The fine-tuned model at these keep shares (its own predictor, or ``scorer`` for a baseline)."""
        config = replace(self.ada3d.config, keep_3d=keep_3d, keep_2d=keep_2d, sparse_2d=sparse)
        model = Ada3D(self.ada3d.detector, config, self.ada3d.predictor).eval()
        model.scorer = scorer
        return model

    def dense(self) -> LidarVariant:
        return LidarVariant("dense detector", "dense", Ada3D(self.detector, Ada3DConfig(1.0, 1.0, False)).eval())


def build_variants(settings: Ada3DBenchSettings, models: Models, main: tuple[float, float]) -> list[LidarVariant]:
    """The rows of the table, each an ``Ada3D`` wrapper (keep 1 / 1 on plain norms is the dense detector)."""
    main_3d, main_2d = main
    keeps = [main, *[k for k in settings.keeps if k != main]]
    variants = [models.dense()]
    if models.reference is not None:
        variants.append(LidarVariant(f"plain dense detector ({settings.reference})", "dense reference",
                                     Ada3D(models.reference, Ada3DConfig(1.0, 1.0, False)).eval()))
    variants += [LidarVariant(f"ada3d 3D {k3:g} / 2D {k2:g}", "ada3d", models.filtered(k3, k2), k3, k2) for k3, k2 in keeps]
    # nothing filtered in 2D: the map is dense enough there that the dense convolution is the faster way
    variants += [LidarVariant(f"ada3d 3D only {main_3d:g}", "ada3d 3D", models.filtered(main_3d, 1.0, False), main_3d),
                 LidarVariant(f"ada3d 2D only {main_2d:g}", "ada3d 2D", models.filtered(1.0, main_2d), 1.0, main_2d),
                 LidarVariant("ada3d model, nothing filtered", "ada3d none", models.filtered(1.0, 1.0, False))]
    plain = Ada3D(models.detector, replace(models.ada3d.config, keep_3d=main_3d, keep_2d=main_2d, sparse_2d=False),
                  models.ada3d.predictor).eval()
    untuned = ("filter on the dense detector (plain BN)", "no SP-BN") if models.detector.config.norm_2d == "batch" \
        else ("filter on the dense SP-BN detector, not fine-tuned", "no fine-tuning")
    variants.append(LidarVariant(f"{untuned[0]} {main_3d:g} / {main_2d:g}", untuned[1], plain, main_3d, main_2d))
    for family, scorer in (("random", random_scores(settings.seed)), ("distance", distance_scores)):
        variants.append(LidarVariant(f"{family} filtering {main_3d:g} / {main_2d:g}", family,
                                     models.filtered(main_3d, main_2d, scorer=scorer), main_3d, main_2d))
    return variants


SWEEP_FAMILIES = ("ada3d", "random", "distance")


def sweep_variants(settings: Ada3DBenchSettings, models: Models, families=SWEEP_FAMILIES) -> list[LidarVariant]:
    """Every keep pair of the sweep, for Ada3D's predictor and for the random and distance baselines."""
    scorers = {"ada3d": lambda: None, "random": lambda: random_scores(settings.seed), "distance": lambda: distance_scores}
    return [LidarVariant(f"{family} {k3:g} / {k2:g}", family, models.filtered(k3, k2, scorer=scorers[family]()), k3, k2)
            for family in families for k3, k2 in settings.sweep]


@torch.no_grad()
def score(variants: list[LidarVariant], frames: list, progress: Progress, label: str = "detecting the test frames") -> None:
    """Each variant's row: what it kept and computed, and its BEV AP (the first variant is the dense reference
    of the cost ratios)."""
    advance = progress(label, len(variants))
    for variant in variants:
        detections, totals = detect_and_tally(variant.model, frames)
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


def choose_keep(settings: Ada3DBenchSettings, models: Models, progress: Progress) -> dict:
    """The main keep shares, chosen on validation frames the bench never scores: the most accurate sweep pair
    (mAP, rotated IoU) within the voxel and first-stage density budget (if none is within it, the most
    accurate of all, and the record says so)."""
    if settings.keeps:
        return {"keep": list(settings.keeps[0]), "chosen_on": "given", "rows": []}
    frames = simulate_split("val", settings.val_frames)
    variants = [models.dense(), *sweep_variants(settings, models, ("ada3d",))]
    score(variants, frames, progress, "choosing keep shares on validation frames")
    rows = [{k: v.row[k] for k in ("variant", "family", "keep_3d", "keep_2d", "voxels_kept", "density_after_stage",
                                   "macs_ratio", "map_iou")} for v in variants]
    for row in rows[1:]:
        row["within_budget"] = (row["voxels_kept"] <= settings.max_voxels
                                and row["density_after_stage"][0] <= settings.max_first_density)
    eligible = [r for r in rows[1:] if r["within_budget"]] or rows[1:]
    best = max(eligible, key=lambda r: r["map_iou"])
    log.info("keep shares chosen on %d validation frames: 3D %g / 2D %g (mAP %.4f, voxels %.3f)", len(frames),
             best["keep_3d"], best["keep_2d"], best["map_iou"], best["voxels_kept"])
    return {"keep": [best["keep_3d"], best["keep_2d"]], "chosen_on": "validation",
            "within_budget": bool(best.get("within_budget")), "val_frames": len(frames), "rows": rows}


def dominance(sweep: list[dict], cost: str) -> dict:
    """Does Ada3D's curve lie above each baseline's? At every cost any sweep point sampled, each filter's best
    mAP at no more than that cost (its frontier); compared where both filters have a point that cheap. Costs
    where only the baseline has one (it reaches cheaper than every Ada3D pair) are counted apart."""
    costs = sorted({r[cost] for r in sweep})

    def best(family: str, limit: float) -> float | None:
        return max((r["map_iou"] for r in sweep if r["family"] == family and r[cost] <= limit), default=None)

    verdict = {}
    for family in SWEEP_FAMILIES[1:]:
        pairs = [(best("ada3d", c), best(family, c)) for c in costs]
        compared = [(ours, theirs) for ours, theirs in pairs if ours is not None and theirs is not None]
        verdict[family] = {"costs": len(costs), "compared": len(compared),
                           "ada3d_higher": sum(ours > theirs for ours, theirs in compared),
                           "baseline_only": sum(ours is None and theirs is not None for ours, theirs in pairs)}
    return verdict


def _seconds(model: Ada3D, frame: torch.Tensor) -> np.ndarray:
    """(3D part, 2D part, end to end) seconds of one frame through ``model``."""
    start = time.perf_counter()
    model([frame])
    total = time.perf_counter() - start
    return np.array([model.tally.seconds_3d, model.tally.seconds_2d, total])


@torch.no_grad()
def time_variants(variants: list[LidarVariant], frames: list, repeats: int, progress: Progress) -> None:
    """Median seconds per frame of the 3D part, the 2D part and end to end; speed-ups against the dense detector
    timed beside each variant, frame by frame (dense, variant, dense, variant, ...), so that a shared machine's
    drift over a long round cannot favour the variants timed early: the median over rounds of the paired
    ratios."""
    points = [torch.from_numpy(f.points) for f in frames]
    dense_model = variants[0].model
    seconds: dict[str, list[np.ndarray]] = {v.name: [] for v in variants}
    ratios: dict[str, list[np.ndarray]] = {v.name: [] for v in variants}
    advance = progress("timing", repeats + 1)
    for round_index in range(repeats + 1):  # round 0 warms up
        for variant in variants:
            dense, ours = np.zeros(3), np.zeros(3)
            for frame in points:
                dense += _seconds(dense_model, frame)
                ours += _seconds(variant.model, frame)
            if round_index:
                seconds[variant.name].append(ours / len(points))
                ratios[variant.name].append(dense / ours)
        advance()
    for variant in variants:
        median = np.median(np.array(seconds[variant.name]), axis=0)
        speedup = np.median(np.array(ratios[variant.name]), axis=0)
        variant.row.update({"ms_3d": 1000 * median[0], "ms_2d": 1000 * median[1], "ms_total": 1000 * median[2],
                            "speedup_3d": speedup[0], "speedup_2d": speedup[1], "speedup_total": speedup[2]})


def memory_probe(settings: dict, name: str, main: tuple[float, float], frames: int) -> dict:
    """In a fresh process: build the variants, run the named one on ``frames`` test frames, report peak RSS."""
    bench = Ada3DBenchSettings(**{k: tuple(tuple(x) for x in v) if k == "keeps" else v for k, v in settings.items()
                                  if k in Ada3DBenchSettings.__dataclass_fields__})
    variant = next(v for v in build_variants(bench, Models.load(bench), main) if v.name == name)
    data = simulate_split("test", frames, workers=1)
    before = rss_mib()["rss_mib"]
    with torch.no_grad():
        for frame in data:
            variant.model([torch.from_numpy(frame.points)])
    return {"peak_rss_mib": rss_mib()["peak_rss_mib"], "rss_before_mib": before}


def run_ada3d_bench(settings: Ada3DBenchSettings, progress: Progress = no_progress) -> dict:
    """``effigy bench ada3d``: the keep shares chosen on validation frames, then every row above and the sweep
    (Ada3D, random and distance filtering at every keep pair) on the test frames, timed in one interleaved run.

    Returns:
        The result dict (rows, sweep, choice, dominance, settings, machine, one scene for the picture).
    """
    models = Models.load(settings)
    choice = choose_keep(settings, models, progress)
    variants = build_variants(settings, models, tuple(choice["keep"]))
    sweep = sweep_variants(settings, models)
    frames = simulate_split("test", settings.test_frames)
    score([*variants, *sweep], frames, progress)
    time_variants([*variants, *sweep], frames[: settings.latency_frames], settings.latency_repeats, progress)
    if settings.measure_memory:
        advance = progress("peak memory (a fresh process each)", len(variants))
        for variant in variants:
            variant.row.update(run_in_fresh_process(memory_probe, settings.to_dict(), variant.name,
                                                    tuple(choice["keep"]), settings.latency_frames))
            advance()
    sweep_rows = [v.row for v in sweep]
    main = next(v for v in variants if v.family == "ada3d")
    return {"benchmark": "ada3d", "schema": RESULT_SCHEMA, "model": settings.detector, "settings": settings.to_dict(),
            "machine": machine_facts(), "choice": choice, "rows": [v.row for v in variants], "sweep": sweep_rows,
            "dominance": {cost: dominance(sweep_rows, cost) for cost in ("macs_ratio", "ms_total")},
            "scene": scene_for_picture(main, frames[0])}


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
