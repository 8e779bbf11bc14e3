"""``transfer``: training-free Reinhard colour transfer toward the user's references.

Per image and per CIELAB channel c: ``out_c = (x_c - mu_c(x)) * sigma_c(ref) / sigma_c(x) + mu_c(ref)``
(``mode="reinhard"``), or only the mean shift ``x_c - mu_c(x) + mu_c(ref)`` (``mode="mean"``),
then back to sRGB and clipped to [0, 1]. The target statistics come from the preference
vector of the ``lab-stats`` encoder (mean and std of L*, a*, b* over the references, /100);
any other encoder is refused at build time. With ``lab-stats``'s ``pairs`` configuration the
vector is the user's average edit, a per-channel CIELAB affine map fitted on reference pairs,
applied as ``out_c = exp(log g_c) * x_c + d_c`` (``mode`` does not apply): an edit transfer. With ``--blind`` the statistics are one learned
constant (a global target look): the blind twin of this baseline.

Reinhard et al. (2001) used the l-alpha-beta space; this is the common CIELAB variant.
It is the baseline every learned personalised model must beat.
"""

from __future__ import annotations

import torch
from torch import Tensor

from piebench import hookimpl
from piebench.colour import lab_to_rgb, rgb_to_lab
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Enhancer, Preference

LAYOUT = "lab-mean-std/100"  # what the lab-stats encoder's vector holds
LAYOUT_RELATIVE = "lab-affine-shift/100,log-gain"  # lab-stats --encoder-config pairs
_SCALE = 100.0


def _layout_of(encoder: object) -> str | None:
    """The encoder's statistics layout, looking through a blind-twin wrapper."""
    wrapped = getattr(encoder, "_wrapped", None)
    inner = wrapped[0] if wrapped else encoder
    return getattr(inner, "layout", None)


class ColourTransfer(Enhancer):
    """Reinhard transfer of CIELAB mean (and std) to the statistics in the preference vector."""

    consumes = frozenset({"vector"})
    trainable = False

    def __init__(self, mode: str = "reinhard", min_std: float = 0.5, relative: bool = False) -> None:
        super().__init__()
        if mode not in ("reinhard", "mean"):
            raise UsageError(f"transfer mode must be 'reinhard' or 'mean', got '{mode}'")
        if not min_std > 0:
            raise UsageError(f"transfer min_std must be > 0 (in L*a*b* units), got {min_std}")
        self.mode, self.min_std, self.relative = mode, float(min_std), bool(relative)

    def forward(self, x: Tensor, pref: Preference) -> Tensor:
        """``x`` recoloured so that its CIELAB statistics match ``pref.vector``'s."""
        v = pref.vector
        if v.dim() != 2 or v.shape[1] != 6:
            raise UsageError(f"transfer needs the 6 Lab statistics of the lab-stats encoder, got a vector of "
                             f"shape {tuple(v.shape)}")
        target = v.double() * _SCALE
        lab = rgb_to_lab(x.clamp(0, 1), torch.float64)
        flat = lab.flatten(2)
        mu = flat.mean(2)[:, :, None, None]
        out = lab - mu
        if self.relative:  # the user's average edit: per-channel gain, then shift
            out = lab * torch.exp(v.double()[:, 3:, None, None]) + target[:, :3, None, None]
            return lab_to_rgb(out).clamp(0, 1).to(x.dtype)
        if self.mode == "reinhard":
            sd = flat.std(2, unbiased=False).clamp_min(self.min_std)[:, :, None, None]
            out = out / sd * target[:, 3:, None, None].clamp_min(0)
        out = out + target[:, :3, None, None]
        return lab_to_rgb(out).clamp(0, 1).to(x.dtype)


def build_transfer(ctx: BuildContext | None = None, mode: str = "reinhard", min_std: float = 0.5) -> ColourTransfer:
    """Build :class:`ColourTransfer`; refuses any encoder but ``lab-stats`` (or its blind twin)."""
    enc = ctx.encoder if ctx is not None else None
    layout = _layout_of(enc) if enc is not None else None
    if layout not in (LAYOUT, LAYOUT_RELATIVE):
        name = type(enc).__name__ if enc is not None else "none"
        raise UsageError(f"enhancer 'transfer' needs the Lab statistics of encoder 'lab-stats' (got {name}); "
                         f"run it with --encoder lab-stats")
    return ColourTransfer(mode, min_std, relative=layout == LAYOUT_RELATIVE)


@hookimpl
def register_enhancers(register):
    """Register the training-free colour-transfer baseline."""
    register("transfer", build=build_transfer,
             description="training-free Reinhard colour transfer (CIELAB mean/std) toward the references; "
                         "pairs with encoder lab-stats",
             paper="Reinhard et al., Color Transfer between Images, IEEE CG&A 2001",
             configurations={"small": {"mode": "reinhard", "min_std": 0.5},
                             "paper": {"mode": "reinhard", "min_std": 0.5}},
             version="1", consumes=["vector"], pairs_with="lab-stats", full_resolution=True, role="baseline")
