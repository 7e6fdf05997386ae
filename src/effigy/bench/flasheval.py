"""FlashEval against its baselines on effigy's own score matrix, in one run.

For each metric and subset size: FlashEval's search (several search seeds), random subsets, random subsets
stratified by caption kind, and Anchor Points; every tau on the held-out half of the variants, which no
method reads. Then the paper's claim measured here (the size at which random subsets match FlashEval's
50-prompt held-out tau) and the wall time to rank one new variant on the subset vs on every prompt.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effigy.evaluate.flasheval.apply import score_variant
from effigy.evaluate.flasheval.matrix import ScoreMatrix, read_scores
from effigy.evaluate.flasheval.search import (
    SearchSettings,
    Split,
    Subset,
    anchor_points,
    default_margin,
    flasheval_search,
    heldout_tau,
    random_subsets,
    stratified_subsets,
)
from effigy.evaluate.flasheval.variants import VariantBuilder, VariantSpec
from effigy.evaluate.measure import Progress, machine_facts, no_progress
from effigy.evaluate.report import SettingsRecord

log = logging.getLogger(__name__)
METHODS = ("flasheval", "random", "stratified", "anchor points")


@dataclass
class FlashEvalBenchSettings(SettingsRecord):
    matrix: str = "benchmarks/results/flasheval/t2i-shapes/score_matrix.json"
    sizes: tuple[int, ...] = (10, 20, 50, 100, 200, 500)
    claim_size: int = 50  # FlashEval's subset in the paper's claim
    claim_random_size: int = 500
    random_sizes: tuple[int, ...] = (10, 20, 50, 100, 150, 200, 300, 400, 500, 600, 700, 800, 900)
    random_draws: int = 200
    search_seeds: int = 3
    rounds: int = 8
    subsets: int = 2000
    split_seed: int = 0
    timing_variant: str = "unipc 8 steps"  # not in the matrix: the "new variant" ranked on the subset
    metric: str | None = None  # an external matrix's table name (read_scores' default otherwise); the one metric run


@dataclass
class _World:
    table: np.ndarray
    split: Split
    margin: float
    kinds: list[str]


def _spread(values: list[float]) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "std": float(values.std()), "p5": float(np.percentile(values, 5)),
            "p95": float(np.percentile(values, 95)), "draws": int(len(values))}


def _taus(world: _World, subsets: list[Subset]) -> list[float]:
    return [heldout_tau(world.table, world.split, s, world.margin) for s in subsets]


def _flasheval(world: _World, size: int, settings: FlashEvalBenchSettings) -> tuple[dict, list[Subset]]:
    found = [flasheval_search(world.table, world.split, world.margin,
                              SearchSettings(size=size, rounds=settings.rounds, subsets=settings.subsets, seed=seed))
             for seed in range(settings.search_seeds)]
    return _spread(_taus(world, found)) | {"train_tau": float(np.mean([f.train_tau for f in found]))}, found


def method_taus(world: _World, size: int, settings: FlashEvalBenchSettings) -> tuple[dict[str, dict], Subset]:
    """Held-out tau of every method at one size (spread over draws or search seeds), and FlashEval's first subset."""
    flash, found = _flasheval(world, size, settings)
    n = world.table.shape[1]
    return {
        "flasheval": flash,
        "random": _spread(_taus(world, random_subsets(n, size, settings.random_draws, seed=size))),
        "stratified": _spread(_taus(world, stratified_subsets(world.kinds, size, settings.random_draws, seed=size))),
        "anchor points": _spread(_taus(world, [anchor_points(world.table, world.split, size, seed=s)
                                               for s in range(settings.search_seeds)])),
    }, found[0]


def random_match_size(world: _World, target: float, settings: FlashEvalBenchSettings) -> dict:
    """The smallest size whose random subsets' mean held-out tau reaches ``target`` (None: not below all)."""
    curve = {}
    for size in settings.random_sizes:
        if size >= world.table.shape[1]:
            break
        curve[size] = float(np.mean(_taus(world, random_subsets(world.table.shape[1], size, settings.random_draws,
                                                                 seed=10_000 + size))))
    reached = [s for s, tau in curve.items() if tau >= target]
    return {"target_tau": target, "random_mean_tau_by_size": curve, "size": reached[0] if reached else None}


def matrix_name(settings: FlashEvalBenchSettings) -> str:
    """What the results are filed under: ``t2i-shapes`` for effigy's own matrix, else the matrix file or folder's
    name (``ImageReward`` for FlashEval's released ``COCO/ImageReward`` tree)."""
    path = Path(settings.matrix)
    return "t2i-shapes" if path.suffix == ".json" else path.stem


def run_flasheval_bench(settings: FlashEvalBenchSettings, progress: Progress = no_progress) -> dict:
    matrix = read_scores(settings.matrix, settings.metric)
    split = Split.halves(len(matrix.variants), settings.split_seed)
    kinds = [p.get("kind", "") for p in matrix.prompts]
    metrics, subsets = {}, {}
    chosen = [settings.metric] if settings.metric in matrix.metrics else matrix.metrics
    advance = progress("methods x sizes x metrics", len(chosen) * len(settings.sizes))
    for metric in chosen:
        table = matrix.table(metric)
        world = _World(table, split, default_margin(table[split.train]), kinds)
        by_size = {}
        for size in settings.sizes:
            by_size[size], subset = method_taus(world, size, settings)
            subsets[f"{metric}_{size}"] = subset.prompts
            advance()
        claim = by_size[settings.claim_size]["flasheval"]["mean"]
        metrics[metric] = {"margin": world.margin, "by_size": by_size,
                           "claim": {"flasheval_tau": claim,
                                     "random_tau_at_claim_random_size": by_size.get(settings.claim_random_size, {})
                                     .get("random", {}).get("mean"),
                                     **random_match_size(world, claim, settings)}}
    timing = None
    if "prompt_set" in matrix.provenance:
        timing = time_new_variant(matrix, subsets[f"{chosen[0]}_{settings.claim_size}"], settings)
    else:
        log.info("%s is an external matrix: no generator of its variants here to time a new one", settings.matrix)
    return {"benchmark": "flasheval", "schema": 1, "model": matrix_name(settings), "settings": settings.to_dict(),
            "matrix": {"variants": len(matrix.variants), "prompts": len(matrix.prompts), "metrics": matrix.metrics,
                       "provenance": matrix.provenance},
            "split": {"train": [matrix.names[i] for i in split.train],
                      "heldout": [matrix.names[i] for i in split.heldout]},
            "metrics": metrics, "subsets": subsets, "timing": timing, "machine": machine_facts()}


def time_new_variant(matrix: ScoreMatrix, subset: list[int], settings: FlashEvalBenchSettings) -> dict:
    """Seconds to score one variant absent from the matrix on the subset, then on every prompt, in one run."""
    from effigy.evaluate.t2i import prompt_set

    spec = _timing_spec(settings.timing_variant)
    known = {v["name"] for v in matrix.variants}
    if spec.name in known:
        log.warning("the timing variant %r is in the matrix; its timing still stands, its ranking is not new", spec.name)
    prompts = matrix.provenance["prompt_set"]
    scenes = prompt_set(prompts["count"], prompts["split"], prompts["seed"])
    builder = VariantBuilder()
    builder.model(spec)  # built once, outside both timings
    _, subset_seconds = score_variant(spec, [scenes[i] for i in subset], prompts["seed"], "adherence", builder)
    _, full_seconds = score_variant(spec, scenes, prompts["seed"], "adherence", builder)
    return {"variant": spec.to_dict(), "subset_prompts": len(subset), "subset_seconds": subset_seconds,
            "full_prompts": len(scenes), "full_seconds": full_seconds, "speedup": full_seconds / subset_seconds}


def _timing_spec(name: str) -> VariantSpec:
    sampler, steps, _ = name.split(" ")
    return VariantSpec(name, sampler=sampler, steps=int(steps))
