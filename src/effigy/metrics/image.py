"""Image quality against a reference (PSNR, SSIM) and Frechet distance between feature sets (FID).

FID is only meaningful with a named feature extractor; effigy reports which one it used next to
every number (for the digits world: the shipped ``digits-classifier`` penultimate layer, 128-d).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def psnr(images: torch.Tensor, reference: torch.Tensor, data_range: float = 2.0) -> float:
    """Mean PSNR in dB over the batch (per-image MSE), for images in a range of width ``data_range``."""
    return psnr_per_image(images, reference, data_range).mean().item()


def psnr_per_image(images: torch.Tensor, reference: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """PSNR in dB of each image [N] (the per-item scores a paired bootstrap resamples)."""
    mse = ((images.float() - reference.float()) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(
    images: torch.Tensor, reference: torch.Tensor, data_range: float = 2.0, window: int = 7, sigma: float = 1.5
) -> float:
    """Mean structural similarity (Wang et al. 2004, Gaussian window, valid region) over batch and channels.

    A 7-pixel window suits the 16x16 images of the digits world; larger images can pass 11.
    """
    return ssim_per_image(images, reference, data_range, window, sigma).mean().item()


def ssim_per_image(
    images: torch.Tensor, reference: torch.Tensor, data_range: float = 2.0, window: int = 7, sigma: float = 1.5
) -> torch.Tensor:
    """SSIM of each image [N], averaged over its channels and window positions."""
    x, y = images.float(), reference.float()
    channels = x.shape[1]
    kernel = _gaussian_window(window, sigma).expand(channels, 1, window, window)
    blur = lambda t: F.conv2d(t, kernel, groups=channels)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


def fid_from_features(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, D]."""
    return frechet_distance(gaussian_stats(features_a), gaussian_stats(features_b))


def gaussian_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature set [N, D], in float64 (fit once, compare many times)."""
    x = features.detach().double().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float64)
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_distance(stats_a: tuple[np.ndarray, np.ndarray], stats_b: tuple[np.ndarray, np.ndarray]) -> float:
    """|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)).

    tr((C_a C_b)^(1/2)) is the sum of the square roots of the eigenvalues of C_a^(1/2) C_b C_a^(1/2), a
    symmetric PSD matrix with the same eigenvalues: two symmetric eigendecompositions, real and stable
    for the rank-deficient covariances of small sample sets, and fast enough to bootstrap.
    """
    (mu_a, cov_a), (mu_b, cov_b) = stats_a, stats_b
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    trace_root = np.sqrt(np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)
