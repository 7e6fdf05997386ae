"""Score matrices a user already has, in the layouts they come in, read into one :class:`ScoreMatrix`.

- effigy's own matrix (``.json`` beside its ``.safetensors``);
- a wide table: ``.csv`` (first column the model, header row the prompt ids) or ``.npz`` (``scores`` [models,
  prompts], optional ``models`` and ``prompts``);
- a long table: ``.csv``, ``.jsonl`` or ``.parquet`` with one row per score and columns ``model``, ``prompt``,
  ``score`` and (optionally) ``metric``: what an evaluation harness logs;
- per-model JSON (prompt id -> score): a flat folder of them, or FlashEval's released tree
  (``<metric>/<family>/<metric>-<config>-score.json``), where the model is ``family/config`` because config
  names repeat across families.

Whatever the layout, the models kept are the ones scored on every prompt the best-covered model has; each
model left out (an empty file, a copy of another prompt set's scores filed in the wrong folder) gets one
logged line with its id count and its overlap with the kept prompts, so nothing is padded or joined silently.
"""
from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from effigy.errors import ScoreMatrixError
from effigy.evaluate.flasheval.matrix import ScoreMatrix
from effigy.serialize import read_json_file

log = logging.getLogger(__name__)
LONG_COLUMNS = ("model", "prompt", "score")  # and an optional "metric"
DEFAULT_METRIC = "score"
Scores = dict[str, dict[str, float]]  # model -> prompt id -> score


def read_scores(path: str | Path, metric: str | None = None) -> ScoreMatrix:
    """A matrix from a file or folder a user already has.

    Args:
        path: an effigy matrix (``.json``), a wide ``.csv`` / ``.npz``, a long ``.csv`` / ``.jsonl`` /
            ``.parquet`` (columns model, prompt, score[, metric]), or a folder of per-model JSON files.
        metric: the metric to read. A long table with a ``metric`` column keeps only that metric's rows
            (default: every metric it holds); a single-table layout stores its table under this name
            (default: the metric folder's name for FlashEval's released tree, ``.../COCO/ImageReward``,
            else ``score``). effigy matrices keep their own names.
    Returns:
        The matrix; models scored on fewer prompts than the others are logged and left out.
    """
    path = Path(path)
    if path.is_dir():
        return _from_per_model_json(path, metric)
    if not path.exists():
        raise ScoreMatrixError(f"no score file at {path}: pass an effigy matrix, a CSV / NPZ of [models x prompts], a "
                               "CSV / JSONL / Parquet table of model, prompt, score rows, or a folder of per-model "
                               "JSON files.")
    readers = {".json": lambda: ScoreMatrix.load(path), ".csv": lambda: _from_csv(path, metric),
               ".npz": lambda: _from_npz(path, metric or DEFAULT_METRIC),
               ".jsonl": lambda: _from_long(_jsonl_rows(path), metric, path),
               ".parquet": lambda: _from_long(_parquet_rows(path), metric, path)}
    if path.suffix not in readers:
        raise ScoreMatrixError(f"{path}: unknown score file type {path.suffix!r}; use .json (effigy), .csv, .npz, "
                               ".jsonl, .parquet or a folder of per-model JSON files.")
    return readers[path.suffix]()


# -- wide tables ------------------------------------------------------------------------------------------------

def _csv_rows(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]  # blank lines skipped
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise ScoreMatrixError(f"{path} is not a readable score CSV ({type(exc).__name__}); save it as UTF-8 "
                               "text.") from None


def _from_csv(path: Path, metric: str | None) -> ScoreMatrix:
    """A long table when the header names model, prompt and score columns; else one row per model."""
    rows = _csv_rows(path)
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if set(LONG_COLUMNS) <= set(header):
        return _from_long(_long_csv_rows(rows, header), metric, path)
    if len(rows) < 3 or len(rows[0]) < 3:
        raise ScoreMatrixError(f"{path}: a score CSV is either long (a header with model, prompt, score[, metric] "
                               "and a row per score) or wide (a header of prompt ids and a row per model: name, "
                               "then one score per prompt), with at least two models and two prompts.")
    prompts = rows[0][1:]
    by_model: Scores = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) > len(rows[0]) or row[0] in by_model:
            problem = "a model named twice" if row[0] in by_model else "more cells than the header"
            raise ScoreMatrixError(f"{path} row {line}: {problem}; each row is one model's name and one score per "
                                   "header prompt.")
        by_model[row[0]] = {p: _number(v, path, line) for p, v in zip(prompts, row[1:]) if v.strip() != ""}
    return _complete_models(by_model, metric or DEFAULT_METRIC, str(path))


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


# -- long tables: one row per (model, prompt[, metric]) score ----------------------------------------------------

Row = tuple[int, str, str, str | None, object]  # line, model, prompt, metric, score as read


def _long_csv_rows(rows: list[list[str]], header: list[str]) -> Iterator[Row]:
    at = {name: header.index(name) for name in (*LONG_COLUMNS, "metric") if name in header}

    def cell(row: list[str], name: str) -> str:
        return row[at[name]].strip() if at[name] < len(row) else ""

    for line, row in enumerate(rows[1:], start=2):
        metric = cell(row, "metric") or None if "metric" in at else None
        yield line, cell(row, "model"), cell(row, "prompt"), metric, cell(row, "score")


def _jsonl_rows(path: Path) -> Iterator[Row]:
    try:
        with path.open(encoding="utf-8") as handle:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                record = json.loads(text)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                yield (line, str(record.get("model", "")), str(record.get("prompt", "")),
                       None if record.get("metric") is None else str(record["metric"]), record.get("score"))
    except (UnicodeDecodeError, ValueError, OSError) as exc:
        raise ScoreMatrixError(f"{path} is not a JSONL score table ({type(exc).__name__}); write one JSON object per "
                               "line with model, prompt, score (and metric).") from None


def _parquet_rows(path: Path) -> Iterator[Row]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise ScoreMatrixError(f"{path}: reading Parquet needs pyarrow; pip install 'effigy[tables]', or save the "
                               "table as CSV or JSONL.") from None
    try:
        table = parquet.read_table(path)
    except Exception as exc:  # pyarrow's own error types
        raise ScoreMatrixError(f"{path} is not a readable Parquet file ({type(exc).__name__}).") from None
    missing = [name for name in LONG_COLUMNS if name not in table.column_names]
    if missing:
        raise ScoreMatrixError(f"{path}: a Parquet score table needs columns model, prompt, score (and optionally "
                               f"metric); it lacks {', '.join(missing)}.")
    columns = {name: table.column(name).to_pylist() for name in (*LONG_COLUMNS, "metric") if name in table.column_names}
    metrics = columns.get("metric", [None] * table.num_rows)
    for line, (model, prompt, metric, score) in enumerate(zip(columns["model"], columns["prompt"], metrics,
                                                             columns["score"]), start=1):
        yield line, str(model), str(prompt), None if metric is None else str(metric), score


def _from_long(rows: Iterable[Row], metric: str | None, path: Path) -> ScoreMatrix:
    """One table per metric from score rows; a (model, prompt, metric) given twice is refused, not averaged."""
    by_metric: dict[str, Scores] = {}
    for line, model, prompt, row_metric, score in rows:
        if not model or not prompt:
            raise ScoreMatrixError(f"{path} row {line}: no model or prompt; every row needs model, prompt and score.")
        name = row_metric or metric or DEFAULT_METRIC
        if metric is not None and row_metric is not None and row_metric != metric:
            continue
        scores = by_metric.setdefault(name, {}).setdefault(model, {})
        if prompt in scores:
            raise ScoreMatrixError(f"{path} row {line}: model {model!r} is scored twice on prompt {prompt!r} for "
                                   f"{name!r}; keep one score per model, prompt and metric.")
        scores[prompt] = _number(score, path, line)
    if not by_metric:
        wanted = f" for metric {metric!r}" if metric else ""
        raise ScoreMatrixError(f"{path}: no score rows{wanted}; a long table has one row per model, prompt (and "
                               "metric) with its score.")
    return _join_metrics({name: _complete_table(scores, f"{path} [{name}]") for name, scores in by_metric.items()},
                         str(path))


def _join_metrics(tables: dict[str, tuple[list[str], list[str], np.ndarray]], source: str) -> ScoreMatrix:
    """The models and prompts every metric covers; a model one metric lacks is logged and left out of all."""
    names = sorted(set.intersection(*(set(t[0]) for t in tables.values())))
    prompts = sorted(set.intersection(*(set(t[1]) for t in tables.values())))
    for metric, (metric_names, metric_prompts, _) in tables.items():
        for model in sorted(set(metric_names) - set(names)):
            log.warning("%s: model %r is not complete in every metric; left out of %r too", source, model, metric)
        if len(metric_prompts) != len(prompts):
            log.warning("%s: %d prompts of %r are not scored in every metric; left out", source,
                        len(metric_prompts) - len(prompts), metric)
    if len(names) < 2 or len(prompts) < 2:
        raise ScoreMatrixError(f"{source}: the metrics share {len(names)} complete models on {len(prompts)} prompts; "
                               "a search needs at least two, or pass --metric to read one metric.")
    scores = {}
    for metric, (metric_names, metric_prompts, table) in tables.items():
        rows = [metric_names.index(m) for m in names]
        column = {p: i for i, p in enumerate(metric_prompts)}
        scores[metric] = table[np.ix_(rows, [column[p] for p in prompts])]
    left_out = sorted(set().union(*(t[0] for t in tables.values())) - set(names))
    return ScoreMatrix(scores, [{"name": m} for m in names], [{"id": p} for p in prompts],
                       {"source": source, "left_out": left_out})


def _number(value: object, path: Path, line: int) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not np.isfinite(number):
        raise ScoreMatrixError(f"{path} row {line}: score {value!r} is not a number; every score must be a finite number.")
    return number


# -- per-model JSON ---------------------------------------------------------------------------------------------

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
    metric = metric or (folder.name if nested else DEFAULT_METRIC)
    if nested:
        log.info("%s: FlashEval's released tree, %d model configurations in %d family folders", folder, len(by_model),
                 len({file.parent for file in files}))
    return _complete_models(by_model, metric, str(folder))


def _model_name(file: Path, metric_folder: str) -> str:
    """``family/config`` of a released score file ``<family>/<metric>-<config>-score.json``."""
    config = file.stem.removeprefix(f"{metric_folder}-").removesuffix("-score")
    return f"{file.parent.name}/{config}"


# -- completeness -----------------------------------------------------------------------------------------------

def _complete_table(by_model: Scores, source: str) -> tuple[list[str], list[str], np.ndarray]:
    """The models scored on the most prompts, on the prompts they share: names, prompt ids, [models, prompts]."""
    full = max((len(s) for s in by_model.values()), default=0)
    left_out = sorted(m for m, s in by_model.items() if len(s) < full)
    kept = {m: s for m, s in by_model.items() if m not in left_out}
    prompts = sorted(set.intersection(*(set(s) for s in kept.values()))) if kept else []
    for model in left_out:
        overlap = len(set(by_model[model]) & set(prompts))
        log.warning("%s: model %r is scored on %d of %d prompts (%d of its ids among them); left out, not padded",
                    source, model, len(by_model[model]), full, overlap)
    if len(kept) < 2 or len(prompts) < 2 or any(len(s) != len(prompts) for s in kept.values()):
        raise ScoreMatrixError(f"{source}: after leaving out models scored on fewer prompts, {len(kept)} models share "
                               f"{len(prompts)} prompts; a search needs at least two models on one common prompt set.")
    names = sorted(kept)
    log.info("%s: %d models on %d prompts", source, len(names), len(prompts))
    return names, prompts, np.array([[kept[m][p] for p in prompts] for m in names], dtype=np.float64)


def _complete_models(by_model: Scores, metric: str, source: str) -> ScoreMatrix:
    names, prompts, table = _complete_table(by_model, source)
    return ScoreMatrix({metric: table}, [{"name": m} for m in names], [{"id": p} for p in prompts],
                       {"source": source, "left_out": sorted(set(by_model) - set(names))})


def read_prompt_ids(path: Path) -> list[str]:
    """The prompt ids of a subset: FlashEval's released ``representative_subset`` file (one JSON prompt with its
    ``id`` per line), effigy's subset record (its ``prompts``), or a JSON list of ids."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScoreMatrixError(f"{path}: no readable subset file ({type(exc).__name__}).") from None
    try:
        records = json.loads(text)
        records = records.get("prompts") if isinstance(records, dict) else records
    except json.JSONDecodeError:
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            records = None
    ids = [str(r["id"]) if isinstance(r, dict) and "id" in r else r for r in records or []]
    if not ids or not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in ids):
        raise ScoreMatrixError(f"{path}: a subset is one JSON prompt with an 'id' per line (FlashEval's released "
                               "files), an effigy subset record, or a JSON list of prompt ids.")
    return [str(i) for i in ids]
