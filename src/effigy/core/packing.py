"""Bit packing of small integers into bytes, so that int4 and int2 tensors really take 4 and 2 bits.

Values are stored as unsigned offsets from ``qmin`` (so signed grids pack too), low bits first:
for 4 bits, element 2i sits in the low nibble of byte i and element 2i+1 in the high nibble.
"""
from __future__ import annotations

import math

import torch

from effigy.core.quant import QuantizationError

PACKABLE_BITS = (2, 4, 8)


def container_bits(bits: int) -> int:
    """The storage width for a grid of ``bits``: 3 bits live in 4-bit slots, 5..8 in bytes."""
    for width in PACKABLE_BITS:
        if bits <= width:
            return width
    raise QuantizationError(f"cannot pack {bits}-bit values: at most 8 bits are supported.")


def packed_nbytes(numel: int, bits: int) -> int:
    """Exact bytes ``numel`` values of ``bits`` occupy once packed."""
    return math.ceil(numel * container_bits(bits) / 8)


def pack(q: torch.Tensor, bits: int, qmin: int) -> torch.Tensor:
    """Pack integer values in [qmin, qmin + 2**bits - 1] into a flat uint8 tensor."""
    width = container_bits(bits)
    offset = q.to(torch.int16).flatten() - qmin
    if offset.numel() and (offset.min() < 0 or offset.max() > 2**bits - 1):
        raise QuantizationError(f"values fall outside the {bits}-bit grid starting at {qmin}; quantize first.")
    offset = offset.to(torch.uint8)
    per_byte = 8 // width
    pad = (-offset.numel()) % per_byte
    if pad:
        offset = torch.cat([offset, offset.new_zeros(pad)])
    lanes = offset.view(-1, per_byte)
    packed = torch.zeros(lanes.shape[0], dtype=torch.uint8)
    for lane in range(per_byte):
        packed |= lanes[:, lane] << (lane * width)
    return packed


def unpack(packed: torch.Tensor, bits: int, qmin: int, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack`; returns int16 values (wide enough for every 8-bit grid) of ``shape``."""
    width = container_bits(bits)
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.numel() != packed_nbytes(numel, bits):
        raise QuantizationError(
            f"packed buffer holds {packed.numel()} {packed.dtype} values, but {tuple(shape)} at {bits} bits "
            f"needs {packed_nbytes(numel, bits)} uint8 bytes: the checkpoint does not match the model."
        )
    per_byte = 8 // width
    mask = (1 << width) - 1
    lanes = [(packed >> (lane * width)) & mask for lane in range(per_byte)]
    values = torch.stack(lanes, dim=1).flatten()[:numel]
    return (values.to(torch.int16) + qmin).view(tuple(shape))
