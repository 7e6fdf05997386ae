"""A CLIP-score stand-in for the shapes world: frozen EfficientNet-Lite0 image features (ImageNet
weights, ``effigy.models.encoders.image_encoder``) and frozen MiniLM sentence features, aligned by two
trained linear projections with a symmetric contrastive (InfoNCE) loss.

The score of an (image, caption) pair is ``100 * max(cos, 0)`` in the shared space, as CLIPScore is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effigy.models.config import TrainConfig
from effigy.models.contrastive import symmetric_info_nce
from effigy.models.encoders.image_encoder import IMAGE_FEATURES, load_efficientnet_lite0, pooled_features
from effigy.models.encoders.text_encoder import sentence_features


@dataclass
class AlignConfig(TrainConfig):
    embed_dim: int = 128
    image_size: int = 64  # 32x32 world images upsampled 2x: enough for ImageNet features, cheap on CPU
    train_images: int = 2400
    train_steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 2e-3
    seed: int = 0


class AlignmentHead(nn.Module):
    """The trained part: image and text projections and the contrastive temperature."""

    def __init__(self, config: AlignConfig, text_dim: int = 384) -> None:
        super().__init__()
        self.image_proj = nn.Linear(IMAGE_FEATURES, config.embed_dim)
        self.text_proj = nn.Linear(text_dim, config.embed_dim)
        self.log_temperature = nn.Parameter(torch.tensor(2.66))  # exp(2.66) ~ 1/0.07, CLIP's start

    def embed(self, image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.image_proj(image_features), dim=-1), F.normalize(self.text_proj(text_features), dim=-1)

    def contrastive_loss(self, image_features: torch.Tensor, text_features: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE; pairs sharing a caption are not counted as negatives of each other."""
        img, txt = self.embed(image_features, text_features)
        return symmetric_info_nce(img, txt, self.log_temperature.exp().clamp(max=100), caption_ids)


@torch.no_grad()
def image_features(backbone: nn.Module, images: torch.Tensor, size: int, batch: int = 64) -> torch.Tensor:
    """Pooled EfficientNet features of images in [-1, 1] (Lite models take inputs scaled that way)."""
    return torch.cat([pooled_features(backbone, images[start: start + batch], size)
                      for start in range(0, len(images), batch)])


def clip_scores(head: AlignmentHead, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
    img, txt = head.embed(image_feats, text_feats)
    return 100 * (img * txt).sum(-1).clamp_min(0)


def train_head(
    config: AlignConfig, image_feats: torch.Tensor, text_feats: torch.Tensor, caption_ids: torch.Tensor,
    progress: Callable[[int, float], None] | None = None,
) -> AlignmentHead:
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    head = AlignmentHead(config, text_feats.shape[1])
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    for step in range(config.train_steps):
        pick = torch.randperm(len(image_feats), generator=generator)[: config.batch_size]
        loss = head.contrastive_loss(image_feats[pick], text_feats[pick], caption_ids[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step, loss.item())
    return head.eval()


def train(config: AlignConfig, progress: Callable[[int, float], None] | None = None) -> AlignmentHead:
    """Seeded: render world scenes of both splits (some degraded), embed them with the two frozen
    encoders, and fit the projections."""
    from effigy.models.encoders.text_encoder import MiniLMTextEncoder
    from effigy.models.judges.shapes_checker import degrade, render_batch
    from effigy.worlds.shapes import ShapesWorld

    generator = torch.Generator().manual_seed(config.seed)
    half = config.train_images // 2
    scenes = ShapesWorld(seed=config.seed + 2).sample(half) + ShapesWorld(seed=config.seed + 2, split="heldout").sample(
        config.train_images - half)
    images = degrade(render_batch(scenes, 32), 0.2, generator)
    captions = [s.caption for s in scenes]
    unique = sorted(set(captions))
    hidden, mask = MiniLMTextEncoder().encode(unique)
    text_by_caption = sentence_features(hidden, mask)
    caption_ids = torch.tensor([unique.index(c) for c in captions])
    feats = image_features(load_efficientnet_lite0(), images, config.image_size)
    return train_head(config, feats, text_by_caption[caption_ids], caption_ids, progress)
