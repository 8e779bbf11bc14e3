"""piebench metrics: fidelity (re-exported here), separability, preference control.

``piebench.metrics.separability`` and ``piebench.metrics.control`` import scikit-learn and
matplotlib; import them explicitly where needed.
"""

from __future__ import annotations

from .fidelity import (
    ALEXNET_FILE,
    LPIPS,
    METRICS,
    MSE_FLOOR,
    PSNR_CAP_DB,
    cap_psnr,
    delta_e,
    lpips,
    lpips_unavailable_reason,
    psnr,
    psnr_from_mse,
    psnr_q8,
    quantize_8bit,
    rgb_to_lab,
    ssim,
    ssim_down,
)

__all__ = [
    "ALEXNET_FILE", "LPIPS", "METRICS", "MSE_FLOOR", "PSNR_CAP_DB", "cap_psnr", "delta_e", "lpips",
    "lpips_unavailable_reason", "psnr", "psnr_from_mse", "psnr_q8", "quantize_8bit", "rgb_to_lab", "ssim",
    "ssim_down",
]
