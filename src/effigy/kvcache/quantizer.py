"""Key/value chunks stored as packed integers: asymmetric, one scale and zero point per group of
``group_size`` channels along head_dim, at 16 (fp16, unquantized), 8, 4 or 2 bits.

Built on :mod:`effigy.core.quant` (the grid) and :mod:`effigy.core.packing` (the bytes); the bytes a
chunk holds are exactly what ``nbytes`` reports: packed integers plus fp16 scales and zero points.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from effigy.core.packing import pack, packed_nbytes, unpack
from effigy.core.quant import QuantizationError, QuantSpec, compute_qparams, dequantize, quantize, shift_to_bits

KV_BITS = (16, 8, 4, 2)


def kv_spec(bits: int, group_size: int) -> QuantSpec:
    return QuantSpec(bits=bits, granularity="group", group_size=group_size, symmetric=False)


@dataclass
class KVChunk:
    """A [batch, heads, tokens, head_dim] block of keys or values at ``bits``."""

    shape: tuple[int, ...]
    bits: int
    group_size: int
    data: torch.Tensor  # fp16 values (16 bits) or packed uint8
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
        return cls(tuple(x.shape), bits, group_size, pack(q, bits, 0), scale.half(), zero_point.half())

    def integers(self) -> torch.Tensor:
        return unpack(self.data, self.bits, 0, self.shape)

    def dequantize(self) -> torch.Tensor:
        if self.bits == 16:
            return self.data.float()
        spec = kv_spec(self.bits, self.group_size)
        return dequantize(self.integers(), spec, self.scale.float(), self.zero_point.float())

    def narrow(self, bits: int) -> "KVChunk":
        """The same chunk at fewer bits: from the stored integers (right shift, adjusted scale), or
        quantized from the fp16 values when leaving 16 bits."""
        if bits >= self.bits:
            raise QuantizationError(f"narrow() lowers the width: {self.bits} -> {bits} is not lower.")
        if self.bits == 16:
            return KVChunk.from_float(self.data.float(), bits, self.group_size)
        spec = kv_spec(self.bits, self.group_size)
        q, narrow, scale, zero_point = shift_to_bits(self.integers(), spec, self.scale.float(),
                                                     self.zero_point.float(), bits)
        return KVChunk(self.shape, bits, self.group_size, pack(q, bits, 0), scale.half(), zero_point.half())

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
