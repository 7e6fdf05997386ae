"""A team's own labelled face data in folders: a bona fide class folder and an attack class folder with one
sub-folder per attack type (``real/`` + ``fake/<method>/`` for deepfakes, ``live/`` + ``spoof/<species>/`` for
presentation attacks), optionally under ``train/``, ``val/``, ``test/`` and, for anti-spoofing, under a capture
domain. Each class folder holds images (one image, one "video") or folders of frames (one folder, one video).
The readers of each detector (``effigy.detect.deepfake.datasets``, the FAS commands) name the classes.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from effigy.errors import DatasetError
from effigy.worlds.faces import IMAGE_SUFFIXES

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class LabelledFrame:
    """One frame (or image) of a team's data: its file, whether it is an attack (a fake, a spoof), the kind
    (the bona fide class's name, or the method or species that made the attack), the video it belongs to, and
    its dataset or capture domain."""

    path: Path
    fake: bool
    method: str
    video: str
    dataset: str


@dataclass(frozen=True)
class FolderLayout:
    """The class folders' names: ``real`` + ``fake`` (deepfakes) or ``live`` + ``spoof`` (anti-spoofing)."""

    bonafide: str
    attack: str


DEEPFAKE = FolderLayout("real", "fake")
ANTI_SPOOFING = FolderLayout("live", "spoof")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"split {split!r}: use one of {', '.join(SPLITS)}.")


def check_both_classes(frames: list[LabelledFrame], path: Path, split: str, layout: FolderLayout = DEEPFAKE) -> None:
    counts = Counter(frame.fake for frame in frames)
    for fake, name in ((False, layout.bonafide), (True, layout.attack)):
        if not counts[fake]:
            raise DatasetError(f"{path} has no {name} frames in its {split} split; a detector needs both classes.")


def read_folders(folder: Path, split: str, layout: FolderLayout = DEEPFAKE, domain: str | None = None) \
        -> list[LabelledFrame]:
    """``folder/[split/]<bonafide>/`` and ``folder/[split/]<attack>/<kind>/``: images, or folders of frames (one
    video each). ``domain`` names the frames' dataset (default: the folder's name)."""
    check_split(split)
    base = folder / split if (folder / split).is_dir() else folder
    if any((folder / s).is_dir() for s in SPLITS) and base is folder:
        raise DatasetError(f"{folder} has split folders but no {split}/; add {folder / split} or pick another --split.")
    bonafide, attack = base / layout.bonafide, base / layout.attack
    if not bonafide.is_dir() or not attack.is_dir():
        raise DatasetError(f"{base} needs a {layout.bonafide}/ and a {layout.attack}/ folder "
                           f"({layout.attack}/<kind>/ per attack kind).")
    dataset = domain or folder.name
    frames = _videos(bonafide, False, layout.bonafide, dataset)
    loose = [p for p in attack.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise DatasetError(f"{loose[0]} lies directly in {layout.attack}/; put each kind's images in "
                           f"{layout.attack}/<kind>/.")
    for kind in sorted(p for p in attack.iterdir() if p.is_dir()):
        frames += _videos(kind, True, kind.name, dataset)
    return frames


def folders_have_split(folder: Path, split: str) -> bool:
    """Whether ``folder`` has a ``split/`` folder, directly or under a capture-domain folder."""
    return (folder / split).is_dir() or (folder.is_dir() and any((d / split).is_dir() for d in folder.iterdir()
                                                                 if d.is_dir()))


def read_domains(folder: Path, split: str, layout: FolderLayout) -> list[LabelledFrame]:
    """The frames of every capture domain: ``folder/<domain>/[split/]<bonafide>/ ...``, or ``folder`` itself
    when it is one domain's layout."""
    if (folder / layout.bonafide).is_dir() or any((folder / s).is_dir() for s in SPLITS):
        return read_folders(folder, split, layout)  # one domain (a split folder is never a domain)
    domains = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not domains:
        raise DatasetError(f"{folder} needs {layout.bonafide}/ and {layout.attack}/<kind>/ folders, directly or "
                           "under one folder per capture domain.")
    return [frame for d in domains for frame in read_folders(d, split, layout, d.name)]


def keep_domains(frames: list[LabelledFrame], domains: list[str] | None, folder: Path) -> list[LabelledFrame]:
    """The frames of the named capture domains (a leave-one-domain-out protocol trains on some, tests on the
    rest); None keeps every domain. A name the data lacks is an error naming the ones it has."""
    if domains is None:
        return frames
    present = sorted({frame.dataset for frame in frames})
    missing = [d for d in domains if d not in present]
    if missing:
        raise DatasetError(f"{folder} has no capture domain {missing[0]!r}; its domains are {', '.join(present)}.")
    return [frame for frame in frames if frame.dataset in domains]


def _videos(folder: Path, fake: bool, method: str, dataset: str) -> list[LabelledFrame]:
    """The images of ``folder`` (each its own video) and the frames of its sub-folders (one video each)."""
    frames = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            frames += [LabelledFrame(p, fake, method, f"{method}/{entry.name}", dataset) for p in _images(entry)]
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            frames.append(LabelledFrame(entry, fake, method, f"{method}/{entry.stem}", dataset))
    if not frames:
        raise DatasetError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) or folders of frames; an empty "
                           "class cannot be evaluated.")
    return frames


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def face_crops(frames: list[LabelledFrame], crops: bool = False):
    """([M, 3, SIZE, SIZE] the face of each frame where one is found (the largest), [M] those frames' indices),
    each file read by effigy's one decoder."""
    import numpy as np

    from effigy.detect.faces import find_faces, stack_faces
    from effigy.images import read_image_file

    rows, faces = [], []
    for i, frame in enumerate(frames):
        found = find_faces(read_image_file(frame.path), crops, max_faces=1)
        if found:
            rows.append(i)
            faces.append(found[0].image)
    return stack_faces(faces), np.array(rows, dtype=int)


def score_faces(frames: list[LabelledFrame], score, crops: bool = False, batch_size: int = 64,
                advance=None):
    """[N] ``score(faces)`` of each frame's face (the largest found), NaN where none is found; frames read and
    searched ``batch_size`` at a time (so a large dataset is never all in memory), ``advance()`` after each."""
    import numpy as np

    scores = np.full(len(frames), np.nan)
    for start in range(0, len(frames), batch_size):
        faces, rows = face_crops(frames[start: start + batch_size], crops)
        if len(rows):
            scores[start + rows] = score(faces)
        if advance is not None:
            advance()
    return scores
