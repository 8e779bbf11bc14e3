"""Per-image fidelity metrics on float images in [0, 1]: PSNR, SSIM, CIE76 dE_ab and LPIPS.

Every function takes ``output`` and ``target`` of shape ``[B, 3, H, W]`` and returns one value
per image, shape ``[B]``. The variants and their sources: ``docs/metrics.md``.

- ``psnr``: full RGB, per image, in float64 (data range 1), capped at :data:`PSNR_CAP_DB` (100 dB:
  the MSE is floored at :data:`MSE_FLOOR`), so an output equal to its target scores 100 dB, not
  infinity. Every PSNR in piebench (metrics, control matrices, summaries, diagnostics,
  leaderboards) goes through :func:`psnr_from_mse` or :func:`cap_psnr`.
- ``psnr_q8``: the output quantised to 8 bits first (StarEnhancer's test script).
- ``ssim``: Gaussian window 11, sigma 1.5, no downsampling (= skimage with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``).
- ``ssim_down``: the same after average-pooling by ``max(1, round(min(H, W) / 256))``
  (Wang's ``ssim.m``, StarEnhancer, ``piq.ssim`` default).
- ``delta_e``: CIE76 dE_ab, mean per-pixel Euclidean distance in CIELAB (D65, 2 degrees),
  sRGB decoded with its piecewise transfer function (the constants of ``skimage.color``).
- ``lpips``: the ``lpips`` package, AlexNet trunk, v0.1 linear layers shipped in the package;
  torchvision's AlexNet file is fetched once into the torch hub cache (see :func:`fetch_alexnet`).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .. import colour
from ..errors import PiebenchError, UsageError
from ..weights import fetch_weights

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
#: The PSNR convention: at most 100 dB (data range 1), i.e. the MSE is floored at 1e-10. An
#: 8-bit image differs from its target by at least (1/255)^2 / (3 H W) in MSE when it differs at
#: all (> 1e-10 for images below 4 gigapixels), so the cap only ever replaces infinity.
PSNR_CAP_DB = 100.0
MSE_FLOOR = 10.0 ** (-PSNR_CAP_DB / 10.0)

__all__ = [
    "ALEXNET_FILE", "LPIPS", "METRICS", "MSE_FLOOR", "PSNR_CAP_DB", "cap_psnr", "delta_e", "lpips",
    "lpips_unavailable_reason", "psnr", "psnr_from_mse", "psnr_q8", "quantize_8bit", "rgb_to_lab", "ssim",
    "ssim_down",
]


def psnr_from_mse(mse: Any) -> Any:
    """PSNR in dB (data range 1) of a mean squared error, capped at :data:`PSNR_CAP_DB`.

    Torch tensors stay tensors; anything else becomes a float64 numpy array (NaN stays NaN).
    """
    if isinstance(mse, torch.Tensor):
        return 10.0 * torch.log10(1.0 / mse.clamp(min=MSE_FLOOR))
    return 10.0 * np.log10(1.0 / np.maximum(np.asarray(mse, dtype=np.float64), MSE_FLOOR))


def cap_psnr(values: Any) -> np.ndarray:
    """PSNR values already in dB under the convention: anything above the cap (+inf included)
    becomes :data:`PSNR_CAP_DB`; NaN stays NaN. For records written before the cap existed."""
    return np.minimum(np.asarray(values, dtype=np.float64), PSNR_CAP_DB)


def _check(output: torch.Tensor, target: torch.Tensor) -> None:
    for name, t in (("output", output), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise UsageError(f"{name} must be a torch.Tensor [B,3,H,W], got {type(t).__name__}")
        if t.dim() != 4 or t.shape[1] != 3:
            raise UsageError(f"{name} must have shape [B,3,H,W], got {list(t.shape)}")
    if output.shape != target.shape:
        raise UsageError(f"output {list(output.shape)} and target {list(target.shape)} differ in shape")


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image over all RGB values, in float64 (data range 1); 100 dB (the cap) when equal."""
    _check(output, target)
    return psnr_from_mse((output.double() - target.double()).pow(2).mean(dim=(1, 2, 3)))


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """``round(clamp(x, 0, 1) * 255) / 255``: what saving the output as an 8-bit image does."""
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def psnr_q8(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR after quantising ``output`` to 8 bits (StarEnhancer); ``target`` is taken as is."""
    _check(output, target)
    return psnr(quantize_8bit(output.double()), target)


def _ssim(output: torch.Tensor, target: torch.Tensor, downsample: bool) -> torch.Tensor:
    import piq

    _check(output, target)
    return piq.ssim(output.clamp(0, 1), target.clamp(0, 1), data_range=1.0, reduction="none",
                    kernel_size=11, kernel_sigma=1.5, downsample=downsample)


def ssim(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM per image (piq; Gaussian window 11, sigma 1.5, no downsampling), mean over RGB.

    Inputs are clamped to [0, 1] (piq refuses values outside the data range); H, W >= 11.
    """
    return _ssim(output, target, downsample=False)


def ssim_down(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM after average-pooling by ``max(1, round(min(H, W) / 256))`` (Wang's ssim.m, piq default)."""
    return _ssim(output, target, downsample=True)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``[B,3,H,W]`` in [0, 1] -> CIELAB (D65, 2 degrees) in float64 (:mod:`piebench.colour`)."""
    return colour.rgb_to_lab(rgb, torch.float64)


def delta_e(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CIE76 dE_ab per image: mean per-pixel Euclidean distance in CIELAB (float64)."""
    _check(output, target)
    diff = rgb_to_lab(output) - rgb_to_lab(target)
    return diff.pow(2).sum(dim=1).sqrt().mean(dim=(1, 2))


# ---------------------------------------------------------------------------------------- LPIPS
def alexnet_path() -> str:
    """Where the AlexNet backbone file is kept: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", ALEXNET_FILE)


def fetch_alexnet() -> str:
    """The AlexNet file's path, downloaded first when missing (see :func:`piebench.weights.fetch_weights`)."""
    return str(fetch_weights(ALEXNET_FILE, what="LPIPS needs torchvision's AlexNet weights"))


def lpips_unavailable_reason() -> str | None:
    """None when LPIPS can be built (the file is there or was just downloaded), else one line
    naming the missing file, its folder and the URL to fetch it from."""
    try:
        fetch_alexnet()
    except PiebenchError as err:
        return str(err)
    return None


class LPIPS:
    """LPIPS (alex, v0.1) on images in [0, 1]; the network is loaded on first use.

    The linear layers come from the ``lpips`` package; the AlexNet trunk is read from
    torchvision's file (:func:`alexnet_path`, downloaded once when missing), never random.
    Construction raises :class:`PiebenchError` when the file is missing and cannot be fetched.
    """

    higher_is_better = False

    def __init__(self) -> None:
        self.path = fetch_alexnet()  # PiebenchError (file, folder, URL) when it cannot be had
        self._net: torch.nn.Module | None = None

    def load(self) -> torch.nn.Module:
        """The ``lpips.LPIPS`` module with its trunk loaded from :attr:`path` (cached)."""
        if self._net is None:
            import lpips as lpips_pkg

            if not os.path.isfile(self.path):
                raise PiebenchError(lpips_unavailable_reason() or f"missing {self.path}")
            # pnet_rand=True: torchvision builds an empty trunk (no download); we load the file.
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                net = lpips_pkg.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True,
                                      verbose=False)
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            # The trunk's slices keep torchvision's layer indices: slice1.0 is features.0.
            trunk = {}
            for key in net.net.state_dict():
                rest = key.split(".", 1)[1]
                source = f"features.{rest}"
                if source not in state:
                    raise PiebenchError(f"{self.path} is not a torchvision AlexNet state dict (no '{source}')")
                trunk[key] = state[source]
            net.net.load_state_dict(trunk, strict=True)
            net.eval().requires_grad_(False)
            self._net = net
        return self._net

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LPIPS distance per image ``[B]`` (lower is better)."""
        _check(output, target)
        net = self.load()
        if next(net.parameters()).device != output.device:
            net.to(output.device)
        return net(output.float(), target.float(), normalize=True).flatten()


_LPIPS_CACHE: dict[str, LPIPS] = {}


def lpips(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """LPIPS (alex) per image through a cached :class:`LPIPS`; raises PiebenchError if unavailable."""
    path = alexnet_path()
    if path not in _LPIPS_CACHE:
        _LPIPS_CACHE[path] = LPIPS()
    return _LPIPS_CACHE[path](output, target)


#: name -> (function, higher_is_better, variant description)
METRICS: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], bool, str]] = {
    "psnr": (psnr, True, "full RGB, per image, float64, data range 1, capped at 100 dB"),
    "psnr_q8": (psnr_q8, True, "output quantised to 8 bits first (StarEnhancer)"),
    "ssim": (ssim, True, "piq, Gaussian 11 / sigma 1.5, downsample=False (= skimage gaussian_weights)"),
    "ssim_down": (ssim_down, True, "piq default: avg-pool by max(1, round(min(H,W)/256)) (Wang ssim.m)"),
    "delta_e": (delta_e, False, "CIE76 dE_ab, mean per pixel, CIELAB D65 from sRGB"),
    "lpips": (lpips, False, "lpips v0.1, alex, inputs normalised to [-1, 1]"),
}
