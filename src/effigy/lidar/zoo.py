"""``lidar-ada3d`` in the model zoo: the shipped detector fine-tuned with Ada3D filtering, with its importance
predictor. Declared in :data:`effigy.models.zoo.DECLARED`, built from here at its first lookup (the zoo sits
below this package)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from effigy.lidar.ada3d import Ada3D, ImportancePredictor, sparsity_preserving
from effigy.lidar.training import Ada3DTrainConfig, filter_config, fine_tune, train_predictor
from effigy.models.lidar.centerpoint import CenterPoint
from effigy.models.lidar.train import simulate_split
from effigy.models.zoo import ZooEntry, config_variant, load_zoo_model, shipped_config


def build_ada3d(config: Ada3DTrainConfig) -> Ada3D:
    """The Ada3D model's structure around its shipped detector's architecture (weights loaded by the zoo)."""
    detector = sparsity_preserving(CenterPoint(shipped_config(config.detector)))
    return Ada3D(detector, filter_config(config), ImportancePredictor()).eval()


def train_ada3d(config: Ada3DTrainConfig, progress: Callable[[int, float], None] | None = None,
                checkpoint_dir: Path | None = None) -> Ada3D:
    """Predictor first (the detector frozen), then fine-tuning, on the detector's own training frames."""
    detector, detector_config = load_zoo_model(config.detector)
    frames = simulate_split("train", detector_config.train_frames)
    predictor_dir = None if checkpoint_dir is None else checkpoint_dir / "predictor"
    finetune_dir = None if checkpoint_dir is None else checkpoint_dir / "finetune"
    predictor = train_predictor(detector, frames, config, progress, predictor_dir)
    return fine_tune(detector.train(), predictor, frames, config, progress, finetune_dir)


def entries() -> list[ZooEntry]:
    return [ZooEntry(
        "lidar-ada3d",
        "lidar-centerpoint fine-tuned with Ada3D input filtering (60% of voxels' cells, 30% of BEV cells kept), "
        "sparsity-preserving norms in 2D, and its importance predictor",
        Ada3DTrainConfig, build_ada3d, train_ada3d, torch.float32, resumable=True), ZooEntry(
        "lidar-ada3d-spbn",
        "lidar-centerpoint-spbn (sparsity-preserving norms from its first step) fine-tuned with Ada3D input "
        "filtering (55% of voxels' cells kept, 30% of BEV cells at the 2D input), with its importance predictor",
        config_variant(Ada3DTrainConfig, "Ada3DSPBNTrainConfig", detector="lidar-centerpoint-spbn", keep_3d=0.55,
                       refilter_2d=False), build_ada3d,
        train_ada3d, torch.float32, resumable=True)]
