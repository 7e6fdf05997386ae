"""Uniform integer quantization: one spec type, one set of functions, used by every method in effigy.

Granularity decides which elements share a scale:
  tensor  - one scale for the whole tensor
  channel - one scale per slice along ``channel_axis`` (weights: per output channel, axis 0)
  token   - one scale per row: everything but the last dimension is kept (activations: per token)
  group   - one scale per ``group_size`` consecutive elements of the last dimension
Scales and zero points are returned with a shape that broadcasts against the input.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from effigy.errors import QuantizationError
from effigy.serialize import config_from_dict, config_to_dict

Granularity = Literal["tensor", "channel", "token", "group"]
GRANULARITIES = ("tensor", "channel", "token", "group")
MIN_BITS, MAX_BITS = 2, 8


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize one tensor: bit-width, which elements share a scale, symmetry, when scales are set.

    ``dynamic=True`` computes scales from each input at run time (per-token activations);
    ``dynamic=False`` uses scales fixed by an observer during calibration.
    """

    bits: int = 8
    granularity: Granularity = "tensor"
    symmetric: bool = True
    dynamic: bool = False
    group_size: int | None = None
    channel_axis: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise QuantizationError(
                f"bits={self.bits!r} is not supported: choose an integer from {MIN_BITS} to {MAX_BITS}."
            )
        if self.granularity not in GRANULARITIES:
            raise QuantizationError(
                f"granularity={self.granularity!r} is unknown: choose one of {', '.join(GRANULARITIES)}."
            )
        if self.granularity == "group" and (not isinstance(self.group_size, int) or self.group_size < 1):
            raise QuantizationError("granularity='group' needs a positive integer group_size, e.g. 64.")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "QuantSpec":
        return config_from_dict(cls, data, QuantizationError)


def _reduce_dims(x: torch.Tensor, spec: QuantSpec) -> tuple[int, ...]:
    if spec.granularity == "tensor":
        return tuple(range(x.dim()))
    if spec.granularity == "channel":
        axis = spec.channel_axis % x.dim()
        return tuple(d for d in range(x.dim()) if d != axis)
    return (x.dim() - 1,)  # token, and group after reshaping


def _grouped(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """View the last dimension as [n_groups, group_size] for group granularity."""
    if spec.granularity != "group":
        return x
    size = x.shape[-1]
    if size % spec.group_size:
        raise QuantizationError(
            f"group_size={spec.group_size} does not divide the last dimension ({size}); "
            f"choose a divisor of {size}."
        )
    return x.reshape(*x.shape[:-1], size // spec.group_size, spec.group_size)


def qparams_from_range(
    lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map [lo, hi] onto the integer grid of ``spec``."""
    eps = torch.finfo(torch.float32).eps
    if spec.symmetric:
        scale = torch.maximum(lo.abs(), hi.abs()).float() / spec.qmax
        return scale.clamp_min(eps), torch.zeros_like(scale)
    lo, hi = lo.clamp(max=0).float(), hi.clamp(min=0).float()
    scale = ((hi - lo) / (spec.qmax - spec.qmin)).clamp_min(eps)
    zero_point = (spec.qmin - torch.round(lo / scale)).clamp(spec.qmin, spec.qmax)
    return scale, zero_point


def compute_qparams(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale and zero point of ``x`` at the spec's granularity (shapes broadcast against ``x``,
    or against the grouped view for group granularity)."""
    xg = _grouped(x.detach(), spec)
    dims = _reduce_dims(xg, spec)
    return qparams_from_range(xg.amin(dim=dims, keepdim=True), xg.amax(dim=dims, keepdim=True), spec)


def symmetric_token_scale(x: torch.Tensor, qmax: int) -> torch.Tensor:
    """Per-row symmetric scale of a 2-D ``x`` [tokens, features] in one pass (``aminmax``); equal to
    :func:`compute_qparams`' scale for a symmetric per-token spec, for the integer hot paths."""
    lo, hi = torch.aminmax(x.detach(), dim=-1, keepdim=True)
    scale = torch.maximum(lo.abs(), hi.abs()).float() / qmax
    return scale.clamp_min(torch.finfo(torch.float32).eps)


def quantize(
    x: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero_point: torch.Tensor
) -> torch.Tensor:
    """Round to the integer grid; returns int8 for signed grids and uint8 for unsigned ones (bits <= 8)."""
    xg = _grouped(x, spec)
    q = torch.clamp(torch.round(xg / scale) + zero_point, spec.qmin, spec.qmax)
    q = q.reshape(x.shape)
    return q.to(torch.int8 if spec.symmetric else torch.uint8)


def dequantize(
    q: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero_point: torch.Tensor
) -> torch.Tensor:
    qg = _grouped(q.float(), spec)
    return ((qg - zero_point) * scale).reshape(q.shape)


def fake_quantize(
    x: torch.Tensor,
    spec: QuantSpec,
    scale: torch.Tensor | None = None,
    zero_point: torch.Tensor | None = None,
) -> torch.Tensor:
    """Quantize-dequantize in floating point, for search and simulation only (no integer storage).

    Gradients pass straight through the rounding (straight-through estimator).
    """
    if scale is None or zero_point is None:
        scale, zero_point = compute_qparams(x, spec)
    xg = _grouped(x, spec)
    q = torch.clamp(torch.round(xg / scale) + zero_point, spec.qmin, spec.qmax)
    xq = ((q - zero_point) * scale).reshape(x.shape).to(x.dtype)
    return x + (xq - x).detach()


class MinMaxObserver:
    """Tracks the running min and max of calibration tensors at the spec's granularity."""

    def __init__(self, spec: QuantSpec) -> None:
        self.spec = spec
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    def _batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.spec.granularity == "token":
            raise QuantizationError(
                "per-token scales depend on each input; use dynamic=True for token granularity."
            )
        xg = _grouped(x.detach().float(), self.spec)
        dims = _reduce_dims(xg, self.spec)
        return xg.amin(dim=dims, keepdim=True), xg.amax(dim=dims, keepdim=True)

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._batch_range(x)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lo is None:
            raise QuantizationError(
                "the observer saw no data: the calibration loop never reached this layer."
            )
        return qparams_from_range(self.lo, self.hi, self.spec)


class EMAObserver(MinMaxObserver):
    """Min and max smoothed by an exponential moving average, less sensitive to one outlier batch."""

    def __init__(self, spec: QuantSpec, momentum: float = 0.1) -> None:
        super().__init__(spec)
        if not 0 < momentum <= 1:
            raise QuantizationError(f"momentum={momentum} must lie in (0, 1].")
        self.momentum = momentum

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._batch_range(x)
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            self.lo = self.lo + self.momentum * (lo - self.lo)
            self.hi = self.hi + self.momentum * (hi - self.hi)


def channel_balance_divisor(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel divisor s = a_max^alpha / w_max^(1 - alpha).

    Dividing the activation by s and multiplying the weight's columns by s keeps x W^T exact while
    moving outlier magnitude from activations (hard: per token) into weights (easy: per channel).
    ``act_absmax`` is [in_features]; ``weight`` is [out_features, in_features].
    """
    if not 0 <= alpha <= 1:
        raise QuantizationError(f"smooth_alpha={alpha} must lie in [0, 1] (0.5 is the usual choice).")
    w_max = weight.detach().abs().amax(dim=0).float().clamp_min(1e-5)
    s = act_absmax.float().clamp_min(1e-5) ** alpha / w_max ** (1 - alpha)
    return s.clamp(1e-4, 1e4)


def shift_to_bits(
    q: torch.Tensor, spec: QuantSpec, scale: torch.Tensor, zero_point: torch.Tensor, bits: int
) -> tuple[torch.Tensor, QuantSpec, torch.Tensor, torch.Tensor]:
    """Narrow an asymmetric integer grid to ``bits`` in the integer domain: q >> k, scale * 2**k, and
    a zero point moved to the centre of each merged bucket, so that no float copy is needed and the
    extra error is at most (2**k - 1) / 2 * scale per element (k = spec.bits - bits)."""
    if spec.symmetric:
        raise QuantizationError("shift_to_bits narrows asymmetric (unsigned) grids only.")
    k = spec.bits - bits
    if k < 0:
        raise QuantizationError(f"cannot widen a {spec.bits}-bit grid to {bits} bits in the integer domain.")
    narrow = replace(spec, bits=bits)
    shifted = (q.to(torch.int16) >> k).to(torch.uint8)
    return shifted, narrow, scale * 2**k, (zero_point - (2**k - 1) / 2) / 2**k
