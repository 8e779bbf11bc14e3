"""A training-free encoder: soft CIELAB colour histograms of the references.

Each image is area-downsampled so its longer side is at most ``max_side`` (histograms hardly
change, the cost stays bounded), converted from sRGB to CIELAB (:mod:`piebench.colour`), and every pixel is
spread over ``bins`` Gaussian bins per channel (L* over [0, 100], a* and b* over [-80, 80];
sigma = one bin width, weights normalised per pixel), optionally also over a joint a*b*
histogram of ``joint_bins`` x ``joint_bins``. Histograms are averaged over pixels, square-rooted
(Hellinger), concatenated and L2-normalised; the preference is the normalised mean over the
valid references. No parameters; differentiable with respect to the images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from piebench import hookimpl
from piebench.colour import rgb_to_lab
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Encoder, Preference, RefSet

from ._resnet import per_valid

_RANGES = ((0.0, 100.0), (-80.0, 80.0), (-80.0, 80.0))


def _soft_bins(values: Tensor, lo: float, hi: float, bins: int) -> Tensor:
    """Per-pixel soft assignment ``[..., bins]`` of ``values`` to Gaussian bins over [lo, hi]."""
    width = (hi - lo) / bins
    centres = torch.linspace(lo + width / 2, hi - width / 2, bins, dtype=values.dtype, device=values.device)
    logits = -0.5 * ((values[..., None] - centres) / width) ** 2
    return torch.softmax(logits, -1)


class HistogramEncoder(Encoder):
    """Soft CIELAB histograms (per channel, optionally joint a*b*), averaged over references."""

    provides = frozenset({"vector"})
    metric_loss = None
    trainable = False

    def __init__(self, bins: int = 16, joint_bins: int = 0, max_side: int = 64) -> None:
        super().__init__()
        if bins < 2 or joint_bins < 0 or joint_bins == 1 or max_side < 4:
            raise UsageError(f"histogram needs bins >= 2, joint_bins 0 or >= 2, max_side >= 4; got "
                             f"bins={bins}, joint_bins={joint_bins}, max_side={max_side}")
        self.bins, self.joint_bins, self.max_side = bins, joint_bins, max_side
        self.dim = 3 * bins + joint_bins ** 2
        self.pretrained_from = "training-free (no weights)"

    def embed(self, images: Tensor) -> Tensor:
        """L2-normalised Hellinger histogram features ``[M, dim]`` of images in [0, 1]."""
        h, w = images.shape[-2:]
        scale = self.max_side / max(h, w)
        if scale < 1:
            images = F.interpolate(images, size=(max(1, round(h * scale)), max(1, round(w * scale))),
                                   mode="area")
        lab = rgb_to_lab(images.clamp(0, 1)).flatten(2)  # [M, 3, P]
        hists = [_soft_bins(lab[:, i], lo, hi, self.bins).mean(1) for i, (lo, hi) in enumerate(_RANGES)]
        if self.joint_bins:
            a = _soft_bins(lab[:, 1], *_RANGES[1], self.joint_bins)
            b = _soft_bins(lab[:, 2], *_RANGES[2], self.joint_bins)
            hists.append(torch.einsum("mpi,mpj->mij", a, b).flatten(1) / a.shape[1])
        return F.normalize((torch.cat(hists, 1) + 1e-8).sqrt(), dim=1)

    def forward(self, refs: RefSet) -> Preference:
        """Normalised mean histogram feature of the valid references."""
        mask = refs.valid_mask()
        emb = per_valid(self.embed, refs.targets, mask)
        return Preference(vector=F.normalize(self.masked_mean(emb, mask), dim=1))


def build_histogram(ctx: BuildContext, bins: int = 16, joint_bins: int = 0, max_side: int = 64) -> HistogramEncoder:
    """The training-free histogram encoder (``ctx.pretrained`` has nothing to load)."""
    return HistogramEncoder(bins, joint_bins, max_side)


@hookimpl
def register_encoders(register):
    register(
        "histogram", build=build_histogram,
        description="training-free: soft (differentiable) CIELAB colour histograms averaged over references",
        paper="colour-histogram baseline (soft histograms as in Avi-Aharon et al., DeepHist, 2020)",
        configurations={"small": {"bins": 16, "joint_bins": 0, "max_side": 64},
                        "paper": {"bins": 32, "joint_bins": 8, "max_side": 128}},
        version="1", meta={"metric_loss": None, "trainable": False})
