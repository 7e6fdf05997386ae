"""What ``effigy detect deepfake|fas train --data`` runs on a team's own data, and how every detector command
finds the model it was asked for: a shipped zoo name, or a folder such a training wrote.

A team's detector starts from a shipped one (its architecture, its ImageNet or face-world features) and is
fine-tuned on the team's face crops; its operating threshold is then chosen on the team's real (live) frames of
the ``val`` split alone, so that at most ``target_bpcer`` of them are called fake (an attack): the deployment
rule of ISO/IEC 30107-3's BPCER, not an equal-error point that depends on the attacks seen. The folder holds
safetensors weights and a MANIFEST.json record like the zoo's, with the command that made it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from torch import nn

from effigy.detect.datasets import (
    ANTI_SPOOFING,
    LabelledFrame,
    check_both_classes,
    face_crops,
    folders_have_split,
    keep_domains,
    read_domains,
)
from effigy.errors import DatasetError, EffigyError
from effigy.models.zoo import ZOO, load_zoo_model, read_manifest, write_zoo_weights, zoo_entry

log = logging.getLogger(__name__)
DEEPFAKE_TASK, FAS_TASK = "deepfake", "face-antispoofing"
DEFAULT_TARGET_BPCER = 0.05


@dataclass
class Detector:
    """A loaded detector: the zoo entry it was built as, where it came from (zoo name or folder), and the
    operating point stored with it (None: the command's default rule)."""

    name: str
    model: nn.Module
    config: object
    source: str
    operating_point: dict | None

    @property
    def threshold(self) -> float | None:
        return None if self.operating_point is None else float(self.operating_point["threshold"])

    def operating_threshold(self, given: float | None = None) -> float:
        """The P(fake) threshold a deepfake command calls fake at: the one given, else the stored operating
        point's, else 0.5."""
        if given is not None:
            return given
        return 0.5 if self.threshold is None else self.threshold


def is_trained_folder(model: str) -> bool:
    """Whether ``--model`` names a folder (written by ``train --data --out``) rather than a zoo name."""
    return Path(model).is_dir()


def load_detector(model: str, task: str) -> Detector:
    """A shipped detector by zoo name, or the one a ``train --data --out DIR`` folder holds (sha256 checked).

    Raises:
        EffigyError: the folder holds no MANIFEST.json or no model of ``task``.
    """
    if not is_trained_folder(model):
        loaded, config = load_zoo_model(model)
        return _calibrated(Detector(model, loaded, config, model, read_manifest()[model].get("operating_point")))
    folder = Path(model)
    if not (folder / "MANIFEST.json").is_file():
        raise EffigyError(f"--model {folder} holds no MANIFEST.json; pass the --out folder of `train --data`.")
    manifest = read_manifest(folder / "MANIFEST.json")
    names = [name for name in manifest if name in ZOO and ZOO.task(name) == task]
    if len(names) != 1:
        raise EffigyError(f"--model {folder} holds {len(names)} {task} models; pass the --out folder of one "
                          "`train --data` run.")
    loaded, config = load_zoo_model(names[0], folder)
    return _calibrated(Detector(names[0], loaded, config, str(folder), manifest[names[0]].get("operating_point")))


def _calibrated(detector: Detector) -> Detector:
    """The detector with its stored temperature set (deepfake models: P(fake) = sigmoid(logit / T))."""
    temperature = (detector.operating_point or {}).get("temperature")
    if temperature is not None and hasattr(detector.model, "calibration_temperature"):
        detector.model.calibration_temperature.fill_(float(temperature))
    return detector


@dataclass(frozen=True)
class TeamData:
    """A team's training run: where the data is, how to read it, and the training settings."""

    data: Path
    base: str
    out: Path
    steps: int
    seed: int = 0
    crops: bool = False
    target_bpcer: float = DEFAULT_TARGET_BPCER
    compression: str = "c23"
    root: Path | None = None
    domains: tuple[str, ...] | None = None  # anti-spoofing: the capture domains to train on (None: all)


def read_team_frames(task: str, settings: TeamData, split: str) -> list[LabelledFrame]:
    """The labelled frames of ``split``: DeepfakeBench JSON or real/fake folders for deepfakes, live/spoof folders
    (optionally per capture domain) for anti-spoofing."""
    if task == DEEPFAKE_TASK:
        from effigy.detect.deepfake.datasets import read_dataset

        return read_dataset(settings.data, split, settings.compression, settings.root)
    frames = keep_domains(read_domains(settings.data, split, ANTI_SPOOFING),
                          None if settings.domains is None else list(settings.domains), settings.data)
    check_both_classes(frames, settings.data, split, ANTI_SPOOFING)
    return frames


def has_split(task: str, settings: TeamData, split: str) -> bool:
    """Whether the data holds ``split`` (a missing val split is allowed: the base's threshold stays)."""
    if task == DEEPFAKE_TASK:
        from effigy.detect.deepfake.datasets import has_split as deepfake_has_split

        return deepfake_has_split(settings.data, split)
    return folders_have_split(settings.data, split)


def _crops_of(frames: list[LabelledFrame], crops: bool, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(face crops, [M] attack flags) of the frames where a face is found; none found is an error."""
    images, rows = face_crops(frames, crops)
    if len(rows) < len(frames):
        log.info("%s: no face found in %d of %d frames; they are left out", what, len(frames) - len(rows),
                 len(frames))
    attack = np.array([frames[i].fake for i in rows], dtype=bool)
    if len(rows) == 0 or attack.all() or not attack.any():
        raise DatasetError(f"{what}: faces were found in {len(rows)} of {len(frames)} frames and not in both "
                           "classes; give face photos (or --crops for crops that are faces already).")
    return images, attack


@dataclass
class TeamTraining:
    """A team training run once its data has passed every check: the train faces, the val frames (None: no
    val split), the base detector."""

    settings: TeamData
    images: np.ndarray
    attack: np.ndarray
    val: list[LabelledFrame] | None
    base: Detector


def prepare_team_training(task: str, settings: TeamData) -> TeamTraining:
    """Read and check the team's data, find the faces, load the base and check --out, before any training (a
    broken layout or an undecodable image is one error, not a failure after the training).

    Args:
        task: DEEPFAKE_TASK or FAS_TASK.
        settings: the data and the training settings.
    """
    frames = read_team_frames(task, settings, "train")
    val = read_team_frames(task, settings, "val") if has_split(task, settings, "val") else None
    images, attack = _crops_of(frames, settings.crops, f"{settings.data} (train)")
    base = load_detector(settings.base, task)
    _check_out(task, settings, base.name)
    return TeamTraining(settings, images, attack, val, base)


def train_team_detector(task: str, run: TeamTraining, command: str,
                        progress: Callable[[int, float], None] | None = None,
                        prepare_out: Callable[[Path], object] = lambda out: out.mkdir(parents=True, exist_ok=True)) \
        -> dict:
    """Fine-tune the base on the team's train faces, choose its threshold on the val split's bona fide frames,
    write it to ``settings.out``.

    Args:
        task: DEEPFAKE_TASK or FAS_TASK.
        run: from :func:`prepare_team_training`.
        command: the command line that made it (recorded with the weights).
        progress: called with (step, loss).
        prepare_out: makes (and checks) the output folder.
    Returns:
        What was trained on and the operating point chosen, for the report.
    """
    settings, base = run.settings, run.base
    prepare_out(settings.out)
    model = _as_stored(_fine_tune(task, base.model, run.images, run.attack, settings, progress), base.name)
    point = base.operating_point
    if run.val is not None:
        point = _operating_point(task, model, run.val, settings)
    else:
        log.warning("%s has no val split: the threshold stays the base model's (%s)", settings.data,
                    "none stored" if point is None else f"{point['threshold']:.4f}")
    record = {"train_command": command, "base_model": base.source, "data": str(settings.data),
              **({"domains": list(settings.domains)} if settings.domains else {}),
              "trained_frames": int(len(run.attack)), "trained_attacks": int(run.attack.sum()),
              "seed": settings.seed, "steps": settings.steps}
    if point is not None:
        record["operating_point"] = point
    path = write_zoo_weights(base.name, model, base.config, settings.out, record)
    return {"weights": str(path), "manifest": str(settings.out / "MANIFEST.json"),
            "threshold_from_val": run.val is not None, **record}


def _as_stored(model: nn.Module, name: str) -> nn.Module:
    """The model with its weights rounded to the zoo's storage dtype, so the threshold is chosen on the scores
    the written file will give."""
    dtype = zoo_entry(name).dtype
    model.load_state_dict({k: v.to(dtype).float() if v.is_floating_point() else v
                           for k, v in model.state_dict().items()})
    return model


def _check_out(task: str, settings: TeamData, name: str) -> None:
    """The --out folder holds no other model of the task (one folder, one trained detector)."""
    manifest = read_manifest(settings.out / "MANIFEST.json")  # a damaged one is refused now, not after training
    others = [n for n in manifest if n in ZOO and ZOO.task(n) == task and n != name]
    if others:
        raise EffigyError(f"--out {settings.out} already holds {others[0]}; write each trained detector to its own "
                          "folder.")


def _fine_tune(task: str, model: nn.Module, images: np.ndarray, attack: np.ndarray, settings: TeamData,
               progress) -> nn.Module:
    if task == DEEPFAKE_TASK:
        from effigy.detect.deepfake.model import fine_tune

        return fine_tune(model, images, attack, settings.steps, settings.seed, progress=progress)
    from effigy.detect.fas.model import fine_tune

    return fine_tune(model, images, ~attack, settings.steps, settings.seed, progress=progress)


def bonafide_scores(task: str, model: nn.Module, images: np.ndarray) -> np.ndarray:
    """P(fake) of a deepfake detector or P(live) of a FAS model on face crops."""
    if task == DEEPFAKE_TASK:
        from effigy.detect.deepfake.model import fake_scores

        return fake_scores(model, images)
    from effigy.detect.fas.model import live_scores

    return live_scores(model, images)


def _operating_point(task: str, model: nn.Module, val: list[LabelledFrame], settings: TeamData) -> dict:
    """The val split's operating point: for a deepfake detector first a temperature fitted on its real and fake
    faces (so P(fake) means what it says), then the threshold at which at most ``target_bpcer`` of its bona fide
    faces are rejected."""
    from effigy.metrics.detection import threshold_at_bpcer

    images, rows = face_crops(val, settings.crops)
    bonafide = np.array([not val[i].fake for i in rows], dtype=bool)
    if not bonafide.any():
        raise DatasetError(f"{settings.data}: no face found in the val split's bona fide frames; the threshold "
                           "cannot be chosen on them.")
    point = {"target_bpcer": settings.target_bpcer, "calibrated_on": f"{settings.data} (val)",
             "bonafide_faces": int(bonafide.sum())}
    if task == DEEPFAKE_TASK and (~bonafide).any():
        point.update(_temperature(model, images, ~bonafide))
    scores = bonafide_scores(task, model, images[bonafide])
    point["threshold"] = threshold_at_bpcer(scores, settings.target_bpcer, higher_is_bonafide=task == FAS_TASK)
    log.info("operating threshold %.4f: at most %.1f%% of %d val bona fide faces rejected", point["threshold"],
             100 * settings.target_bpcer, len(scores))
    return point


def _temperature(model: nn.Module, images: np.ndarray, fake: np.ndarray) -> dict:
    """Temperature scaling on the val faces; the model's calibration temperature is set to it."""
    from effigy.detect.deepfake.calibration import fake_logits, temperature_scaling

    scaling = temperature_scaling(fake_logits(model, images), fake)
    model.calibration_temperature.fill_(scaling["temperature"])
    return scaling


RAY_CHUNK = 64  # frames per Ray task: enough to amortise a task, small enough to spread over a cluster


def score_frames_on_ray(model: str, frames: list[LabelledFrame], crops: bool, advance=None) -> np.ndarray:
    """:func:`effigy.detect.deepfake.datasets.score_frames` mapped over a Ray cluster (``RAY_ADDRESS``, else a
    local Ray): one task per chunk of frames, each worker loading the detector once. Frame paths must be
    readable where the tasks run (a shared filesystem on a cluster).

    Args:
        model: a zoo name or a trained folder (loaded by each worker).
        frames: from ``read_dataset``. crops: the frames are face crops already.
        advance: called once per chunk scored.
    Returns:
        [N] P(fake) (NaN where no face is found), in the frames' order.
    """
    from dataclasses import replace

    from effigy.cluster import ray_session

    if is_trained_folder(model):
        model = str(Path(model).resolve())  # workers need not share the driver's working directory
    frames = [replace(frame, path=frame.path.resolve()) for frame in frames]
    chunks = [frames[i: i + RAY_CHUNK] for i in range(0, len(frames), RAY_CHUNK)]
    scores: list[np.ndarray | None] = [None] * len(chunks)
    with ray_session() as ray:
        task = ray.remote(num_cpus=1)(_score_chunk)
        pending = {task.remote(model, chunk, crops): i for i, chunk in enumerate(chunks)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            scores[pending.pop(done[0])] = ray.get(done[0])
            if advance is not None:
                advance()
    return np.concatenate(scores) if scores else np.array([])


def _score_chunk(model: str, frames: list[LabelledFrame], crops: bool) -> np.ndarray:
    from effigy.detect.deepfake.datasets import score_frames

    return score_frames(_worker_detector(model), frames, crops)


_WORKER_MODELS: dict[str, nn.Module] = {}


def _worker_detector(model: str) -> nn.Module:
    """The detector, loaded once per Ray worker process."""
    if model not in _WORKER_MODELS:
        _WORKER_MODELS[model] = load_detector(model, DEEPFAKE_TASK).model
    return _WORKER_MODELS[model]
