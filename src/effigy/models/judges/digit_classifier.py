"""A small CNN trained on the real digits: it judges generated samples (class accuracy) and its
penultimate layer is the feature space for FID-on-features (``digits-cnn`` features, 128-d)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effigy.models.config import TrainConfig
from effigy.models.supervised import fit
from effigy.worlds.digits import NUM_CLASSES, augment, load_digits_images, split_indices


@dataclass
class ClassifierConfig(TrainConfig):
    sample_size: int = 16
    width: int = 32
    feature_dim: int = 128
    train_steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 2e-3
    noise_std: float = 0.15
    seed: int = 0


class DigitClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        w = config.width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, config.feature_dim), nn.GELU(),
        )
        self.head = nn.Linear(config.feature_dim, NUM_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate activations: the FID feature space."""
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train(config: ClassifierConfig, progress: Callable[[int, float], None] | None = None) -> DigitClassifier:
    """Seeded training on the digits train split, with shifts and pixel noise so that it reads
    slightly imperfect generated digits as well as clean ones."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    images, labels = load_digits_images(config.sample_size)
    train_idx, _ = split_indices(len(images))
    images, labels = images[train_idx], labels[train_idx]

    def batch_loss(model: nn.Module, generator: torch.Generator) -> torch.Tensor:
        pick = torch.randint(0, len(images), (config.batch_size,), generator=generator)
        batch = augment(images[pick], generator)
        batch = (batch + config.noise_std * torch.randn(batch.shape, generator=generator)).clamp(-1, 1)
        return F.cross_entropy(model(batch), labels[pick])

    return fit(DigitClassifier(config), batch_loss, config.train_steps, config.learning_rate, generator, progress)


@torch.no_grad()
def heldout_accuracy(model: DigitClassifier, config: ClassifierConfig) -> float:
    images, labels = load_digits_images(config.sample_size)
    _, hold = split_indices(len(images))
    return (model(images[hold]).argmax(1) == labels[hold]).float().mean().item()
