"""Image-text contrastive losses shared by the CLIP stand-in and the deepfake encoder."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_info_nce(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
                       groups: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over a batch of matching (image, text) rows of unit vectors [B, D].

    Args:
        logit_scale: the inverse temperature.
        groups: [B] ids; rows of one group (the same caption, or captions of the same kind) are not counted
            as each other's negatives.
    """
    logits = logit_scale * image @ text.t()
    if groups is not None:
        same = groups[:, None] == groups[None, :]
        logits = logits.masked_fill(same & ~torch.eye(len(image), dtype=torch.bool), float("-inf"))
    target = torch.arange(len(image))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
