import pytest
import torch

from effigy.errors import QuantizationError
from effigy.kvcache.quantizer import KVChunk, chunk_nbytes


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_chunk_round_trip_error_and_bytes(bits):
    x = torch.randn(1, 2, 16, 32)
    chunk = KVChunk.from_float(x, bits, group_size=32)
    step = (x.amax(-1, keepdim=True).clamp(min=0) - x.amin(-1, keepdim=True).clamp(max=0)) / (2**bits - 1)
    assert ((chunk.dequantize() - x).abs() <= step / 2 + 1e-3).all()
    assert chunk.nbytes == chunk_nbytes(x.shape, bits, 32) == x.numel() * bits // 8 + 2 * 2 * (x.numel() // 32)


@pytest.mark.parametrize("start,end", [(8, 4), (8, 2), (4, 2)])
def test_shrinking_in_the_integer_domain_stays_within_its_bound(start, end):
    x = torch.randn(2, 2, 24, 64) * torch.linspace(0.1, 5, 64)
    wide = KVChunk.from_float(x, start, group_size=32)
    narrow = wide.narrow(end)
    k = start - end
    bound = (2**k - 1) / 2 * wide.scale.float()  # per group, on top of the wide chunk's own error
    diff = (narrow.dequantize() - wide.dequantize()).unflatten(-1, (2, 32))
    assert (diff.abs() <= bound + 1e-2 * bound.abs() + 1e-3).all()
    requantized = KVChunk.from_float(x, end, group_size=32)
    assert (narrow.dequantize() - x).abs().mean() <= 1.5 * (requantized.dequantize() - x).abs().mean()
    assert narrow.nbytes < wide.nbytes


def test_bad_widths_are_refused():
    with pytest.raises(QuantizationError, match="KV bits"):
        KVChunk.from_float(torch.randn(1, 1, 4, 8), 3, 8)
    with pytest.raises(QuantizationError, match="lowers"):
        KVChunk.from_float(torch.randn(1, 1, 4, 8), 4, 8).narrow(8)
