"""``lab-stats``: a training-free encoder whose preference is the references' CIELAB statistics.

Per image: the mean and standard deviation over pixels of L*, a*, b* (sRGB, D65, as in
:func:`piebench.metrics.fidelity.rgb_to_lab`), divided by 100, so the vector is
``[mu_L, mu_a, mu_b, sigma_L, sigma_a, sigma_b] / 100`` (L* in [0, 1], a*/b* roughly in
[-1, 1]). The preference is the mean of these 6 numbers over the valid references. It is the
statistics a Reinhard colour transfer needs: the ``transfer`` enhancer consumes exactly this
vector. No parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor

from piebench import hookimpl
from piebench.interfaces import BuildContext, Encoder, Preference, RefSet
from piebench.metrics.fidelity import rgb_to_lab

#: Layout tag the ``transfer`` enhancer checks: what the 6 numbers are and their scale.
LAYOUT = "lab-mean-std/100"
#: Divisor applied to L*, a*, b* statistics.
SCALE = 100.0


def lab_stats(images: Tensor) -> Tensor:
    """``[M, 6]``: per-image (mean L*, a*, b*, std L*, a*, b*) / 100 of sRGB images ``[M, 3, H, W]``."""
    lab = rgb_to_lab(images.clamp(0, 1)).flatten(2)  # float64 [M, 3, P]
    mean = lab.mean(2)
    std = lab.std(2, unbiased=False)
    return (torch.cat([mean, std], 1) / SCALE).to(images.dtype if images.is_floating_point() else torch.float32)


class LabStatsEncoder(Encoder):
    """Preference = mean over references of their CIELAB mean and standard deviation (/100)."""

    provides = frozenset({"vector"})
    metric_loss = None
    trainable = False
    dim = 6
    layout = LAYOUT

    def __init__(self) -> None:
        super().__init__()
        self.pretrained_from = "training-free (no weights)"

    def embed(self, images: Tensor) -> Tensor:
        """Per-image statistics ``[M, 6]``."""
        return lab_stats(images)

    def forward(self, refs: RefSet) -> Preference:
        """Mean statistics of each sample's valid references."""
        b, n = refs.batch_size, refs.num_refs
        stats = lab_stats(refs.targets.reshape(b * n, *refs.targets.shape[2:])).view(b, n, -1)
        return Preference(vector=self.masked_mean(stats, refs.valid_mask()))


def build_lab_stats(ctx: BuildContext | None = None) -> LabStatsEncoder:
    """Build :class:`LabStatsEncoder` (nothing to configure or load)."""
    return LabStatsEncoder()


@hookimpl
def register_encoders(register):
    """Register ``lab-stats``."""
    register("lab-stats", build=build_lab_stats,
             description="training-free: CIELAB mean and std of the references (/100), the statistics of a "
                         "Reinhard colour transfer",
             paper="Reinhard et al., Color Transfer between Images, IEEE CG&A 2001 (statistics in CIELAB)",
             configurations={"small": {}, "paper": {}}, version="1", provides=["vector"], requires=["targets"],
             metric_loss=None, trainable=False, layout=LAYOUT)
