"""Metrics: image fidelity against a reference (PSNR, SSIM), FID on named features, paired bootstrap significance,
prompt adherence, rank agreement (``ranking``), BEV average precision (``bev``) and detection rates (``detection``:
APCER, BPCER, HTER, AUC, EER, AP)."""
from effigy.metrics.image import fid_from_features, psnr, psnr_per_image, ssim, ssim_per_image
from effigy.metrics.stats import Difference, paired_bootstrap, paired_mean_difference

__all__ = ["Difference", "fid_from_features", "paired_bootstrap", "paired_mean_difference", "psnr", "psnr_per_image",
           "ssim", "ssim_per_image"]
