"""Which models a subset search may read (training) and which it is judged on (held-out).

A split is fixed by a seed (a random share held out), given by name (a user who keeps their own held-out
models), or FlashEval's own: the paper's ``train_id.pth`` (indices into its 78 model configurations) mapped to
model names through the order its ``configs/get_score.yaml`` lists them in. That file is read with
``torch.load(weights_only=True)``, which rebuilds tensors and plain containers and refuses any other object:
a released file can not run code here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effigy.errors import ScoreMatrixError
from effigy.serialize import read_json_file

log = logging.getLogger(__name__)
RELEASE_ORDER = Path("configs/get_score.yaml")  # in FlashEval's release, beside Image_score/


@dataclass
class Split:
    """Training and held-out model rows of a score matrix."""

    train: list[int]
    heldout: list[int]

    @classmethod
    def random(cls, n_models: int, seed: int = 0, heldout_fraction: float = 0.5) -> "Split":
        """``heldout_fraction`` of the models held out at random (0: search on every model, judge on none)."""
        if not 0 <= heldout_fraction < 1:
            raise ScoreMatrixError(f"held-out fraction {heldout_fraction}: choose from 0 (search on every model) up "
                                   "to, not including, 1.")
        trained = int(n_models * (1 - heldout_fraction))  # the first ``trained`` of a seeded permutation
        held = n_models - trained
        if n_models - held < 2 or (heldout_fraction and held < 2):
            raise ScoreMatrixError(f"{n_models} models with {heldout_fraction:g} held out: the search needs at least "
                                   "two training models and a held-out side at least two; add models or change "
                                   "--heldout-fraction.")
        order = np.random.default_rng(seed).permutation(n_models)
        return cls(sorted(order[:trained].tolist()), sorted(order[trained:].tolist()))

    @classmethod
    def halves(cls, n_models: int, seed: int = 0) -> "Split":
        """Half the models held out: the default protocol."""
        if n_models < 4:
            raise ScoreMatrixError(f"{n_models} variants: a train / held-out split needs at least four (two a side).")
        return cls.random(n_models, seed, 0.5)

    @classmethod
    def from_names(cls, names: list[str], train: list[str], source: str) -> "Split":
        """The models named in ``train`` train; every other model of the matrix is held out. Names the matrix
        lacks (left out as incomplete, or never scored) are logged and skipped."""
        known = set(names)
        missing = sorted(set(train) - known)
        if missing:
            log.warning("%s: %d training models are not in the matrix (incomplete or absent), skipped: %s", source,
                        len(missing), ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        chosen = set(train) & known
        split = cls([i for i, n in enumerate(names) if n in chosen], [i for i, n in enumerate(names) if n not in chosen])
        if len(split.train) < 2 or len(split.heldout) < 2:
            raise ScoreMatrixError(f"{source}: {len(split.train)} training and {len(split.heldout)} held-out models "
                                   "of this matrix; a split needs at least two a side.")
        return split

    def names(self, names: list[str]) -> dict[str, list[str]]:
        return {"train": [names[i] for i in self.train], "heldout": [names[i] for i in self.heldout]}


def read_split(path: Path, names: list[str]) -> Split:
    """A split from a file: effigy's JSON (``{"train": [model names]}``, e.g. a subset record's ``split``) or
    FlashEval's ``train_id.pth`` (its model order from the release's ``configs/get_score.yaml``)."""
    if path.suffix == ".pth":
        return Split.from_names(names, paper_training_models(path), str(path))
    record = read_json_file(path, 'a split: {"train": [model names]}', ScoreMatrixError)
    train = record.get("split", record).get("train") if isinstance(record, dict) else None
    if not isinstance(train, list) or not all(isinstance(n, str) for n in train):
        raise ScoreMatrixError(f'{path}: a split is a JSON object {{"train": [model names]}} (a subset record\'s '
                               '"split" also serves); every other model is held out.')
    return Split.from_names(names, train, str(path))


def paper_training_models(train_id: Path) -> list[str]:
    """FlashEval's training models: ``train_id.pth`` indices mapped through the release's model order."""
    order = release_model_order(_release_root(train_id) / RELEASE_ORDER)
    indices = _index_tensor(train_id)
    if indices.min() < 0 or indices.max() >= len(order):
        raise ScoreMatrixError(f"{train_id}: indices {indices.min()}..{indices.max()} do not fit the release's "
                               f"{len(order)} model configurations.")
    return [order[i] for i in indices.tolist()]


def release_model_order(config: Path) -> list[str]:
    """The release's model configurations in its own order (``family/<solver>step-<precision>``): full
    precision models x solvers, then quantized models x solvers x bit widths, as its score script stacks them."""
    import yaml

    try:
        settings = yaml.safe_load(config.read_text(encoding="utf-8"))
        items = {key: [x.strip() for x in str(settings[key]).split(",")] for key in
                 ("model_names", "solver_names", "enames", "q_model_names", "q_solver_names", "q_enames")}
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ScoreMatrixError(f"{config}: FlashEval's model order (configs/get_score.yaml of the release, with "
                               f"model_names, solver_names, enames and their q_ twins) is unreadable "
                               f"({type(exc).__name__}).") from None
    full = [f"{m}/{s}step-{e}" for m in items["model_names"] for s in items["solver_names"] for e in items["enames"]]
    quantized = [f"{m}/{s}step-{e}" for m in items["q_model_names"] for s in items["q_solver_names"]
                 for e in items["q_enames"]]
    return full + quantized


def _release_root(train_id: Path) -> Path:
    """``<root>/Image_score/ranking_different_model/train_id.pth`` -> ``<root>``."""
    for parent in train_id.resolve().parents:
        if (parent / RELEASE_ORDER).is_file():
            return parent
    raise ScoreMatrixError(f"{train_id}: no {RELEASE_ORDER} above it; the paper's split indexes the model order "
                           "that file lists, so pass the train_id.pth inside FlashEval's release.")


def _index_tensor(path: Path) -> np.ndarray:
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch warns of pickle protocols it may not parse; the refusal below says it
            warnings.simplefilter("ignore", UserWarning)
            value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's restricted unpickler raises several types; none may pass as a traceback
        raise ScoreMatrixError(f"{path}: not a tensor file torch can read without running code "
                               f"({type(exc).__name__}).") from None
    if not isinstance(value, torch.Tensor) or value.ndim != 1 or value.dtype.is_floating_point:
        raise ScoreMatrixError(f"{path}: expected one 1-D integer tensor of model indices.")
    return value.numpy().astype(np.int64)
