"""Distances between a tensor and its reference, shared by the attention plan search and the
mixed-precision sensitivity evaluators."""
from __future__ import annotations

import torch


def relative_l1(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output - reference).abs().mean() / reference.abs().mean().clamp_min(1e-12))


def relative_l2(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float((output - reference).norm() / reference.norm().clamp_min(1e-12))


def cosine_distance(output: torch.Tensor, reference: torch.Tensor) -> float:
    return float(1 - torch.nn.functional.cosine_similarity(output.flatten(), reference.flatten(), dim=0))
