"""Using a searched subset: score a new variant on its prompts only, and place it in the known ranking.

The known variants are ranked by their means on the same subset prompts (from the matrix), so the new
variant is compared like with like; their full-set means are reported beside for reference.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from effigy.errors import ScoreMatrixError
from effigy.evaluate.flasheval.matrix import ScoreMatrix
from effigy.evaluate.flasheval.search import SUBSET_FORMAT
from effigy.evaluate.flasheval.variants import VariantBuilder, VariantSpec
from effigy.serialize import read_json_file


def read_subset(path: str | Path) -> dict:
    """A subset record from ``effigy flasheval search``, checked enough to use."""
    record = read_json_file(path, "a subset from `effigy flasheval search`", ScoreMatrixError)
    if not isinstance(record, dict) or record.get("format") != SUBSET_FORMAT:
        raise ScoreMatrixError(f"{path} is not a FlashEval subset (format "
                               f"{record.get('format') if isinstance(record, dict) else None!r}, expected {SUBSET_FORMAT!r}).")
    _check_subset(Path(path), record)
    return record


MAX_PROMPTS = 100_000  # the largest prompt set `effigy flasheval build` makes


def _check_subset(path: Path, record: dict) -> None:
    """The subset record's schema, one rule at a time, naming the file (what `apply` relies on)."""
    from effigy.serialize import require

    def rule(condition: bool, text: str) -> None:
        require(condition, path, text, ScoreMatrixError)

    def is_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    indices = record.get("prompt_indices")
    rule(isinstance(indices, list) and 0 < len(indices) <= MAX_PROMPTS and all(is_int(i) and i >= 0 for i in indices),
         "prompt_indices must be a non-empty list of prompt columns (non-negative integers)")
    rule(len(set(indices)) == len(indices), "prompt_indices must name each prompt once")
    rule(isinstance(record.get("metric"), str) and record["metric"], "metric must name the matrix metric searched on")
    spec = record.get("prompt_set")
    if not isinstance(spec, dict):
        raise ScoreMatrixError(f"{path} was searched on an external matrix (no effigy prompt set): effigy can only "
                               "sample its own prompts; use a subset of a matrix from `effigy flasheval build`.")
    rule(is_int(spec.get("count")) and 2 <= spec["count"] <= MAX_PROMPTS,
         f"prompt_set.count must be an integer from 2 to {MAX_PROMPTS:,}")
    rule(isinstance(spec.get("split"), str) and is_int(spec.get("seed")) and spec["seed"] >= 0,
         "prompt_set needs split (a name) and seed (a non-negative integer)")
    rule(max(indices) < spec["count"], f"prompt_indices name prompt {max(indices)} of a {spec['count']}-prompt set")
    prompts = record.get("prompts", [])
    rule(isinstance(prompts, list) and all(isinstance(p, dict) for p in prompts),
         "prompts, where given, must be a list of objects (id, text)")
    weights = record.get("weights")
    rule(weights is None or (isinstance(weights, list) and len(weights) == len(indices) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0 for w in weights)),
        "weights, where given, must be one positive finite number per prompt index")


def subset_scenes(record: dict) -> list:
    """The subset's prompts as scenes of the seeded world (the matrix's prompt set, then the subset's columns)."""
    from effigy.evaluate.t2i import prompt_set

    spec = record["prompt_set"]
    scenes = prompt_set(spec["count"], spec["split"], spec["seed"])
    if max(record["prompt_indices"]) >= len(scenes):
        raise ScoreMatrixError(f"the subset names prompt {max(record['prompt_indices'])} of a {len(scenes)}-prompt set.")
    picked = [scenes[i] for i in record["prompt_indices"]]
    texts = [p.get("text") for p in record.get("prompts", [])]
    if texts and texts != [s.caption for s in picked]:
        raise ScoreMatrixError("the subset's prompt texts differ from the world's prompts at those positions: it was "
                               "made with another version of the shapes world; search again.")
    return picked


def score_variant(spec: VariantSpec, scenes: list, seed: int, metric: str,
                  builder: VariantBuilder | None = None) -> tuple[np.ndarray, float]:
    """Per-prompt ``metric`` of ``spec`` on ``scenes`` and the seconds it took (model build included)."""
    from effigy.evaluate.t2i import score_images

    builder = builder or VariantBuilder()
    builder.suite(spec.generator)  # judges load outside the timed part: they are there before any ranking
    start = time.perf_counter()
    images = builder.sampler_for(spec)(scenes, seed)
    rows = score_images(builder.suite(spec.generator), scenes, images)
    return np.array([r[metric] for r in rows], dtype=np.float64), time.perf_counter() - start


def place_variant(matrix: ScoreMatrix, record: dict, spec: VariantSpec) -> dict:
    """The new variant's subset score, and its rank among the matrix's variants by their subset scores."""
    known_table = matrix.table(record["metric"])  # a metric the matrix lacks is refused before any sampling
    scenes = subset_scenes(record)
    if len(matrix.prompts) != record["prompt_set"]["count"]:
        raise ScoreMatrixError(f"the subset was searched on a {record['prompt_set']['count']}-prompt matrix, this one "
                               f"has {len(matrix.prompts)}: pass the matrix it was searched on (--scores).")
    scores, seconds = score_variant(spec, scenes, record["prompt_set"]["seed"], record["metric"])
    weights = np.ones(len(scores)) if record.get("weights") is None else np.asarray(record["weights"])
    score = float(scores @ weights / weights.sum())
    known = known_table[:, record["prompt_indices"]] @ weights / weights.sum()
    order = np.argsort(-known, kind="stable")
    rank = int((known > score).sum()) + 1
    above = matrix.names[order[rank - 2]] if rank > 1 else None
    below = matrix.names[order[rank - 1]] if rank <= len(order) else None
    return {"variant": spec.to_dict(), "score": score, "seconds": seconds, "rank": rank, "of": len(known) + 1,
            "above": above, "below": below}
