"""Score matrices: one [variants, prompts] table per metric, the data FlashEval searches.

Saved as ``<name>.safetensors`` (one float64 tensor per metric) beside ``<name>.json`` (variant definitions,
prompt ids and texts, metrics, seed, code version), so a matrix is reproducible from its own files and
never needs unpickling. Matrices a user already has come in through :func:`read_scores`: CSV or NPZ of
[models x prompts], or FlashEval's released layout (a folder of one JSON per model configuration mapping
prompt id -> score).
"""
from __future__ import annotations

import csv
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


def read_scores(path: str | Path, metric: str | None = None) -> ScoreMatrix:
    """A matrix from a file or folder a user already has.

    Args:
        path: an effigy matrix (``.json`` with its ``.safetensors``), a ``.csv`` (first column the model
            name, header row the prompt ids), an ``.npz`` (``scores`` [models, prompts], optional ``models``
            and ``prompts``), or a folder of FlashEval per-model JSON files (prompt id -> score).
        metric: the metric name the single table is stored under (effigy matrices keep their own); default: the
            metric folder's name for FlashEval's released tree (``.../COCO/ImageReward``), else ``score``.
    Returns:
        The matrix; models scored on fewer prompts than the others are logged and left out.
    """
    path = Path(path)
    if path.is_dir():
        return _from_per_model_json(path, metric)
    if not path.exists():
        raise ScoreMatrixError(f"no score file at {path}: pass an effigy matrix, a CSV or NPZ of [models x prompts], "
                               "or a folder of per-model JSON files.")
    readers = {".json": lambda: ScoreMatrix.load(path), ".csv": lambda: _from_csv(path, metric or "score"),
               ".npz": lambda: _from_npz(path, metric or "score")}
    if path.suffix not in readers:
        raise ScoreMatrixError(f"{path}: unknown score file type {path.suffix!r}; use .json (effigy), .csv, .npz or a "
                               "folder of per-model JSON files.")
    return readers[path.suffix]()


def _from_csv(path: Path, metric: str) -> ScoreMatrix:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]  # blank lines skipped
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise ScoreMatrixError(f"{path} is not a readable score CSV ({type(exc).__name__}); save it as UTF-8 text "
                               "with a header of prompt ids and a row per model.") from None
    if len(rows) < 3 or len(rows[0]) < 3:
        raise ScoreMatrixError(f"{path}: a score CSV needs a header of prompt ids and a row per model (name, then "
                               "one score per prompt), at least two models and two prompts.")
    prompts = rows[0][1:]
    by_model = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) > len(rows[0]) or row[0] in by_model:
            problem = "a model named twice" if row[0] in by_model else "more cells than the header"
            raise ScoreMatrixError(f"{path} row {line}: {problem}; each row is one model's name and one score per "
                                   "header prompt.")
        try:
            by_model[row[0]] = {p: float(v) for p, v in zip(prompts, row[1:]) if v.strip() != ""}
        except ValueError:
            raise ScoreMatrixError(f"{path} row {line}: a score that is not a number; every cell after the model "
                                   "name is one prompt's score.") from None
    return _complete_models(by_model, metric, str(path))


def _from_npz(path: Path, metric: str) -> ScoreMatrix:
    try:
        with np.load(path, allow_pickle=False) as data:
            scores = np.asarray(data["scores"], dtype=np.float64)
            models = [str(m) for m in data["models"]] if "models" in data else None
            prompts = [str(p) for p in data["prompts"]] if "prompts" in data else None
    except (KeyError, ValueError, TypeError, OSError, EOFError) as exc:  # object arrays need pickle: refused
        raise ScoreMatrixError(f"{path}: not an NPZ with a numeric 'scores' array [models, prompts] and optional "
                               f"string 'models' / 'prompts' ({type(exc).__name__}).") from None
    if scores.ndim != 2:
        raise ScoreMatrixError(f"{path}: 'scores' must be [models, prompts], got shape {scores.shape}.")
    models = models or [f"model{i}" for i in range(len(scores))]
    prompts = prompts or [str(i) for i in range(scores.shape[1])]
    if len(models) != len(scores) or len(prompts) != scores.shape[1] or len(set(models)) != len(models):
        raise ScoreMatrixError(f"{path}: 'models' ({len(models)}) and 'prompts' ({len(prompts)}) must name each row "
                               f"and column of 'scores' {scores.shape} once.")
    by_model = {m: {p: float(v) for p, v in zip(prompts, row) if np.isfinite(v)} for m, row in zip(models, scores)}
    return _complete_models(by_model, metric, str(path))


def _from_per_model_json(folder: Path, metric: str | None) -> ScoreMatrix:
    """One JSON per model configuration mapping prompt id -> score: in ``folder`` itself, or (FlashEval's released
    tree, ``<metric>/<family>/<metric>-<config>-score.json``) one folder per model family, the model then named
    ``family/config`` (config names repeat across families)."""
    files = sorted(folder.glob("*.json"))
    nested = not files
    if nested:
        files = sorted(folder.glob("*/*.json"))
    if not files:
        raise ScoreMatrixError(f"{folder} holds no .json files, at its top or one folder down; FlashEval's layout is "
                               "one JSON per model configuration mapping prompt id -> score (in family folders in "
                               "its released tree).")
    by_model = {}
    for file in files:
        data = read_json_file(file, "a FlashEval score file (prompt id -> score)", ScoreMatrixError)
        if not isinstance(data, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 and np.isfinite(v) for v in data.values()):
            raise ScoreMatrixError(f"{file}: expected a JSON object mapping prompt id -> finite numeric score.")
        by_model[_model_name(file, folder.name) if nested else file.stem] = {str(k): float(v) for k, v in data.items()}
    metric = metric or (folder.name if nested else "score")
    if nested:
        log.info("%s: FlashEval's released tree, %d model configurations in %d family folders", folder, len(by_model),
                 len({file.parent for file in files}))
    return _complete_models(by_model, metric, str(folder))


def _model_name(file: Path, metric_folder: str) -> str:
    """``family/config`` of a released score file ``<family>/<metric>-<config>-score.json``."""
    config = file.stem.removeprefix(f"{metric_folder}-").removesuffix("-score")
    return f"{file.parent.name}/{config}"


def _complete_models(by_model: dict[str, dict[str, float]], metric: str, source: str) -> ScoreMatrix:
    """The models scored on the most prompts, on the prompts they share; the rest reported and left out."""
    full = max((len(s) for s in by_model.values()), default=0)
    left_out = sorted(m for m, s in by_model.items() if len(s) < full)
    for model in left_out:
        log.warning("%s: model %r is scored on %d of %d prompts; left out (not padded)", source, model,
                    len(by_model[model]), full)
    kept = {m: s for m, s in by_model.items() if m not in left_out}
    prompts = sorted(set.intersection(*(set(s) for s in kept.values())))
    if len(kept) < 2 or len(prompts) < 2 or any(len(s) != len(prompts) for s in kept.values()):
        raise ScoreMatrixError(f"{source}: after leaving out models scored on fewer prompts, {len(kept)} models share "
                               f"{len(prompts)} prompts; a search needs at least two models on one common prompt set.")
    names = sorted(kept)
    table = np.array([[kept[m][p] for p in prompts] for m in names], dtype=np.float64)
    return ScoreMatrix({metric: table}, [{"name": m} for m in names], [{"id": p} for p in prompts],
                       {"source": source, "left_out": left_out})
