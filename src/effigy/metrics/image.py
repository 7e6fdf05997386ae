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
    mse = ((images.float() - reference.float()) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return (10 * torch.log10(data_range**2 / mse)).mean().item()


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
    return ssim_map.mean().item()


def fid_from_features(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets [N, D]."""
    from scipy import linalg

    a = features_a.double().cpu().numpy()
    b = features_b.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(cov_a)) * 1e-6
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))
