"""The prototype-based face anti-spoofing base model of arXiv 2503.22984 (CVPR 2025,
https://arxiv.org/abs/2503.22984), on effigy's face world.

A small CNN encodes a face capture to a unit vector; each class (spoof, live) owns several prototypes (a
spoof class holds prints, replays and masks, a live class many cameras, so one centre per class would be too
few). Training pulls each feature to its class's nearest prototype with a margin over the other class
(a CosFace-style prototype loss), adds supervised contrastive learning between features and an
orthogonality term that keeps the prototypes apart. The score of a capture is the softmax probability of
*live* over the two classes' prototype similarities.

The adaptors (``effigy.detect.fas.adapt``) use the model only through :meth:`PrototypeFAS.features` and
:meth:`PrototypeFAS.prototypes`: its parameters stay untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effigy.detect.batches import balanced_fine_tune, flip_and_shift, map_face_batches
from effigy.models.config import TrainConfig
from effigy.models.training_state import training_step, warmup_cosine
from effigy.worlds.faces import ATTACKS, DOMAINS, FaceImages, render

CLASSES = ("spoof", "live")  # index 1 is live: scores are P(live)


@dataclass
class FASConfig(TrainConfig):
    """The base model and its training (saved beside its weights).

    Args:
        domains: capture domains trained on (a leave-one-domain-out model leaves one out).
        attacks: attacks trained on (a leave-one-attack-out model leaves one out).
        embed_dim, width, centres: feature size, CNN width, prototypes per class.
        margin, scale: the prototype loss's cosine margin and logit scale (the scale also makes the score).
        contrastive_weight, temperature: supervised contrastive term. orthogonal_weight: prototype term.
        camera_jitter: train on batches re-shot by random unseen cameras (resolution, blur, colour gains,
            noise), so that the features depend less on the training domains' own cameras.
        live_per_identity, spoofs_per_attack: training captures per identity and domain.
    """

    domains: list[str] = field(default_factory=lambda: list(DOMAINS))
    attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    embed_dim: int = 64
    width: int = 24
    centres: int = 4
    margin: float = 0.2
    scale: float = 16.0
    contrastive_weight: float = 0.5
    temperature: float = 0.1
    orthogonal_weight: float = 0.1
    camera_jitter: bool = False  # random resolution, blur, colour gain and noise per training batch
    live_per_identity: int = 6
    spoofs_per_attack: int = 2
    train_steps: int = 1200
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PrototypeFAS(nn.Module):
    """Encoder + multi-centre class prototypes; ``forward`` gives P(live) per image."""

    def __init__(self, config: FASConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.encoder = nn.Sequential(
            _block(3, w, 2), _block(w, 2 * w, 2), _block(2 * w, 3 * w, 2), _block(3 * w, 4 * w, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, config.embed_dim))
        self.prototype_weight = nn.Parameter(torch.randn(len(CLASSES), config.centres, config.embed_dim))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[N, D] unit feature vectors of images [N, 3, SIZE, SIZE] in [0, 1]."""
        return F.normalize(self.encoder(images * 2 - 1), dim=1)

    def prototypes(self) -> torch.Tensor:
        """[classes, centres, D] unit prototypes (index 1 is live)."""
        return F.normalize(self.prototype_weight, dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return live_probability(self.features(images), self.prototypes(), self.config.scale)


def class_similarity(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """[N, classes]: each feature's cosine similarity to its nearest prototype of each class."""
    return torch.einsum("nd,ckd->nck", features, prototypes).amax(dim=2)


def live_probability(features: torch.Tensor, prototypes: torch.Tensor, scale: float) -> torch.Tensor:
    """[N] the score: softmax over the classes' prototype similarities, the live class's share."""
    return torch.softmax(scale * class_similarity(features, prototypes), dim=1)[:, 1]


def prototype_loss(features: torch.Tensor, labels: torch.Tensor, prototypes: torch.Tensor, margin: float,
                   scale: float) -> torch.Tensor:
    """Cross-entropy over class similarities with ``margin`` taken off the true class (CosFace-style)."""
    similarity = class_similarity(features, prototypes)
    similarity = similarity - margin * F.one_hot(labels, len(CLASSES))
    return F.cross_entropy(scale * similarity, labels)


def supervised_contrastive(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al., 2020): each feature pulled to the batch's others of its class."""
    logits = features @ features.T / temperature
    self_mask = torch.eye(len(features), dtype=torch.bool)
    logits = logits.masked_fill(self_mask, -1e9)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    counts = positives.sum(dim=1).clamp(min=1)
    return -(log_prob * positives).sum(dim=1).div(counts).mean()


def orthogonality(prototypes: torch.Tensor) -> torch.Tensor:
    """Mean squared off-diagonal cosine between all prototypes: keeps the centres spread."""
    flat = prototypes.reshape(-1, prototypes.shape[-1])
    gram = flat @ flat.T
    return (gram - torch.eye(len(flat))).pow(2).mean()


def training_images(config: FASConfig, split: str = "train") -> FaceImages:
    """The captures a model with ``config`` trains on (its domains and attacks only)."""
    return render(split, config.domains, config.attacks, config.live_per_identity, config.spoofs_per_attack,
                  seed=config.seed)


def augment(images: torch.Tensor, generator: torch.Generator, camera_jitter: bool = False) -> torch.Tensor:
    """Horizontal flips and small shifts (what a camera would vary without changing live / spoof); with
    ``camera_jitter`` also an unseen camera's resolution, blur, colour gains and noise, so that the features
    depend less on the training domains' cameras."""
    images = flip_and_shift(images, generator)
    return _camera_jitter(images, generator) if camera_jitter else images


def _camera_jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    size = images.shape[-1]
    low = int(torch.randint(size // 2, size + 1, (1,), generator=generator))
    images = F.interpolate(F.interpolate(images, size=low, mode="bilinear", align_corners=False), size=size,
                           mode="bilinear", align_corners=False)
    sigma = float(torch.rand(1, generator=generator)) * 1.2
    if sigma > 0.3:
        radius = 2
        taps = torch.exp(-torch.arange(-radius, radius + 1.0) ** 2 / (2 * sigma ** 2))
        taps = (taps / taps.sum()).to(images.dtype)
        images = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="replicate"),
                          taps.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
        images = F.conv2d(F.pad(images, (0, 0, radius, radius), mode="replicate"),
                          taps.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
    gains = 0.85 + 0.3 * torch.rand(len(images), 3, 1, 1, generator=generator)
    noise = 0.05 * torch.rand(len(images), 1, 1, 1, generator=generator) * torch.randn(images.shape, generator=generator)
    return (images * gains + noise).clamp(0, 1)


def train(config: FASConfig, progress: Callable[[int, float], None] | None = None) -> PrototypeFAS:
    """Train the base model (seeded) on the face world's train split under ``config``'s domains and attacks."""
    torch.manual_seed(config.seed)
    data = training_images(config)
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.live.astype(np.int64))
    model = PrototypeFAS(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    for step in range(config.train_steps):
        rows = torch.randint(len(images), (config.batch_size,), generator=generator)
        loss = _training_loss(model, augment(images[rows], generator, config.camera_jitter), labels[rows])
        lr = config.learning_rate * warmup_cosine(step, config.train_steps)
        training_step(optimizer, loss, step, lr, progress=progress)
    return model.eval()


def _training_loss(model: PrototypeFAS, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Prototype loss + supervised contrastive + prototype orthogonality, weighted as the config says."""
    config = model.config
    features = model.features(images)
    prototypes = model.prototypes()
    return (prototype_loss(features, labels, prototypes, config.margin, config.scale)
            + config.contrastive_weight * supervised_contrastive(features, labels, config.temperature)
            + config.orthogonal_weight * orthogonality(prototypes))


def fine_tune(model: PrototypeFAS, images: np.ndarray, live: np.ndarray, steps: int, seed: int = 0,
              learning_rate: float | None = None, progress: Callable[[int, float], None] | None = None) \
        -> PrototypeFAS:
    """Continue training a base model on a team's own face crops (class-balanced batches, the base's losses
    and augmentation).

    Args:
        model: the base model (changed in place).
        images: [N, 3, SIZE, SIZE] face crops in [0, 1]. live: [N] bool.
        steps: optimizer steps. learning_rate: default a tenth of the base's.
    Returns:
        The model, in eval mode.
    """
    config = model.config

    def batch_loss(batch: torch.Tensor, live_rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return _training_loss(model, augment(batch, generator, config.camera_jitter), live_rows.long())

    rate = config.learning_rate / 10 if learning_rate is None else learning_rate
    return balanced_fine_tune(model, images, live, steps, seed, rate, config.batch_size, batch_loss, progress)


def build_model(config: FASConfig) -> PrototypeFAS:
    """The model's structure for ``config`` (weights loaded by the zoo)."""
    return PrototypeFAS(config).eval()


def embed(model: PrototypeFAS, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """[N, D] features of images [N, 3, SIZE, SIZE] (the only view of the model an adaptor gets)."""
    return map_face_batches(model.features, images, batch_size)


def live_scores(model: PrototypeFAS, images: np.ndarray) -> np.ndarray:
    """[N] P(live) of images [N, 3, SIZE, SIZE] by the model's own prototypes and logit scale."""
    return live_probability(embed(model, images), model.prototypes().detach(), model.config.scale).numpy()
