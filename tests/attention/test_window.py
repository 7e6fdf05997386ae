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


def _reference(q, k, v, half):
    i = torch.arange(q.shape[-2])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=(i[:, None] - i[None]).abs() <= half)


@pytest.mark.parametrize("tokens,half", [(256, 0), (256, 16), (300, 40), (384, 200), (256, 254), (130, 129)])
@pytest.mark.parametrize("kernel", ["chunked", "flex"])
def test_both_kernels_equal_the_masked_reference_at_the_edges(tokens, half, kernel):
    """Narrowest band (each query alone), blocks cut by the band, a length not a multiple of the block, a band
    wider than a block, nearly everything kept, and a band covering everything (no skip: dense attention)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, tokens, 16) for _ in range(3))
    torch.testing.assert_close(band_attention(q, k, v, half, kernel=kernel), _reference(q, k, v, half),
                               atol=2e-5, rtol=2e-5)


def test_the_flex_kernel_inside_a_compiled_model_equals_the_reference():
    class Band(torch.nn.Module):
        def forward(self, q, k, v):
            return band_attention(q, k, v, 24, kernel="flex") * 2

    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 2, 256, 16) for _ in range(3))
    compiled = torch.compile(Band(), dynamic=False)
    torch.testing.assert_close(compiled(q, k, v), 2 * _reference(q, k, v, 24), atol=2e-5, rtol=2e-5)


def test_the_kernel_is_chosen_by_token_count_and_its_pairs_are_what_it_computes():
    from effigy.attention.window import FLEX_BLOCK, FLEX_MIN_TOKENS, _band_block_mask, band_kernel

    assert band_kernel(64, 4) == "chunked" and band_kernel(FLEX_MIN_TOKENS, 64) == "flex"
    assert band_kernel(FLEX_MIN_TOKENS, FLEX_MIN_TOKENS - 1) == "chunked"  # everything kept: dense SDPA
    for tokens, half in ((1024, 64), (4096, 256), (1100, 10)):
        mask = _band_block_mask(tokens, half, "cpu")
        blocks = int(mask.kv_num_blocks.sum() + mask.full_kv_num_blocks.sum())  # partly and fully inside the band
        assert band_pairs(tokens, half) == blocks * FLEX_BLOCK * FLEX_BLOCK
    assert band_pairs(4096, 256) < 0.2 * 4096 * 4096  # a window of 1/8 skips most blocks
    with pytest.raises(EffigyError, match="kernel must be one of"):
        band_attention(*(torch.randn(1, 1, 8, 4) for _ in range(3)), 2, kernel="sparse")
