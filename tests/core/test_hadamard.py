import pytest
import torch

from effigy.core.hadamard import hadamard_matrix, rotate
from effigy.errors import QuantizationError


@pytest.mark.parametrize("n", [1, 2, 8, 64, 256])
def test_hadamard_is_orthonormal(n):
    h = hadamard_matrix(n)
    assert torch.allclose(h @ h.T, torch.eye(n), atol=1e-5)


def test_rotating_both_operands_keeps_the_linear_output():
    torch.manual_seed(0)
    x, w = torch.randn(5, 64), torch.randn(32, 64)
    assert torch.allclose(rotate(x) @ rotate(w).T, x @ w.T, atol=1e-4)


def test_rotation_spreads_an_outlier_channel():
    x = torch.randn(16, 128) * 0.1
    x[:, 7] = 50.0
    ratio = lambda t: (t.abs().amax(-1) / t.abs().mean(-1)).mean()
    assert ratio(rotate(x)) < ratio(x) / 10


def test_non_power_of_two_is_a_clear_error():
    with pytest.raises(QuantizationError, match="power-of-two"):
        hadamard_matrix(48)
    with pytest.raises(QuantizationError, match="power-of-two"):
        rotate(torch.randn(2, 48))
