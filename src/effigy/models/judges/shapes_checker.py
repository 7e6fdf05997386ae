"""The attribute checker: a small grid detector trained on the shapes world's ground truth.

It splits a 32x32 image into 4x4 cells of 8 pixels; for each cell it predicts whether an object's
centre lies there, and that object's colour, shape, size and centre offset. The world keeps the two
objects of a relation or count scene on either side of the image's middle line, so two objects never
share a cell. Reading objects back makes prompt adherence exact and explainable (see
``effigy.metrics.adherence``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effigy.models.config import TrainConfig
from effigy.models.supervised import fit
from effigy.worlds.shapes import COLOURS, SHAPES, SIZES, Scene, ShapeObject, ShapesWorld, render

COLOUR_NAMES, SIZE_NAMES = tuple(COLOURS), tuple(SIZES)
CELL = 8
CHANNELS = 1 + len(COLOUR_NAMES) + len(SHAPES) + len(SIZE_NAMES) + 2


@dataclass
class CheckerConfig(TrainConfig):
    sample_size: int = 32
    width: int = 32
    train_steps: int = 2000
    batch_size: int = 64
    train_scenes: int = 8000
    learning_rate: float = 2e-3
    max_noise: float = 0.2
    seed: int = 0


class ShapesChecker(nn.Module):
    def __init__(self, config: CheckerConfig) -> None:
        super().__init__()
        w = config.width
        conv = lambda cin, cout, stride: nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GELU())
        self.net = nn.Sequential(
            conv(3, w, 1), conv(w, w, 2), conv(w, 2 * w, 1), conv(2 * w, 2 * w, 2), conv(2 * w, 4 * w, 1),
            conv(4 * w, 4 * w, 2), nn.Conv2d(4 * w, CHANNELS, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, 32, 32] in [-1, 1] -> per-cell predictions [N, 4, 4, CHANNELS]."""
        return self.net(images).permute(0, 2, 3, 1)


@dataclass(frozen=True)
class Detection:
    colour: str
    shape: str
    size: str
    x: float
    y: float
    confidence: float


def targets_for(scenes: list[Scene], grid: int) -> tuple[torch.Tensor, ...]:
    """Objectness, class indices and offsets per cell for a batch of scenes."""
    n = len(scenes)
    objectness = torch.zeros(n, grid, grid)
    colour = torch.full((n, grid, grid), -100, dtype=torch.long)  # -100: ignored by cross_entropy
    shape, size = colour.clone(), colour.clone()
    offset = torch.zeros(n, grid, grid, 2)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            r, c = min(int(obj.y // CELL), grid - 1), min(int(obj.x // CELL), grid - 1)
            objectness[i, r, c] = 1
            colour[i, r, c] = COLOUR_NAMES.index(obj.colour)
            shape[i, r, c] = SHAPES.index(obj.shape)
            size[i, r, c] = SIZE_NAMES.index(obj.size)
            offset[i, r, c] = torch.tensor([obj.x / CELL - c, obj.y / CELL - r])
    return objectness, colour, shape, size, offset


def _split(pred: torch.Tensor) -> tuple[torch.Tensor, ...]:
    bounds = [1, len(COLOUR_NAMES), len(SHAPES), len(SIZE_NAMES), 2]
    obj, colour, shape, size, offset = torch.split(pred, bounds, dim=-1)
    return obj.squeeze(-1), colour, shape, size, offset


def checker_loss(pred: torch.Tensor, targets: tuple[torch.Tensor, ...]) -> torch.Tensor:
    obj, colour, shape, size, offset = _split(pred)
    t_obj, t_colour, t_shape, t_size, t_offset = targets
    has = t_obj > 0
    loss = F.binary_cross_entropy_with_logits(obj, t_obj)
    for logits, target in ((colour, t_colour), (shape, t_shape), (size, t_size)):
        loss = loss + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    return loss + F.mse_loss(torch.sigmoid(offset[has]), t_offset[has])


def render_batch(scenes: list[Scene], size: int) -> torch.Tensor:
    from effigy.models.generators.t2i_shapes import images_to_tensor

    return images_to_tensor([render(s, size) for s in scenes])


def degrade(images: torch.Tensor, max_noise: float, generator: torch.Generator) -> torch.Tensor:
    """Pixel noise and occasional blur, so the checker reads imperfect generated images too."""
    noise = torch.rand(len(images), 1, 1, 1, generator=generator) * max_noise
    out = images + noise * torch.randn(images.shape, generator=generator)
    blur = torch.rand(len(images), generator=generator) < 0.3
    if blur.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
        out[blur] = F.conv2d(F.pad(out[blur], (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    return out.clamp(-1, 1)


def train(config: CheckerConfig, progress: Callable[[int, float], None] | None = None) -> ShapesChecker:
    """Seeded training on rendered scenes of both splits (a quarter held-out pairs): a judge must know
    every composition, unlike the generator."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    quarter = config.train_scenes // 4
    scenes = (ShapesWorld(config.sample_size, seed=config.seed + 1).sample(config.train_scenes - quarter)
              + ShapesWorld(config.sample_size, seed=config.seed + 1, split="heldout").sample(quarter))
    images = render_batch(scenes, config.sample_size)
    targets = targets_for(scenes, config.sample_size // CELL)

    def batch_loss(model: nn.Module, generator: torch.Generator) -> torch.Tensor:
        pick = torch.randint(0, len(scenes), (config.batch_size,), generator=generator)
        batch = degrade(images[pick], config.max_noise, generator)
        return checker_loss(model(batch), tuple(t[pick] for t in targets))

    return fit(ShapesChecker(config), batch_loss, config.train_steps, config.learning_rate, generator, progress)


@torch.no_grad()
def detect(model: ShapesChecker, images: torch.Tensor, threshold: float = 0.5) -> list[list[Detection]]:
    obj, colour, shape, size, offset = _split(model(images))
    conf = torch.sigmoid(obj)
    found = []
    for i in range(len(images)):
        detections = []
        for r, c in (conf[i] > threshold).nonzero().tolist():
            dx, dy = torch.sigmoid(offset[i, r, c]).tolist()
            detections.append(Detection(
                COLOUR_NAMES[colour[i, r, c].argmax()], SHAPES[shape[i, r, c].argmax()],
                SIZE_NAMES[size[i, r, c].argmax()], (c + dx) * CELL, (r + dy) * CELL, conf[i, r, c].item(),
            ))
        found.append(detections)
    return found


def as_objects(detections: list[Detection]) -> list[ShapeObject]:
    return [ShapeObject(d.shape, d.colour, d.size, d.x, d.y) for d in detections]

