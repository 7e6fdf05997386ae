"""Quality metrics: image fidelity against a reference, and feature-space distances."""
from effigy.metrics.image import fid_from_features, psnr, ssim

__all__ = ["fid_from_features", "psnr", "ssim"]
