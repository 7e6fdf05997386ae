"""Ada3D's two training steps on a trained detector: the importance predictor, then fine-tuning the filtered
detector (sparsity-preserving norms, filtering on) together with the predictor. Both seeded and resumable."""
from __future__ import annotations

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

    keep_3d: float = 0.6
    keep_2d: float = 0.3
    predictor_steps: int = 600
    finetune_steps: int = 2000
    batch_size: int = 2
    predictor_learning_rate: float = 3e-3
    finetune_learning_rate: float = 2e-3  # the detector's own: the norms' change is not a small one
    seed: int = 0
    checkpoint_every: int = 250

    @property
    def train_steps(self) -> int:
        """Both phases' steps (what a progress bar counts)."""
        return self.predictor_steps + self.finetune_steps


def importance_target(boxes: list[np.ndarray], labels: list[list[str]], detector: CenterPoint) -> torch.Tensor:
    """[B, 1, H, W]: the detector's centre heatmap target, max over classes (a cell near any object centre)."""
    return build_targets(boxes, labels, detector.config)["heatmap"].amax(dim=1, keepdim=True)


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
    model = Ada3D(sparsity_preserving(detector), Ada3DConfig(config.keep_3d, config.keep_2d, sparse_2d=False),
                  predictor).train()
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
    model.config = Ada3DConfig(config.keep_3d, config.keep_2d, sparse_2d=True)
    return model.eval()
