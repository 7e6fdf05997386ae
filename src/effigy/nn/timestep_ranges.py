"""Timestep-aware channel balancing (ViDiT-Q): a separate balancing divisor per range of diffusion
timesteps, each folded into its own copy of the packed weights.

Why: activation outlier channels of a DiT move with the noise level, so one divisor calibrated over
all timesteps fits none of them well. The price is one weight copy per range (counted in the bytes);
ViDiT-Q's static-dynamic variant (one divisor + Hadamard rotation, ``rotate=True``) avoids it.

The transformer's timestep reaches the layers through ``TimestepRanges``: a :class:`~effigy.nn.hooks.ModelHook`
on the root model (``timestep-ranges``) records each sample's range index before the blocks run.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from effigy.core.quant import QuantizationError, QuantSpec
from effigy.nn.hooks import ModelHook, attach_hook, detach_hook
from effigy.nn.quant_linear import QuantLinear


class TimestepRanges(ModelHook):
    """Splits [0, num_train_timesteps) into ``count`` equal ranges and tracks the current call's ranges."""

    name = "timestep-ranges"

    def __init__(self, count: int, num_train_timesteps: int = 1000) -> None:
        if count < 1 or num_train_timesteps < count:
            raise QuantizationError(f"timestep ranges: need 1 <= count <= num_train_timesteps, got {count} "
                                    f"and {num_train_timesteps}")
        self.count, self.num_train_timesteps = count, num_train_timesteps
        self.current: torch.Tensor | None = None  # range index per sample of the running call

    def index(self, timestep: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timestep).float().flatten()
        return (t * self.count / self.num_train_timesteps).long().clamp(0, self.count - 1)

    def attach(self, model: nn.Module) -> None:
        """Record the ranges at each call of ``model`` (a bound method, so ``copy.deepcopy(model)``
        gets a hook on its own copy of this object, shared with its own layers)."""
        self.register(model, self._record, with_kwargs=True)

    def detach(self, model: nn.Module) -> None:
        self.unregister(model)

    def reset(self) -> None:
        self.current = None

    @contextmanager
    def attached(self, model: nn.Module) -> Iterator[None]:
        """Attached for the length of the block (a calibration run)."""
        attach_hook(model, self)
        try:
            yield
        finally:
            detach_hook(model, self.name)

    def _record(self, _module, args, kwargs) -> None:
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if timestep is None:
            raise QuantizationError("timestep-aware balancing needs the model to be called with `timestep`")
        self.current = self.index(timestep)

    def rows_per_range(self, batch: int) -> list[tuple[int, torch.Tensor]]:
        """(range, sample mask) pairs for a batch of ``batch`` samples."""
        if self.current is None:
            raise QuantizationError("no timestep recorded: call the quantized model itself, not a single layer")
        current = self.current.expand(batch) if self.current.numel() == 1 else self.current
        if current.numel() != batch:
            raise QuantizationError(f"{current.numel()} timesteps for a batch of {batch} samples")
        return [(int(r), current == r) for r in current.unique()]


class TimestepBalancedLinear(nn.Module):
    """One :class:`QuantLinear` per timestep range; each sample runs through its range's copy."""

    def __init__(self, layers: list[QuantLinear], ranges: TimestepRanges) -> None:
        super().__init__()
        self.ranges = nn.ModuleList(layers)
        self.timestep_ranges = ranges
        self.in_features, self.out_features = layers[0].in_features, layers[0].out_features

    @classmethod
    def from_linear(cls, linear: nn.Linear, weight_spec: QuantSpec, act_spec: QuantSpec | None,
                    divisors: torch.Tensor, ranges: TimestepRanges, backend: str = "reference",
                    rotated: bool = False) -> "TimestepBalancedLinear":
        return cls([QuantLinear.from_linear(linear, weight_spec, act_spec, backend=backend, input_divisor=d,
                                            rotated=rotated) for d in divisors], ranges)

    @property
    def weight_spec(self) -> QuantSpec:
        return self.ranges[0].weight_spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.timestep_ranges.rows_per_range(x.shape[0])
        if len(groups) == 1:
            return self.ranges[groups[0][0]](x)
        out = x.new_empty(*x.shape[:-1], self.out_features)
        for index, rows in groups:
            out[rows] = self.ranges[index](x[rows])
        return out
