"""``lab-stats``: a training-free encoder whose preference is the references' CIELAB statistics.

Per image: the mean and standard deviation over pixels of L*, a*, b* (sRGB, D65, as in
:func:`piebench.metrics.fidelity.rgb_to_lab`), divided by 100, so the vector is
``[mu_L, mu_a, mu_b, sigma_L, sigma_a, sigma_b] / 100`` (L* in [0, 1], a*/b* roughly in
[-1, 1]). The preference is the mean of these 6 numbers over the valid references. It is the
statistics a Reinhard colour transfer needs: the ``transfer`` enhancer consumes exactly this
vector. No parameters.

Configuration ``pairs`` (``relative=True``) describes the *edit* instead, from reference pairs
(the encoder then requires the references' inputs): per reference and channel c, the least-
squares affine map ``target_c = g_c * input_c + d_c`` over the aligned pixels (CIELAB), and the
preference is the mean over references of ``[d_L, d_a, d_b] / 100`` and ``log g`` (g clamped to
[0.1, 10]). Scaling a*/b* about neutral grey is how a saturation change acts, a shift is a white
balance change; ``transfer`` then applies the user's average edit to the photo at hand instead
of pulling it to the references' absolute colours (which depend on their content).
"""

from __future__ import annotations

import torch
from torch import Tensor

from piebench import hookimpl
from piebench.colour import rgb_to_lab
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Encoder, Preference, RefSet

#: Layout tags the ``transfer`` enhancer checks: what the 6 numbers are and their scale.
LAYOUT = "lab-mean-std/100"
LAYOUT_RELATIVE = "lab-affine-shift/100,log-gain"
#: Divisor applied to L*, a*, b* statistics.
SCALE = 100.0


def lab_stats(images: Tensor) -> Tensor:
    """``[M, 6]``: per-image (mean L*, a*, b*, std L*, a*, b*) / 100 of sRGB images ``[M, 3, H, W]``."""
    lab = rgb_to_lab(images.clamp(0, 1), torch.float64).flatten(2)  # float64 [M, 3, P]
    mean = lab.mean(2)
    std = lab.std(2, unbiased=False)
    return (torch.cat([mean, std], 1) / SCALE).to(images.dtype if images.is_floating_point() else torch.float32)


def lab_edit(inputs: Tensor, targets: Tensor) -> Tensor:
    """``[M, 6]``: per pair, the CIELAB affine fit ``t = g x + d`` per channel as ``[d / 100, log g]``."""
    x, t = (rgb_to_lab(v.clamp(0, 1), torch.float64).flatten(2) for v in (inputs, targets))
    mx, mt = x.mean(2, keepdim=True), t.mean(2, keepdim=True)
    var = ((x - mx) ** 2).mean(2)
    cov = ((x - mx) * (t - mt)).mean(2)
    g = torch.where(var > 1e-6, cov / var.clamp_min(1e-6), torch.ones_like(var)).clamp(0.1, 10.0)
    d = mt.squeeze(2) - g * mx.squeeze(2)
    return torch.cat([d / SCALE, g.log()], 1).to(inputs.dtype if inputs.is_floating_point() else torch.float32)


class LabStatsEncoder(Encoder):
    """Preference = mean over references of their CIELAB mean and standard deviation (/100)."""

    provides = frozenset({"vector"})
    metric_loss = None
    trainable = False
    dim = 6

    def __init__(self, relative: bool = False) -> None:
        super().__init__()
        self.relative = bool(relative)
        self.layout = LAYOUT_RELATIVE if self.relative else LAYOUT
        if self.relative:
            self.requires = frozenset({"targets", "inputs"})
        self.pretrained_from = "training-free (no weights)"

    def embed(self, images: Tensor) -> Tensor:
        """Per-image statistics ``[M, 6]``."""
        return lab_stats(images)

    def forward(self, refs: RefSet) -> Preference:
        """Mean statistics (or statistics changes) of each sample's valid references."""
        b, n = refs.batch_size, refs.num_refs
        stats = lab_stats(refs.targets.reshape(b * n, *refs.targets.shape[2:])).view(b, n, -1)
        if self.relative:
            if refs.inputs is None:
                raise UsageError("lab-stats (pairs) needs the references' inputs (RefSet.inputs)")
            stats = lab_edit(refs.inputs.reshape(b * n, *refs.inputs.shape[2:]),
                             refs.targets.reshape(b * n, *refs.targets.shape[2:])).view(b, n, -1)
        return Preference(vector=self.masked_mean(stats, refs.valid_mask()))


def build_lab_stats(ctx: BuildContext | None = None, relative: bool = False) -> LabStatsEncoder:
    """Build :class:`LabStatsEncoder` (nothing to load)."""
    return LabStatsEncoder(relative)


@hookimpl
def register_encoders(register):
    """Register ``lab-stats``."""
    register("lab-stats", build=build_lab_stats,
             description="training-free: CIELAB mean and std of the references (/100), the statistics of a "
                         "Reinhard colour transfer",
             paper="Reinhard et al., Color Transfer between Images, IEEE CG&A 2001 (statistics in CIELAB)",
             configurations={"small": {"relative": False}, "paper": {"relative": False},
                             "pairs": {"relative": True}}, version="1", provides=["vector"], requires=["targets"], meta={"metric_loss": None, "trainable": False, "layouts": [LAYOUT, LAYOUT_RELATIVE]})
