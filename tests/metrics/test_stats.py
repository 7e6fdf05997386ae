import numpy as np
import pytest
import torch

from effigy.errors import MetricError
from effigy.metrics import paired_bootstrap, paired_mean_difference, psnr, psnr_per_image, ssim, ssim_per_image


def test_a_constant_shift_is_significant_and_its_interval_holds_the_shift():
    rng = np.random.default_rng(0)
    b = rng.normal(size=100)
    d = paired_mean_difference(b + 0.3 + 0.05 * rng.normal(size=100), b)
    assert d.significant and d.low > 0
    assert d.low < 0.3 < d.high
    assert d.value == pytest.approx(0.3, abs=0.02)


def test_pairing_finds_a_small_shift_that_item_to_item_spread_would_hide():
    rng = np.random.default_rng(1)
    b = rng.normal(scale=10.0, size=60)  # items differ a lot; the two variants differ little, consistently
    paired = paired_mean_difference(b + 0.2, b)
    unpaired = paired_bootstrap(lambda idx: float((b + 0.2)[idx].mean()),
                                lambda idx: float(b[rng.permutation(60)][idx].mean()), 60)
    assert paired.significant
    assert not unpaired.significant


def test_pure_noise_is_within_noise_and_the_interval_is_seeded():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=80), rng.normal(size=80)
    first, second = paired_mean_difference(a, b, seed=3), paired_mean_difference(a, b, seed=3)
    assert not first.significant and first.low < 0 < first.high
    assert (first.low, first.high) == (second.low, second.high)
    assert paired_mean_difference(a, b, seed=4).low != first.low


def test_bad_inputs_are_refused_with_what_to_fix():
    with pytest.raises(MetricError, match="equal lengths"):
        paired_mean_difference(np.zeros(3), np.zeros(4))
    with pytest.raises(MetricError, match="at least 2"):
        paired_mean_difference(np.zeros(1), np.zeros(1))
    with pytest.raises(MetricError, match="confidence"):
        paired_mean_difference(np.zeros(5), np.ones(5), confidence=95)


def test_per_image_psnr_and_ssim_average_to_the_batch_scores():
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(6, 3, 16, 16, generator=generator) * 2 - 1
    images = reference + torch.linspace(0.01, 0.3, 6)[:, None, None, None] * torch.randn(reference.shape, generator=generator)
    per_psnr, per_ssim = psnr_per_image(images, reference), ssim_per_image(images, reference)
    assert per_psnr.shape == per_ssim.shape == (6,)
    assert per_psnr.mean().item() == pytest.approx(psnr(images, reference))
    assert per_ssim.mean().item() == pytest.approx(ssim(images, reference))
    assert torch.all(per_psnr[:-1] > per_psnr[1:])  # more noise, lower PSNR, image by image
    assert ssim_per_image(reference, reference).allclose(torch.ones(6))
