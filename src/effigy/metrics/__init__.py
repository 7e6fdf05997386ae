"""Quality metrics: image fidelity against a reference, feature-space distances, paired significance."""
from effigy.metrics.image import fid_from_features, psnr, psnr_per_image, ssim, ssim_per_image
from effigy.metrics.stats import Difference, paired_bootstrap, paired_mean_difference

__all__ = ["Difference", "fid_from_features", "paired_bootstrap", "paired_mean_difference", "psnr", "psnr_per_image",
           "ssim", "ssim_per_image"]
