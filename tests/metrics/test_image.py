import pytest
import torch

from effigy.metrics import fid_from_features, psnr, ssim


def test_psnr_matches_closed_form():
    ref = torch.zeros(2, 1, 4, 4)
    noisy = ref + 0.1
    assert psnr(noisy, ref, data_range=2.0) == pytest.approx(10 * torch.log10(torch.tensor(4 / 0.01)).item(), rel=1e-5)


def test_ssim_is_one_for_identical_and_low_for_unrelated_images():
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    assert ssim(x, torch.rand(3, 1, 16, 16) * 2 - 1) < 0.2
    assert ssim(x, x + 0.05 * torch.randn_like(x)) > ssim(x, x + 0.3 * torch.randn_like(x))


def test_fid_matches_one_dimensional_closed_form():
    a = torch.randn(20000, 1)
    b = torch.randn(20000, 1) * 2 + 3
    expected = (a.mean() - b.mean()) ** 2 + (a.std() - b.std()) ** 2
    assert fid_from_features(a, b) == pytest.approx(expected.item(), rel=1e-2)


def test_fid_is_near_zero_for_same_distribution_and_grows_with_shift():
    a, b = torch.randn(4000, 8), torch.randn(4000, 8)
    assert fid_from_features(a, b) < 0.05
    assert fid_from_features(a, b + 0.5) > fid_from_features(a, b + 0.1) > fid_from_features(a, b)
