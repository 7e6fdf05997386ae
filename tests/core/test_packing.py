import math

import pytest
import torch

from effigy.core import QuantSpec, pack, packed_nbytes, unpack
from effigy.errors import QuantizationError


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 16)])
def test_pack_unpack_round_trip_is_exact(bits, symmetric, shape):
    spec = QuantSpec(bits=bits, symmetric=symmetric)
    q = torch.randint(spec.qmin, spec.qmax + 1, shape)
    packed = pack(q, bits, spec.qmin)
    assert packed.dtype == torch.uint8
    assert packed.numel() == packed_nbytes(math.prod(shape), bits)
    assert torch.equal(unpack(packed, bits, spec.qmin, shape).long(), q)


@pytest.mark.parametrize("bits,numel,expected", [(8, 10, 10), (4, 10, 5), (4, 11, 6), (2, 10, 3), (2, 8, 2), (3, 10, 5)])
def test_byte_accounting(bits, numel, expected):
    assert packed_nbytes(numel, bits) == expected


def test_int4_layout_low_nibble_first():
    packed = pack(torch.tensor([1, 2]), 4, 0)
    assert packed.tolist() == [0x21]


def test_values_outside_grid_and_wrong_buffer_are_errors():
    with pytest.raises(QuantizationError, match="outside the 4-bit grid"):
        pack(torch.tensor([16]), 4, 0)
    with pytest.raises(QuantizationError, match="does not match the model"):
        unpack(torch.zeros(3, dtype=torch.uint8), 4, 0, (10,))
