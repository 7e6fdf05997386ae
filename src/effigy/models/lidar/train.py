"""Seeded, resumable training of the shipped lidar detector on the simulated world, and its BEV evaluation."""
from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from effigy.metrics.bev import FrameBoxes, bev_map
from effigy.models.lidar.centerpoint import CenterPoint, CenterPointConfig
from effigy.models.lidar.targets import build_targets, decode, detection_loss
from effigy.models.training_state import resumable_steps, training_step
from effigy.worlds.lidar import SPLIT_SEEDS, Frame, points_in_boxes, simulate_frame, wrap_angle

log = logging.getLogger(__name__)
MIN_POINTS = 5  # ground truth with fewer lidar points is ignored in evaluation (KITTI's DontCare)


def simulate_split(split: str, count: int, workers: int = 2) -> list[Frame]:
    """The split's first ``count`` frames, simulated in a process pool (each frame is fixed by its seed)."""
    seeds = [SPLIT_SEEDS[split] + i for i in range(count)]
    if workers <= 1:
        return [simulate_frame(s) for s in seeds]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(simulate_frame, seeds, chunksize=16))


def augment(frame: Frame, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random left-right flip, a rotation about the sensor (+/- 10 degrees) and a global scale (0.95-1.05)."""
    points, boxes = frame.points.copy(), frame.boxes.copy()
    if rng.random() < 0.5:
        points[:, 1] *= -1
        boxes[:, 1] *= -1
        boxes[:, 6] *= -1
    angle, scale = rng.uniform(-np.pi / 18, np.pi / 18), rng.uniform(0.95, 1.05)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.array([[cos, -sin], [sin, cos]])
    points[:, :2] = points[:, :2] @ rotation.T
    boxes[:, :2] = boxes[:, :2] @ rotation.T
    boxes[:, 6] = [wrap_angle(a + angle) for a in boxes[:, 6]]
    points[:, :3] *= scale
    boxes[:, :6] *= scale
    return points, boxes


def train(config: CenterPointConfig, progress: Callable[[int, float], None] | None = None,
          checkpoint_dir: Path | None = None, frames: list[Frame] | None = None) -> CenterPoint:
    """Train the detector on ``config.train_frames`` simulated frames (AdamW, one-cycle learning rate).

    Args:
        config: the detector and its training settings.
        progress: called with (step, loss) after every step.
        checkpoint_dir: where the resumable state is kept; None keeps none.
        frames: for tests; by default the simulated train split.
    Returns:
        The detector in eval mode.
    """
    frames = simulate_split("train", config.train_frames) if frames is None else frames
    torch.manual_seed(config.seed)
    model = CenterPoint(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    for step in resumable_steps(checkpoint_dir, {"detector": model}, optimizer, generator, asdict(config),
                                config.train_steps, config.checkpoint_every):
        loss = _batch_loss(model, frames, config, generator)
        training_step(optimizer, loss, step, config.learning_rate * one_cycle(step, config.train_steps),
                      (model, 10.0), progress)
    return model.eval()


def one_cycle(step: int, total: int, warmup: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of the run, then a cosine down to 1% of the peak."""
    ramp = max(1, int(warmup * total))
    if step < ramp:
        return (step + 1) / ramp
    progress = (step - ramp) / max(1, total - ramp)
    return 0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * progress))


def _batch_loss(model: CenterPoint, frames: list[Frame], config: CenterPointConfig,
                generator: torch.Generator) -> torch.Tensor:
    picks = torch.randint(len(frames), (config.batch_size,), generator=generator).tolist()
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    batch = [augment(frames[i], rng) for i in picks]
    targets = build_targets([b for _, b in batch], [frames[i].labels for i in picks], config)
    outputs = model([torch.from_numpy(p) for p, _ in batch])
    return detection_loss(outputs, targets)


@torch.no_grad()
def detect(model: torch.nn.Module, frames: list[Frame], batch_size: int = 4,
           forward: Callable | None = None) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Detections per frame and class (``forward`` replaces ``model(points)``, e.g. a filtered run)."""
    run = forward or model
    out = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start: start + batch_size]
        out += decode(run([torch.from_numpy(f.points) for f in chunk]), model.config)
    return out


def evaluate_detections(detections: list[dict], frames: list[Frame], classes: tuple[str, ...]) -> dict:
    """BEV AP per class under rotated-IoU and centre-distance matching; ground truth with fewer than
    ``MIN_POINTS`` points is ignored."""
    truths: dict[str, list[FrameBoxes]] = {c: [] for c in classes}
    found: dict[str, list[FrameBoxes]] = {c: [] for c in classes}
    for frame, frame_detections in zip(frames, detections):
        seen = points_in_boxes(frame.points, frame.boxes) >= MIN_POINTS
        for cls in classes:
            rows = [i for i, label in enumerate(frame.labels) if label == cls]
            truths[cls].append(FrameBoxes(frame.boxes[rows].reshape(-1, 7), ignored=~seen[rows]))
            boxes, scores = frame_detections[cls]
            found[cls].append(FrameBoxes(boxes, scores))
    return bev_map(found, truths, classes)
