import pytest
import torch

from effigy.core import kernels
from effigy.errors import QuantizationError


@pytest.mark.parametrize("m,k,n", [(32, 64, 16), (5, 7, 3)])
def test_int_matmul_is_exact(m, k, n):
    x = torch.randint(-127, 128, (m, k), dtype=torch.int8)
    w = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    expected = x.long() @ w.long().t()
    assert torch.equal(kernels.int_matmul(x, w).long(), expected)


def test_fbgemm_path_is_exact_within_its_activation_bits():
    bits = kernels.fbgemm_max_activation_bits()
    qmax = 2 ** (bits - 1) - 1
    x = torch.randint(-qmax, qmax + 1, (40, 64)).float()
    w = torch.randint(-127, 128, (24, 64), dtype=torch.int8)
    w_scale = torch.rand(24) + 0.5
    y = kernels.fbgemm_linear(x, kernels.fbgemm_prepack(w, w_scale), bits)
    expected = (x.double() @ w.double().t()) * w_scale.double()
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-3)


def test_fbgemm_refuses_8bit_activations_without_vnni(monkeypatch):
    monkeypatch.setattr(kernels, "cpu_has_vnni", lambda: False)
    packed = kernels.fbgemm_prepack(torch.ones(8, 8, dtype=torch.int8), torch.ones(8))
    with pytest.raises(QuantizationError, match="at most 7 bits"):
        kernels.fbgemm_linear(torch.zeros(2, 8), packed, 8)
