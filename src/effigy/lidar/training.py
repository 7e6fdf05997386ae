"""Ada3D's two training steps on a trained detector: the importance predictor, then fine-tuning the filtered
detector (sparsity-preserving norms, filtering on) together with the predictor. Both seeded and resumable."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from effigy.lidar.ada3d import Ada3D, Ada3DConfig, ImportancePredictor, input_raster, sparsity_preserving
from effigy.models.config import TrainConfig
from effigy.models.lidar.centerpoint import CenterPoint, voxelize
from effigy.models.lidar.targets import build_targets, detection_loss, gaussian_focal_loss
from effigy.models.lidar.train import augment, one_cycle
from effigy.models.training_state import resumable_steps, training_step
from effigy.worlds.lidar import Frame


@dataclass
class Ada3DTrainConfig(TrainConfig):
    """Settings of ``effigy`` 's Ada3D training (saved beside its weights)."""

    detector: str = "lidar-centerpoint"  # the shipped detector it starts from
    keep_3d: float = 0.6
    keep_2d: float = 0.3
    refilter_2d: bool = True  # Ada3DConfig.refilter_2d
    predictor_steps: int = 600
    finetune_steps: int = 4000
    batch_size: int = 2
    predictor_learning_rate: float = 3e-3
    finetune_learning_rate: float = 2e-3  # the detector's own: the norms' change is not a small one
    seed: int = 0
    checkpoint_every: int = 250

    @property
    def train_steps(self) -> int:
        """Both phases' steps (what a progress bar counts)."""
        return self.predictor_steps + self.finetune_steps


def filter_config(config: Ada3DTrainConfig, sparse_2d: bool = True) -> Ada3DConfig:
    """What the model trained with ``config`` keeps (and runs with, unless told otherwise)."""
    return Ada3DConfig(config.keep_3d, config.keep_2d, sparse_2d, config.refilter_2d)


def importance_target(boxes: list[np.ndarray], labels: list[list[str]], detector: CenterPoint) -> torch.Tensor:
    """[B, 1, H, W]: per object a Gaussian peak at its centre cell whose reach covers the object's footprint
    (radius r = half the box diagonal in cells + 1, sigma r / 2), max over objects.

    Why not the detector's centre heatmap: its Gaussians are sized for localisation and fade within a car's
    length, so the ends of cars ranked with the ground around them and were filtered out (the first shipped
    model lost Car AP@0.7 0.94 -> 0.74 that way)."""
    config = detector.config
    h, w = config.bev_shape
    target = torch.zeros(len(boxes), 1, h, w)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    for b, (frame_boxes, frame_labels) in enumerate(zip(boxes, labels)):
        for box, label in zip(frame_boxes, frame_labels):
            cx = int((box[0] - config.point_range[0]) / config.cell_size)
            cy = int((box[1] - config.point_range[1]) / config.cell_size)
            if label not in config.classes or not (0 <= cx < w and 0 <= cy < h):
                continue
            radius = math.ceil(0.5 * math.hypot(box[3], box[4]) / config.cell_size) + 1
            peak = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * (radius / 2) ** 2))
            torch.maximum(target[b, 0], peak, out=target[b, 0])
    return target


def _batch(frames: list[Frame], size: int, generator: torch.Generator):
    picks = torch.randint(len(frames), (size,), generator=generator).tolist()
    rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,), generator=generator)))
    batch = [augment(frames[i], rng) for i in picks]
    return [torch.from_numpy(p) for p, _ in batch], [b for _, b in batch], [frames[i].labels for i in picks]


def train_predictor(detector: CenterPoint, frames: list[Frame], config: Ada3DTrainConfig,
                    progress: Callable[[int, float], None] | None = None,
                    checkpoint_dir: Path | None = None) -> ImportancePredictor:
    """The predictor alone against the centre heatmap (Gaussian focal loss); it reads only the input raster,
    so the detector is not run."""
    torch.manual_seed(config.seed)
    predictor = ImportancePredictor().train()
    optimizer = torch.optim.AdamW(predictor.parameters(), lr=config.predictor_learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    for step in resumable_steps(checkpoint_dir, {"predictor": predictor}, optimizer, generator, asdict(config),
                                config.predictor_steps, config.checkpoint_every):
        points, boxes, labels = _batch(frames, config.batch_size, generator)
        raster = input_raster(voxelize(points, detector.config), detector.config.bev_stride).dense()
        loss = gaussian_focal_loss(predictor(raster), importance_target(boxes, labels, detector))
        training_step(optimizer, loss, step, config.predictor_learning_rate * one_cycle(step, config.predictor_steps),
                      progress=progress)
    return predictor.eval()


def fine_tune(detector: CenterPoint, predictor: ImportancePredictor, frames: list[Frame], config: Ada3DTrainConfig,
              progress: Callable[[int, float], None] | None = None, checkpoint_dir: Path | None = None) -> Ada3D:
    """The detector with sparsity-preserving norms, run with filtering at ``keep_3d`` / ``keep_2d`` (the
    masked dense run, equal to the sparse one), trained on the detection loss plus the predictor's loss.

    Returns:
        The Ada3D model in eval mode, set to run its 2D part sparse.
    """
    torch.manual_seed(config.seed)
    model = Ada3D(sparsity_preserving(detector), filter_config(config, sparse_2d=False), predictor).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.finetune_learning_rate, weight_decay=0.01)
    generator = torch.Generator().manual_seed(config.seed + 1)
    for step in resumable_steps(checkpoint_dir, {"ada3d": model}, optimizer, generator, asdict(config),
                                config.finetune_steps, config.checkpoint_every):
        points, boxes, labels = _batch(frames, config.batch_size, generator)
        outputs = model(points)
        loss = detection_loss(outputs, build_targets(boxes, labels, detector.config))
        importance = model.importance_logits(voxelize(points, detector.config))
        loss = loss + gaussian_focal_loss(importance, importance_target(boxes, labels, detector))
        training_step(optimizer, loss, step, config.finetune_learning_rate * one_cycle(step, config.finetune_steps),
                      (model, 10.0), progress)
    model.config = filter_config(config, sparse_2d=True)
    return model.eval()
