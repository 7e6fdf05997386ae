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


def test_fid_equals_the_matrix_square_root_formula_and_stays_real_with_fewer_samples_than_dimensions():
    import numpy as np
    from scipy import linalg

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(300, 16, generator=generator)
    b = torch.randn(300, 16, generator=generator) @ torch.randn(16, 16, generator=generator) * 0.5 + 0.3
    ca, cb = np.cov(a.double().numpy(), rowvar=False), np.cov(b.double().numpy(), rowvar=False)
    direct = ((a.double().mean(0) - b.double().mean(0)) ** 2).sum().item() + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
    assert fid_from_features(a, b) == pytest.approx(direct, rel=1e-6)
    few = torch.randn(10, 64, generator=generator)  # rank 9 covariance in 64 dimensions, as in small benches
    assert fid_from_features(few, few) == pytest.approx(0.0, abs=1e-4)
    assert np.isfinite(fid_from_features(few, few + 1.0)) and fid_from_features(few, few + 1.0) == pytest.approx(64.0)
