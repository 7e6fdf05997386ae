"""Score matrices: one [variants, prompts] table per metric, the data FlashEval searches.

Saved as ``<name>.safetensors`` (one float64 tensor per metric) beside ``<name>.json`` (variant definitions,
prompt ids and texts, metrics, seed, code version), so a matrix is reproducible from its own files and
never needs unpickling. Matrices a user already has come in through
:func:`effigy.evaluate.flasheval.readers.read_scores`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from effigy.errors import ScoreMatrixError
from effigy.serialize import read_json_file

log = logging.getLogger(__name__)
FORMAT = "effigy-score-matrix/1"


@dataclass
class ScoreMatrix:
    """Per-prompt scores of several variants.

    Attributes:
        scores: metric -> [variants, prompts] array.
        variants: one definition per row (at least a ``name``).
        prompts: one record per column (at least an ``id``; ``text`` and ``kind`` where known).
        provenance: how the matrix was made (seed, code version, command), kept with the data.
    """

    scores: dict[str, np.ndarray]
    variants: list[dict]
    prompts: list[dict]
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.scores:
            raise ScoreMatrixError("a score matrix needs at least one metric.")
        shape = (len(self.variants), len(self.prompts))
        for metric, table in self.scores.items():
            if table.shape != shape:
                raise ScoreMatrixError(f"metric {metric!r} has a {table.shape} table for {shape[0]} variants x "
                                       f"{shape[1]} prompts; every metric needs one score per variant and prompt.")
            if not np.isfinite(table).all():
                raise ScoreMatrixError(f"metric {metric!r} holds NaN or infinite scores; drop or rescore those "
                                       "variants first.")

    @property
    def names(self) -> list[str]:
        return [v["name"] for v in self.variants]

    @property
    def metrics(self) -> list[str]:
        return list(self.scores)

    def table(self, metric: str) -> np.ndarray:
        if metric not in self.scores:
            raise ScoreMatrixError(f"metric {metric!r} is not in this matrix: it has {', '.join(self.scores)}.")
        return self.scores[metric]

    def select_variants(self, rows: list[int]) -> "ScoreMatrix":
        return replace(self, scores={m: t[rows] for m, t in self.scores.items()},
                       variants=[self.variants[i] for i in rows])

    def save(self, path: str | Path) -> Path:
        """``path`` without suffix -> ``path.safetensors`` + ``path.json``; returns the JSON's path."""
        from safetensors.numpy import save_file

        base = Path(path).with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        save_file({m: np.ascontiguousarray(t, dtype=np.float64) for m, t in self.scores.items()},
                  str(base.with_suffix(".safetensors")))
        meta = {"format": FORMAT, "metrics": self.metrics, "variants": self.variants, "prompts": self.prompts,
                "provenance": self.provenance}
        base.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
        return base.with_suffix(".json")

    @classmethod
    def load(cls, path: str | Path) -> "ScoreMatrix":
        from safetensors.numpy import load_file

        base = Path(path).with_suffix("")
        meta = read_json_file(base.with_suffix(".json"), "a score matrix from `effigy flasheval build`",
                              ScoreMatrixError)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ScoreMatrixError(f"{base.with_suffix('.json')} is not an effigy score matrix (format "
                                   f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected {FORMAT!r}).")
        weights = base.with_suffix(".safetensors")
        if not weights.is_file():
            raise ScoreMatrixError(f"{weights} is missing: a score matrix is the JSON and its .safetensors together.")
        try:
            tables = load_file(str(weights))
        except Exception as exc:  # safetensors' own error types
            raise ScoreMatrixError(f"{weights} is not a readable safetensors file ({exc}); build it again.") from None
        _check_meta(base.with_suffix(".json"), meta, tables)
        return cls({m: tables[m].astype(np.float64) for m in meta["metrics"]}, meta["variants"], meta["prompts"],
                   meta["provenance"])


def _check_meta(path: Path, meta: dict, tables: dict) -> None:
    """The matrix file's schema, one rule at a time, naming the file: what the search and the bench rely on."""
    from effigy.serialize import require

    def rule(condition: bool, text: str) -> None:
        require(condition, path, text, ScoreMatrixError)

    metrics, variants, prompts = meta.get("metrics"), meta.get("variants"), meta.get("prompts")
    rule(isinstance(metrics, list) and metrics and all(isinstance(m, str) for m in metrics),
         "'metrics' must be a non-empty list of metric names")
    rule(isinstance(variants, list) and all(isinstance(v, dict) and isinstance(v.get("name"), str) for v in variants),
         "'variants' must be a list of objects, each with a 'name'")
    rule(len({v["name"] for v in variants}) == len(variants), "variant names must be distinct")
    rule(isinstance(prompts, list) and all(isinstance(p, dict) and "id" in p for p in prompts),
         "'prompts' must be a list of objects, each with an 'id'")
    rule(isinstance(meta.get("provenance"), dict), "'provenance' must be an object (how the matrix was made)")
    for metric in metrics:
        rule(metric in tables, f"metric {metric!r} has no table in the .safetensors file")
        rule(tables[metric].ndim == 2 and np.issubdtype(tables[metric].dtype, np.floating),
             f"metric {metric!r} must be a 2-D float table [variants, prompts]")
