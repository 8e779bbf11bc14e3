"""Pixel losses between the enhanced output and the target: ``l1``, ``l2``, ``lab-l1``, ``ssim``.

``lab-l1`` is StarEnhancer's loss: L1 in CIELAB (:func:`piebench.colour.rgb_to_lab`, the
constants of ``skimage.color.rgb2lab``) with L scaled by 1/100 and a, b mapped by
``(x / 110 + 1) / 2``, as in IDKiro/StarEnhancer ``model/loss.py``. ``ssim`` is
``1 - piq.ssim`` (Gaussian window 11, sigma 1.5, piq's default downsampling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from piebench import hookimpl
from piebench.colour import rgb_to_lab
from piebench.interfaces import Batch, BuildContext, Loss


def normalize_lab(lab: Tensor) -> Tensor:
    """StarEnhancer's scaling of Lab to about [0, 1]: L / 100, (a / 110 + 1) / 2, (b / 110 + 1) / 2."""
    return torch.cat([lab[:, :1] / 100, (lab[:, 1:] / 110 + 1) / 2], dim=1)


class L1Loss(Loss):
    """Mean absolute error over pixels and channels."""

    kind = "image"

    def forward(self, output: Tensor, target: Tensor, batch: Batch | None = None) -> Tensor:
        return F.l1_loss(output, target)


class L2Loss(Loss):
    """Mean squared error over pixels and channels."""

    kind = "image"

    def forward(self, output: Tensor, target: Tensor, batch: Batch | None = None) -> Tensor:
        return F.mse_loss(output, target)


class LabL1Loss(Loss):
    """L1 between StarEnhancer-normalised CIELAB images."""

    kind = "image"

    def forward(self, output: Tensor, target: Tensor, batch: Batch | None = None) -> Tensor:
        return F.l1_loss(normalize_lab(rgb_to_lab(output)), normalize_lab(rgb_to_lab(target)))


class SSIMLoss(Loss):
    """``1 - SSIM`` (piq, data range 1; the output is clamped to [0, 1] first as piq requires)."""

    kind = "image"

    def forward(self, output: Tensor, target: Tensor, batch: Batch | None = None) -> Tensor:
        import piq  # 1.5 s (it loads torchvision): only when this loss is trained

        return 1.0 - piq.ssim(output.clamp(0, 1), target.clamp(0, 1), data_range=1.0)


def _simple(cls):
    def build(ctx: BuildContext | None = None, **params) -> Loss:
        return cls(**params)

    build.__doc__ = f"Build :class:`{cls.__name__}`."
    return build


@hookimpl
def register_losses(register):
    """Register the pixel losses (kind "image")."""
    register("l1", build=_simple(L1Loss), description="L1 between output and target",
             paper="pixel loss of PieNet (Kim et al., ECCV 2020) and most enhancement papers",
             kind="image")
    register("l2", build=_simple(L2Loss), description="mean squared error between output and target",
             paper="pixel loss of 3D-LUT (Zeng et al., TPAMI 2020) and CSRNet (He et al., ECCV 2020)", kind="image")
    register("lab-l1", build=_simple(LabL1Loss),
             description="L1 in normalised CIELAB (StarEnhancer's loss)",
             paper="Song et al., ICCV 2021 (StarEnhancer)", kind="image")
    register("ssim", build=_simple(SSIMLoss), description="1 - SSIM (piq, Gaussian window 11, sigma 1.5)",
             paper="Wang et al., IEEE TIP 2004", kind="image")
