import pytest
import torch
import torch.nn.functional as F

from effigy.attention.window import band_attention, band_pairs, half_window_for
from effigy.errors import EffigyError


@pytest.mark.parametrize("tokens,half", [(64, 1), (64, 4), (50, 3), (16, 7), (9, 20)])
def test_band_attention_equals_masked_full_attention(tokens, half):
    q, k, v = (torch.randn(2, 3, tokens, 8) for _ in range(3))
    i = torch.arange(tokens)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=(i[:, None] - i[None]).abs() <= half)
    torch.testing.assert_close(band_attention(q, k, v, half), reference, atol=1e-5, rtol=1e-5)


def test_band_cost_shrinks_with_the_window():
    costs = [band_pairs(256, half) for half in (2, 8, 32, 255)]
    assert costs == sorted(costs) and costs[-1] == 256 * 256
    assert costs[0] < 0.05 * 256 * 256  # a narrow band computes a small fraction of the pairs


def test_window_fraction_is_checked():
    assert half_window_for(64, 0.125) == 4
    with pytest.raises(EffigyError, match="window fraction"):
        half_window_for(64, 0)
