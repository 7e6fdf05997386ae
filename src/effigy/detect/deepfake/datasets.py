"""A team's own deepfake data: DeepfakeBench's dataset JSON and plain ``real/`` + ``fake/<method>/`` folders, read
into one list of labelled frames (which video each frame is of, which method made it).

DeepfakeBench (https://github.com/SCLBD/DeepfakeBench) indexes every preprocessed dataset (FaceForensics++,
Celeb-DF, DFDC, DF40, ...) as ``{dataset: {label: {split: {[compression]: {video: {"label", "frames"}}}}}}``:
FaceForensics++-style datasets have a compression level (``c23``, ``c40``, ``raw``) under the split, the others
not; its configs call every label whose name holds "real" (``FF-real``, ``Celeb-real``, ``DFDC_Real``) real and
the rest fake, each label a method. Frame paths are as its preprocessing wrote them: absolute, or relative to a
root (``--root``; by default the JSON's folder and then its parents are tried).

The plain layout (:mod:`effigy.detect.datasets`): ``DIR/[SPLIT/]real/`` and ``DIR/[SPLIT/]fake/<method>/``, each
holding images (one image, one "video") or folders of frames (one folder, one video).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from effigy.detect.datasets import (
    DEEPFAKE,
    LabelledFrame,
    check_both_classes,
    check_split,
    folders_have_split,
    read_folders,
    score_faces,
)
from effigy.errors import DatasetError

REAL = DEEPFAKE.bonafide  # "real": the plain layout's folder, and what DeepfakeBench's real labels hold


def read_dataset(path: Path, split: str = "test", compression: str = "c23", root: Path | None = None) \
        -> list[LabelledFrame]:
    """The labelled frames of ``split`` from a DeepfakeBench dataset JSON or a ``real/`` + ``fake/`` folder.

    Args:
        path: a DeepfakeBench ``<dataset>.json``, or a folder in the plain layout.
        split: train, val or test.
        compression: the compression level of FaceForensics++-style JSON datasets.
        root: where relative frame paths of a JSON start (default: the JSON's folder, then its parents).
    Raises:
        DatasetError: one line naming the file and the rule it breaks.
    """
    path = Path(path)
    check_split(split)
    if path.is_file() and path.suffix.lower() == ".json":
        frames = read_deepfakebench(path, split, compression, root)
    elif path.is_dir():
        frames = read_folders(path, split)
    else:
        raise DatasetError(f"{path} is neither a DeepfakeBench dataset JSON nor a folder with real/ and fake/; "
                           "give one of those.")
    check_both_classes(frames, path, split)
    missing = next((frame.path for frame in frames if not frame.path.is_file()), None)
    if missing is not None:  # before any model loads: a wrong --root would otherwise fail mid-run
        raise DatasetError(f"{path}: frame {missing} does not exist; point --root at the folder its frame paths "
                           "start from.")
    return frames


def has_split(path: Path, split: str) -> bool:
    """Whether a DeepfakeBench JSON (every label) or a folder layout holds ``split``; an unreadable index is
    False here and one clear error when it is read."""
    if not (path.is_file() and path.suffix.lower() == ".json"):
        return folders_have_split(path, split)
    try:
        labels = next(iter(json.loads(path.read_text()).values()))
        return all(isinstance(s, dict) and split in s for s in labels.values())
    except (OSError, ValueError, StopIteration, AttributeError):
        return False


def read_deepfakebench(path: Path, split: str, compression: str = "c23", root: Path | None = None) \
        -> list[LabelledFrame]:
    """The frames of ``split`` in a DeepfakeBench dataset JSON (every label; "real" in a label's name makes it
    real)."""
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path} is not a readable JSON file ({type(error).__name__}); give DeepfakeBench's "
                           "dataset_json/<dataset>.json.") from None
    if not isinstance(index, dict) or len(index) != 1 or not isinstance(next(iter(index.values())), dict):
        raise DatasetError(f"{path} is not a DeepfakeBench dataset JSON: expected one dataset name mapping labels "
                           "to splits.")
    dataset, labels = next(iter(index.items()))
    frames = []
    for label, splits in labels.items():
        if not isinstance(splits, dict) or split not in splits:
            raise DatasetError(f"{path}: label {label!r} has no {split!r} split; choose a split it has "
                               f"({', '.join(splits) if isinstance(splits, dict) else 'none'}).")
        videos = _at_compression(splits[split], compression, path, label)
        for video, info in videos.items():
            if not isinstance(info, dict) or not isinstance(info.get("frames"), list):
                raise DatasetError(f"{path}: video {video!r} of {label!r} has no list of frames.")
            method = info.get("label", label)
            fake = REAL not in method.lower()
            frames += [LabelledFrame(_resolve(frame, path, root), fake, REAL if not fake else method,
                                     f"{method}/{video}", dataset) for frame in info["frames"]]
    return frames


def _at_compression(entry: dict, compression: str, path: Path, label: str) -> dict:
    """The videos of a split: directly, or under a compression level (FaceForensics++-style datasets)."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{path}: the split of {label!r} is not a mapping of videos.")
    if any(isinstance(v, dict) and "frames" in v for v in entry.values()) or not entry:
        return entry
    if compression not in entry:
        raise DatasetError(f"{path}: {label!r} has compression levels {', '.join(entry)}, not {compression!r}; "
                           "pick one with --compression.")
    return entry[compression]


def _resolve(frame: str, path: Path, root: Path | None) -> Path:
    """A frame path as written, absolute, or under ``root`` (default: the JSON's folder or the first parent under
    which it exists)."""
    candidate = Path(frame)
    if candidate.is_absolute():
        return candidate
    if root is not None:
        return root / candidate
    for base in (path.parent, *path.parent.parents):
        if (base / candidate).exists():
            return base / candidate
    return path.parent / candidate


def score_frames(model, frames: list[LabelledFrame], crops: bool = False, batch_size: int = 64,
                 advance=None) -> np.ndarray:
    """[N] P(fake) of each frame's face (the largest found; NaN where no face is found), frames read by effigy's
    one decoder and scored in batches.

    Args:
        model: a deepfake detector from the zoo.
        frames: from :func:`read_dataset`.
        crops: the frames are face crops already (DeepfakeBench's are): no face search.
        advance: called once per batch (a progress bar).
    """
    from effigy.detect.deepfake.model import fake_scores

    return score_faces(frames, lambda faces: fake_scores(model, faces), crops, batch_size, advance)


def dataset_report(frames: list[LabelledFrame], scores: np.ndarray, threshold: float = 0.5) -> dict:
    """DeepfakeBench's metrics (frame AUC, video AUC by mean score, EER, AP, ACC at ``threshold``) over all
    frames, per forgery method (its frames against the real ones) and per dataset; frames without a face found
    are counted and left out."""
    scored = [(f, s) for f, s in zip(frames, scores) if not np.isnan(s)]
    report = {"frames": len(frames), "no_face_found": len(frames) - len(scored), "threshold": threshold,
              "all": _metrics(scored, threshold)}
    methods = sorted({f.method for f, _ in scored if f.fake})
    report["methods"] = {m: _metrics([(f, s) for f, s in scored if not f.fake or f.method == m], threshold)
                         for m in methods}
    datasets = sorted({f.dataset for f, _ in scored})
    report["datasets"] = {d: _metrics([(f, s) for f, s in scored if f.dataset == d], threshold) for d in datasets}
    return report


def _metrics(scored: list[tuple[LabelledFrame, float]], threshold: float) -> dict:
    from effigy.metrics.detection import accuracy, auc, average_precision, eer

    fake = np.array([f.fake for f, _ in scored])
    values = np.array([s for _, s in scored])
    if len(set(fake.tolist())) < 2:
        return {"frames": len(scored), "frame_auc": None, "video_auc": None, "eer": None, "ap": None,
                "acc": None}
    videos: dict[str, list[float]] = {}
    video_fake: dict[str, bool] = {}
    for (frame, score) in scored:
        videos.setdefault(frame.video, []).append(score)
        video_fake[frame.video] = frame.fake
    names = sorted(videos)
    video_scores = np.array([np.mean(videos[v]) for v in names])
    video_labels = np.array([video_fake[v] for v in names])
    return {"frames": len(scored), "videos": len(names), "frame_auc": auc(values, fake),
            "video_auc": auc(video_scores, video_labels), "eer": eer(values, fake),
            "ap": average_precision(values, fake), "acc": accuracy(values, fake, threshold)}
