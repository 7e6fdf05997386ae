"""Key/value blocks stored as packed integers: asymmetric, one scale and zero point per group of
``group_size`` elements along the last axis, at 16 (fp16, unquantized), 8, 4 or 2 bits.

Built on :mod:`effigy.core.quant` (the grid) and :mod:`effigy.core.packing` (the bytes). The packed
integers keep the tensor's shape but the last axis (``[..., last * bits / 8]`` bytes), so blocks are
appended along any other axis, or along the grouped last axis, without repacking; the bytes a block
holds are exactly what ``nbytes`` reports: packed integers plus fp16 scales and zero points.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from effigy.core.packing import container_bits, pack, packed_nbytes, unpack
from effigy.core.quant import QuantizationError, QuantSpec, compute_qparams, quantize, shift_to_bits

KV_BITS = (16, 8, 4, 2)


def kv_spec(bits: int, group_size: int) -> QuantSpec:
    return QuantSpec(bits=bits, granularity="group", group_size=group_size, symmetric=False)


def _packed_last_axis(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack along the last axis: ``pack``'s flat layout is row-major, so it is a view of [..., bytes]."""
    per_byte = 8 // container_bits(bits)
    if q.shape[-1] % per_byte:
        raise QuantizationError(f"a last axis of {q.shape[-1]} cannot be packed at {bits} bits: it must be a "
                                f"multiple of {per_byte}")
    return pack(q, bits, 0).view(*q.shape[:-1], -1)


def _unsigned_grid(data: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 grid values [..., last] from bytes packed along the last axis (low bits first)."""
    width = container_bits(bits)
    if width == 8:
        return data
    mask = (1 << width) - 1
    lanes = [(data >> (lane * width)) & mask if lane else data & mask for lane in range(8 // width)]
    return torch.stack(lanes, -1).flatten(-2)


@dataclass
class KVChunk:
    """A block of keys or values at ``bits`` (usually [batch, heads, tokens, head_dim])."""

    shape: tuple[int, ...]
    bits: int
    group_size: int
    data: torch.Tensor  # fp16 values (16 bits) or uint8 bytes packed along the last axis
    scale: torch.Tensor | None = None  # fp16 [..., groups, 1]
    zero_point: torch.Tensor | None = None

    @classmethod
    def from_float(cls, x: torch.Tensor, bits: int, group_size: int) -> "KVChunk":
        if bits not in KV_BITS:
            raise QuantizationError(f"KV bits={bits} is not supported: choose one of {KV_BITS}.")
        if bits == 16:
            return cls(tuple(x.shape), 16, group_size, x.detach().to(torch.float16))
        spec = kv_spec(bits, group_size)
        x = x.detach().float()
        scale, zero_point = compute_qparams(x, spec)
        q = quantize(x, spec, scale, zero_point)
        return cls(tuple(x.shape), bits, group_size, _packed_last_axis(q, bits), scale.half(), zero_point.half())

    def integers(self) -> torch.Tensor:
        return unpack(self.data.flatten(), self.bits, 0, self.shape)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out = torch.empty(self.shape, dtype=dtype, device=self.data.device)
        self.dequantize_into(out)
        return out

    def dequantize_into(self, target: torch.Tensor) -> None:
        """Write the float values into ``target`` (a tensor or a strided view of this block's shape):
        the decode hot path, so no intermediate float copies."""
        if self.bits == 16:
            target.copy_(self.data)
            return
        groups = (*self.shape[:-1], self.shape[-1] // self.group_size, self.group_size)
        grouped = target.view(groups)
        grouped.copy_(_unsigned_grid(self.data, self.bits).view(groups))
        grouped.sub_(self.zero_point).mul_(self.scale)

    def appended(self, other: "KVChunk", axis: int) -> "KVChunk":
        """``self`` and ``other`` joined along ``axis`` (a non-negative axis of ``shape``; the last axis
        joins groups), as one block: a layer's whole main cache stays one packed store."""
        if other.bits != self.bits or other.group_size != self.group_size:
            raise QuantizationError(f"cannot join a {other.bits}-bit block to a {self.bits}-bit one")
        last = len(self.shape) - 1
        shape = tuple(a + b if d == axis else a for d, (a, b) in enumerate(zip(self.shape, other.shape)))
        data = torch.cat([self.data, other.data], axis)
        group_axis = last if axis == last else axis  # scales are [..., groups, 1]: the last axis' groups
        extras = [None if a is None else torch.cat([a, b], group_axis) for a, b in
                  ((self.scale, other.scale), (self.zero_point, other.zero_point))]
        return KVChunk(shape, self.bits, self.group_size, data, *extras)

    def narrow(self, bits: int) -> "KVChunk":
        """The same block at fewer bits: from the stored integers (right shift, adjusted scale), or
        quantized from the fp16 values when leaving 16 bits."""
        if bits >= self.bits:
            raise QuantizationError(f"narrow() lowers the width: {self.bits} -> {bits} is not lower.")
        if self.bits == 16:
            return KVChunk.from_float(self.data.float(), bits, self.group_size)
        spec = kv_spec(self.bits, self.group_size)
        q, narrow, scale, zero_point = shift_to_bits(self.integers(), spec, self.scale.float(),
                                                     self.zero_point.float(), bits)
        return KVChunk(self.shape, bits, self.group_size, _packed_last_axis(q, bits), scale.half(), zero_point.half())

    @property
    def tokens(self) -> int:
        return self.shape[-2]

    @property
    def nbytes(self) -> int:
        extras = sum(t.numel() * t.element_size() for t in (self.scale, self.zero_point) if t is not None)
        return self.data.numel() * self.data.element_size() + extras


def chunk_nbytes(shape: tuple[int, ...], bits: int, group_size: int) -> int:
    """Bytes a chunk of ``shape`` takes at ``bits`` (for budgets, before any chunk exists)."""
    numel = 1
    for size in shape:
        numel *= size
    if bits == 16:
        return 2 * numel
    groups = numel // group_size
    return packed_nbytes(numel, bits) + 2 * 2 * groups
