"""Built-in fidelity metrics: psnr, psnr_q8, ssim, ssim_down, delta_e, lpips.

Each ``build(ctx)`` returns a callable ``(output, target) -> [B]`` on float images in [0, 1]
(see :mod:`piebench.metrics.fidelity` for the exact variants). ``lpips`` raises
:class:`piebench.errors.PiebenchError` at build time when its AlexNet file is missing and cannot be downloaded.
"""

from __future__ import annotations

from piebench import hookimpl
from piebench.errors import PiebenchError
from piebench.metrics import fidelity

PAPERS = {
    "psnr": "FiveK convention: full RGB, per image, then averaged",
    "psnr_q8": "StarEnhancer (Song et al., ICCV 2021) test script",
    "ssim": "Wang et al., TIP 2004 (Gaussian 11, sigma 1.5)",
    "ssim_down": "Wang et al., TIP 2004, ssim.m with downsampling; StarEnhancer",
    "delta_e": "CIE76; as reported by 3D-LUT, AdaInt, Masked Style Modeling",
    "lpips": "Zhang et al., CVPR 2018 (lpips v0.1, alex)",
}

#: name -> (column label, decimals shown)
DISPLAY = {"psnr": ("PSNR", 2), "psnr_q8": ("PSNR q8", 2), "ssim": ("SSIM", 4), "ssim_down": ("SSIM down", 4),
           "delta_e": ("dE", 2), "lpips": ("LPIPS", 4)}


def _builder(name: str):
    fn = fidelity.METRICS[name][0]

    def build(ctx=None, **params):
        if params:
            raise PiebenchError(f"metric '{name}' takes no parameters, got {', '.join(params)}")
        if name == "lpips":
            return fidelity.LPIPS()  # raises PiebenchError with the reason when unavailable
        return fn

    build.__doc__ = f"Return the per-image '{name}' metric callable."
    return build


@hookimpl
def register_metrics(register):
    """Register every metric of :data:`piebench.metrics.fidelity.METRICS`."""
    for name, (_fn, higher, variant) in fidelity.METRICS.items():
        register(name, build=_builder(name), description=variant, paper=PAPERS[name],
                 configurations={}, version="1", higher_is_better=higher, variant=variant,
                 label=DISPLAY[name][0], digits=DISPLAY[name][1])
