"""FlashEval against its baselines on a score matrix, judged only on models no method read.

The protocol (https://arxiv.org/abs/2403.16379, made stricter): several seeded train / held-out splits of the
models (and, where given, a named split such as the paper's own ``train_id.pth``). On each split, every
method picks prompts from the training models only; its subset is judged by how it ranks the held-out models
against their full-set ranking, as Kendall tau-b and as the paper's margin KD (tau-b with pairs closer than
the metric's margin counted as ties). Random subsets from 10 to 2,000 prompts give the reference curve, and
the headline is the random size whose held-out tau FlashEval's 50 prompts match (the paper claims 500).
A released subset (FlashEval's ``representative_subset`` files) is judged the same way where given.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effigy.errors import ScoreMatrixError
from effigy.evaluate.flasheval.apply import score_variant
from effigy.evaluate.flasheval.matrix import ScoreMatrix
from effigy.evaluate.flasheval.readers import read_prompt_ids, read_scores
from effigy.evaluate.flasheval.search import (
    SearchSettings,
    Subset,
    anchor_points,
    default_margin,
    flasheval_search,
    random_subsets,
    stratified_subsets,
)
from effigy.evaluate.flasheval.splits import Split, read_split
from effigy.evaluate.flasheval.variants import VariantBuilder, VariantSpec
from effigy.evaluate.measure import Progress, machine_facts, no_progress
from effigy.evaluate.report import SettingsRecord
from effigy.metrics.ranking import margin_kendall_tau

log = logging.getLogger(__name__)
METHODS = ("flasheval", "random", "stratified", "anchor points")
MEASURES = ("kd", "tau_b")  # the paper's margin KD, and plain tau-b


@dataclass
class FlashEvalBenchSettings(SettingsRecord):
    matrix: str = "benchmarks/results/flasheval/t2i-shapes/score_matrix.json"
    metric: str | None = None  # an external matrix's table name (read_scores' default otherwise); the one metric run
    sizes: tuple[int, ...] = (10, 20, 50, 100, 200, 500)
    claim_size: int = 50  # FlashEval's subset in the paper's claim
    claim_random_size: int = 500
    random_sizes: tuple[int, ...] = (10, 20, 50, 100, 150, 200, 300, 500, 700, 1000, 1500, 2000)
    random_draws: int = 200
    splits: int = 5  # seeded model splits 0 .. splits - 1, each searched once with its own seed
    split_file: str | None = None  # a named split run beside them (FlashEval's train_id.pth, or effigy JSON)
    released: str | None = None  # a released subset (FlashEval's JSONL of prompts with ids) judged the same way
    rounds: int = 8
    subsets: int = 2000
    anchor_max_prompts: int = 6000  # Anchor Points holds a prompts x prompts distance matrix: skipped above this
    timing_variant: str = "unipc 8 steps"  # not in the matrix: the "new variant" ranked on the subset


class Judge:
    """A subset's held-out ranking quality on one split. The held-out rows and their full-set means are taken
    once per split, not once per subset (the bench judges thousands of subsets a split)."""

    def __init__(self, table: np.ndarray, split: Split, margin: float) -> None:
        self.margin = margin
        self.held = table[split.heldout]
        self.full = self.held.mean(axis=1)

    def __call__(self, subset: Subset) -> dict[str, float]:
        means = subset.means(self.held)
        return {"kd": float(margin_kendall_tau(means, self.full, self.margin)),
                "tau_b": float(margin_kendall_tau(means, self.full, 0.0))}


def _mean_of(scores: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(np.nanmean([s[m] for s in scores])) for m in MEASURES}


def _spread(per_split: list[dict[str, float]]) -> dict:
    """Mean, std and range over splits of each measure."""
    out = {}
    for measure in MEASURES:
        values = np.array([s[measure] for s in per_split], dtype=np.float64)
        out[measure] = {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
                        "max": float(values.max())}
    return out | {"splits": len(per_split)}


@dataclass
class _SplitRun:
    """Everything one split contributes: method x size scores, the random curve, the released subset's."""

    name: str
    split: Split
    margin: float
    by_size: dict[int, dict[str, dict[str, float]]]
    random_curve: dict[int, dict[str, float]]
    released: dict[str, float] | None
    found: dict[int, list[int]]  # FlashEval's subset at each size


def run_split(table: np.ndarray, split: Split, name: str, seed: int, kinds: list[str], released: list[int] | None,
              settings: FlashEvalBenchSettings) -> _SplitRun:
    """Every method at every size on one split, then the random reference curve."""
    judge = Judge(table, split, default_margin(table[split.train]))
    n_prompts = table.shape[1]
    by_size, subsets = {}, {}
    for size in settings.sizes:
        found = flasheval_search(table, split, judge.margin, SearchSettings(size=size, rounds=settings.rounds,
                                                                            subsets=settings.subsets, seed=seed))
        subsets[size] = found.prompts
        by_size[size] = {"flasheval": judge(found) | {"train_tau": found.train_tau},
                         "random": _mean_of([judge(s) for s in random_subsets(n_prompts, size, settings.random_draws,
                                                                               seed=1000 * seed + size)])}
        if len(set(kinds)) > 1:
            by_size[size]["stratified"] = _mean_of([judge(s) for s in stratified_subsets(
                kinds, size, settings.random_draws, seed=1000 * seed + size)])
        if n_prompts <= settings.anchor_max_prompts:
            by_size[size]["anchor points"] = judge(anchor_points(table, split, size, seed=seed))
    curve = {size: _mean_of([judge(s) for s in random_subsets(n_prompts, size, settings.random_draws,
                                                              seed=10_000 + 1000 * seed + size)])
             for size in settings.random_sizes if size < n_prompts}
    return _SplitRun(name, split, judge.margin, by_size, curve,
                     judge(Subset("released", released)) if released else None, subsets)


def random_match_size(curve: dict[int, float], target: float) -> float | None:
    """The random subset size whose mean held-out tau reaches ``target``, interpolated in log size between the
    sizes measured; None when even the largest falls short (the caller reports "more than" it)."""
    sizes = sorted(curve)
    if curve[sizes[0]] >= target:
        return float(sizes[0])
    for low, high in zip(sizes, sizes[1:]):
        if curve[high] >= target:
            share = (target - curve[low]) / max(curve[high] - curve[low], 1e-12)
            return float(np.exp(np.log(low) + share * (np.log(high) - np.log(low))))
    return None


def summarise(runs: list[_SplitRun], settings: FlashEvalBenchSettings) -> dict:
    """Seeded splits averaged, with the claim on them; the named split (where there is one) on its own."""
    seeded = [r for r in runs if r.name.startswith("seed ")]
    methods = sorted({m for r in seeded for size in r.by_size.values() for m in size}, key=METHODS.index)
    by_size = {size: {m: _spread([r.by_size[size][m] for r in seeded]) for m in methods} for size in settings.sizes}
    curve = {size: _mean_of([r.random_curve[size] for r in seeded]) for size in seeded[0].random_curve}
    found = {m: by_size[settings.claim_size]["flasheval"][m]["mean"] for m in MEASURES}
    released = _mean_of([r.released for r in seeded]) if seeded[0].released else None
    summary = {"by_size": by_size, "random_curve": curve, "claim": _claim(found, curve, settings, released)}
    if released:
        summary["released"] = _spread([r.released for r in seeded])
    for run in runs:
        if run not in seeded:
            summary["named_split"] = {"name": run.name, "margin": run.margin, "by_size": run.by_size,
                                      "random_curve": run.random_curve, "released": run.released,
                                      "claim": _claim(run.by_size[settings.claim_size]["flasheval"], run.random_curve,
                                                      settings, run.released)}
    return summary


def _claim(found: dict[str, float], curve: dict[int, dict[str, float]], settings: FlashEvalBenchSettings,
           released: dict[str, float] | None = None) -> dict:
    """The paper's 10x, per measure: FlashEval's subset at the claim size against random subsets of the claim's
    random size, the random size it does match, and (where given) the released subset."""
    claim = {}
    for measure in MEASURES:
        random_at = curve.get(settings.claim_random_size, {}).get(measure)
        claim[measure] = {"flasheval": found[measure], "random_at_claim_size": random_at,
                          "random_size_matched": random_match_size({s: v[measure] for s, v in curve.items()},
                                                                   found[measure]),
                          "meets_claim": random_at is not None and found[measure] >= random_at}
        if released is not None:
            claim[measure] |= {"released": released[measure], "beats_released": found[measure] >= released[measure]}
    return claim


def _splits(matrix: ScoreMatrix, settings: FlashEvalBenchSettings) -> list[tuple[str, Split, int]]:
    runs = [(f"seed {seed}", Split.halves(len(matrix.variants), seed), seed) for seed in range(settings.splits)]
    if settings.split_file:
        runs.append((Path(settings.split_file).name, read_split(Path(settings.split_file), matrix.names), 0))
    return runs


def matrix_name(settings: FlashEvalBenchSettings) -> str:
    """What the results are filed under: ``t2i-shapes`` for effigy's own matrix, else the matrix file or folder's
    name, with its prompt set's folder before it for FlashEval's released tree (``COCO-ImageReward``)."""
    path = Path(settings.matrix)
    if path.suffix == ".json":
        return "t2i-shapes"
    released_tree = path.is_dir() and not any(path.glob("*.json"))
    return f"{path.parent.name}-{path.name}" if released_tree else path.stem


@functools.lru_cache(maxsize=1)
def _read_once(path: str, metric: str | None, stamp: int) -> ScoreMatrix:
    """The matrix, read once per file version: the CLI checks the inputs, then the bench runs on the same read
    (a 40k-prompt tree takes seconds to parse and logs each model it leaves out: once)."""
    return read_scores(path, metric)


def check_inputs(settings: FlashEvalBenchSettings) -> tuple[ScoreMatrix, list[tuple[str, Split, int]], list[int] | None]:
    """Every input read and checked (matrix, metric, named split, released subset) before any work or any file."""
    path = Path(settings.matrix)
    stamp = path.stat().st_mtime_ns if path.exists() else 0
    matrix = _read_once(settings.matrix, settings.metric, stamp)
    if settings.metric:
        matrix.table(settings.metric)  # an unknown metric is refused here, with the matrix's metrics named
    return matrix, _splits(matrix, settings), _released_columns(matrix, settings.released)


def run_flasheval_bench(settings: FlashEvalBenchSettings, progress: Progress = no_progress) -> dict:
    matrix, splits, released = check_inputs(settings)
    chosen = [settings.metric] if settings.metric else matrix.metrics
    kinds = [p.get("kind", "") for p in matrix.prompts]
    advance = progress("splits x metrics", len(chosen) * len(splits))
    metrics, subsets = {}, {}
    for metric in chosen:
        table = matrix.table(metric)
        runs = []
        for name, split, seed in splits:
            runs.append(run_split(table, split, name, seed, kinds, released, settings))
            advance()
        metrics[metric] = summarise(runs, settings) | {"margins": {r.name: r.margin for r in runs}}
        subsets[f"{metric}_{settings.claim_size}"] = runs[0].found[settings.claim_size]  # split seed 0's
    timing = None
    if "prompt_set" in matrix.provenance:
        timing = time_new_variant(matrix, subsets[f"{chosen[0]}_{settings.claim_size}"], settings)
    else:
        log.info("%s is an external matrix: no generator of its variants here to time a new one", settings.matrix)
    return {"benchmark": "flasheval", "schema": 2, "model": matrix_name(settings), "settings": settings.to_dict(),
            "matrix": {"variants": len(matrix.variants), "prompts": len(matrix.prompts), "metrics": matrix.metrics,
                       "provenance": matrix.provenance},
            "splits": {name: split.names(matrix.names) for name, split, _ in splits},
            "released": None if released is None else {"file": settings.released, "prompts": len(released)},
            "metrics": metrics, "subsets": subsets, "timing": timing, "machine": machine_facts()}


def _released_columns(matrix: ScoreMatrix, path: str | None) -> list[int] | None:
    """The matrix columns of a released subset's prompts; ids the matrix lacks are logged and skipped."""
    if path is None:
        return None
    ids = read_prompt_ids(Path(path))
    column = {str(p["id"]): i for i, p in enumerate(matrix.prompts)}
    missing = [i for i in ids if i not in column]
    if len(missing) == len(ids):
        raise ScoreMatrixError(f"{path}: none of its {len(ids)} prompt ids is in the matrix; pass the subset searched "
                               "on this prompt set.")
    if missing:
        log.warning("%s: %d of its %d prompts are not in the matrix; judged on the other %d", path, len(missing),
                    len(ids), len(ids) - len(missing))
    return [column[i] for i in ids if i in column]


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
