"""A training-free peer of LiteVAR's age: FastVAR-style cached token pruning (Guo et al., 2025,
https://arxiv.org/abs/2503.23367), re-implemented for effigy's VAR.

At the last scale, where most of the attention and MLP work is, only the "pivotal" tokens run through the
blocks: those whose input differs most from the scale's mean input (FastVAR's high-frequency proxy). The
pruned positions take the blocks' output of the previous scale, upsampled to this scale (the cached
low-frequency content), and every position goes through the head. Pruning only the last scale keeps the KV
cache whole for every scale a later one reads.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effigy.errors import BenchError
from effigy.nn.hooks import ModelHook, attach_hook, detach_hook


class FastVARPruning:
    """A ``scale_hook`` for :class:`~effigy.models.var.transformer.VARTransformer` keeping ``keep`` of the
    last scale's tokens."""

    def __init__(self, keep: float) -> None:
        if not 0 < keep <= 1:
            raise BenchError(f"FastVAR keeps a fraction of the last scale's tokens in (0, 1], got {keep}.")
        self.keep = keep
        self.previous: torch.Tensor | None = None  # the blocks' output of the scale before, [B, s*s, D]

    def __call__(self, model: nn.Module, x: torch.Tensor, cond: torch.Tensor, cache, index: int) -> torch.Tensor:
        if index < len(model.scales) - 1:
            hidden = model.hidden_states(x, cond, cache=cache, scale_index=index)
            self.previous = hidden
            return model.logits(hidden, cond)
        side, previous_side = model.scales[index], model.scales[index - 1]
        restored = _upsample_tokens(self.previous, previous_side, side)
        kept = pivotal_tokens(x, max(1, round(self.keep * x.shape[1])))
        gathered = kept.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        hidden = model.hidden_states(x.gather(1, gathered), cond, cache=cache, scale_index=index)
        return model.logits(restored.scatter(1, gathered, hidden), cond)


def pivotal_tokens(x: torch.Tensor, count: int) -> torch.Tensor:
    """Indices [B, count] of the tokens farthest (L2) from their scale's mean token, in position order."""
    distance = (x - x.mean(1, keepdim=True)).norm(dim=-1)
    return distance.topk(count, dim=1).indices.sort(dim=1).values


def _upsample_tokens(tokens: torch.Tensor, side: int, new_side: int) -> torch.Tensor:
    grid = tokens.transpose(1, 2).unflatten(2, (side, side))
    return F.interpolate(grid, size=(new_side, new_side), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)


class FastVARHook(ModelHook):
    """FastVAR's pruning in the VAR's own extension point, ``scale_hook``."""

    name = "fastvar"

    def __init__(self, pruning: FastVARPruning) -> None:
        self.pruning = pruning

    def attach(self, model: nn.Module) -> None:
        model.scale_hook = self.pruning

    def detach(self, model: nn.Module) -> None:
        model.scale_hook = None


def install_fastvar(model: nn.Module, keep: float) -> FastVARPruning:
    """Set the pruning hook on a VAR (``remove_fastvar`` takes it off)."""
    if not hasattr(model, "scale_hook"):
        raise BenchError(f"FastVAR pruning applies to effigy's VAR, not {type(model).__name__}.")
    return attach_hook(model, FastVARHook(FastVARPruning(keep))).pruning


def remove_fastvar(model: nn.Module) -> bool:
    """Take FastVAR's pruning off; whether it was on (without it, nothing is done, like every ``remove_*``)."""
    return detach_hook(model, FastVARHook.name) is not None
