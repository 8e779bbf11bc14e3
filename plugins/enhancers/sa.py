"""``sa``: a U-Net whose bottleneck attends to the references' feature maps (style attention).

:class:`StyleAttention` is the "Style attention (SA) block" of docs/models.md, made
weight-tied across references so that it accepts any number of references, in any order, at
any image size: queries come from the content feature map, keys and values from *each*
reference map through one shared set of 1x1 convs (each reference is one attention head;
the published block used one grouped-conv group per reference, which fixes N and its order),
channel attention on L2-normalised queries/keys with a learnable rescale (temperature), the
heads combined by a masked mean over the references, a linear (1x1) projection back to C and
two residual adds (attention, then a feed-forward conv). Other enhancers (``sa-seed``,
``sa-adain``) import it from ``piebench_plugins.enhancers.sa``.

:class:`SAUNet` also modulates its bottleneck with the preference vector (FiLM), so it
consumes ``{"vector", "maps"}``; output = input + predicted residual.

Configurations (docs/models.md: the 0.23 M-parameter U-Net at 64 px of the smoke noise figures):
  small: widths 16/24/48/64 (bottleneck at stride 8), one SA block, 1 channel group: 227,628
    parameters with the small metric encoder (128-d vector, 64-channel maps).
  paper: widths 64/128/256/512 (the classic U-Net widths, bottleneck 512 at stride 8), two SA
    blocks with 8 channel groups each: 10,954,963 parameters with the ResNet-18 metric encoder
    (512-d vector, 128-channel maps), in the range of the published 11-16 M enhancers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Enhancer, Preference


class ChannelNorm(nn.Module):
    """LayerNorm over channels at every pixel (independent of image size)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class StyleAttention(nn.Module):
    """Channel attention from a content map to N reference maps, weight-tied across references.

    ``forward(x [B,C,H,W], refs [B,N,Cr,h,w], mask [B,N] | None) -> [B,C,H,W]``. Reference maps
    are resized to ``H x W`` when they differ. ``groups`` splits the C channels into groups,
    each with its own temperature (the attention is C/groups x C/groups per group and per
    reference). Masked (padded) references do not contribute; the result is invariant to the
    order of the references.
    """

    def __init__(self, channels: int, ref_channels: int, groups: int = 1, ffn_expansion: int = 2) -> None:
        super().__init__()
        if channels % groups:
            raise UsageError(f"StyleAttention: channels ({channels}) must be divisible by groups ({groups})")
        self.channels, self.groups = channels, groups
        self.norm_x = ChannelNorm(channels)
        self.norm_ref = ChannelNorm(ref_channels)
        self.to_q = nn.Conv2d(channels, channels, 1)
        self.to_k = nn.Conv2d(ref_channels, channels, 1)
        self.to_v = nn.Conv2d(ref_channels, channels, 1)
        self.temperature = nn.Parameter(torch.ones(groups, 1, 1))
        self.proj = nn.Conv2d(channels, channels, 1)
        self.norm_ffn = ChannelNorm(channels)
        hidden = channels * ffn_expansion
        self.ffn = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor, refs: Tensor, mask: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        n = refs.shape[1]
        r = refs.reshape(b * n, *refs.shape[2:])
        if r.shape[-2:] != (h, w):
            r = F.interpolate(r, size=(h, w), mode="bilinear", align_corners=False)
        r = self.norm_ref(r)
        g, cg = self.groups, c // self.groups
        q = self.to_q(self.norm_x(x)).reshape(b, 1, g, cg, h * w)
        k = self.to_k(r).reshape(b, n, g, cg, h * w)
        v = self.to_v(r).reshape(b, n, g, cg, h * w)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # [B, N, G, cg, cg]
        heads = attn.softmax(dim=-1) @ v  # [B, N, G, cg, HW]
        if mask is None:
            mixed = heads.mean(dim=1)
        else:
            m = mask.bool().view(b, n, 1, 1, 1)
            mixed = torch.where(m, heads, torch.zeros((), dtype=heads.dtype, device=heads.device)).sum(1)
            mixed = mixed / m.sum(1).clamp_min(1).to(heads.dtype)
        x = x + self.proj(mixed.reshape(b, c, h, w))
        return x + self.ffn(self.norm_ffn(x))


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


class SAUNet(Enhancer):
    """U-Net with a FiLM-modulated, style-attention bottleneck; output = input + residual.

    widths: channels per level, the last being the bottleneck (``len(widths) - 1``
    stride-2 downsamplings). Inputs of any size are padded to a multiple of the total stride
    and the output is cropped back.
    """

    consumes = frozenset({"vector", "maps"})

    def __init__(self, vector_dim: int, ref_channels: int, widths: Sequence[int] = (16, 24, 48, 64),
                 blocks: int = 1, groups: int = 1, ffn_expansion: int = 2) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2:
            raise UsageError(f"sa: 'widths' needs at least 2 levels, got {widths}")
        self.stride = 2 ** (len(widths) - 1)
        self.down = nn.ModuleList([nn.Sequential(_conv(3, widths[0]), _conv(widths[0], widths[0]))])
        for cin, cout in zip(widths[:-1], widths[1:], strict=False):
            self.down.append(nn.Sequential(_conv(cin, cout, 2), _conv(cout, cout)))
        bott = widths[-1]
        self.film = nn.Linear(vector_dim, 2 * bott)
        self.attn = nn.ModuleList([StyleAttention(bott, ref_channels, groups, ffn_expansion)
                                   for _ in range(blocks)])
        self.up = nn.ModuleList()
        for i in range(len(widths) - 1, 0, -1):
            self.up.append(_conv(widths[i] + widths[i - 1], widths[i - 1]))
        self.out = nn.Conv2d(widths[0], 3, 3, 1, 1)

    def forward(self, x: Tensor, pref: Preference) -> Tensor:
        if pref.maps is None:
            raise UsageError("enhancer 'sa' needs Preference.maps (pair it with an encoder that provides maps)")
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        y = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
        skips = []
        for stage in self.down:
            y = stage(y)
            skips.append(y)
        gamma, beta = self.film(pref.vector).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        y = y * (1 + gamma) + beta
        for block in self.attn:
            y = block(y, pref.maps[0], pref.mask)
        for stage, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = stage(torch.cat([y, skip], dim=1))
        return x + self.out(y)[..., :h, :w]


def require_maps(ctx: BuildContext | None, name: str):
    """The paired encoder, or a UsageError when it provides no reference maps."""
    enc = ctx.encoder if ctx is not None else None
    if enc is None or not getattr(enc, "map_channels", ()) or "maps" not in enc.provides:
        raise UsageError(f"enhancer '{name}' needs an encoder that provides maps (e.g. --encoder angular); "
                         "build it with BuildContext(encoder=...)")
    return enc


def build_sa(ctx: BuildContext, *, widths: Sequence[int] = (16, 24, 48, 64), blocks: int = 1,
             groups: int = 1, ffn_expansion: int = 2) -> SAUNet:
    """Build :class:`SAUNet` for ``ctx.encoder`` (reads ``dim`` and ``map_channels[0]``)."""
    enc = require_maps(ctx, "sa")
    return SAUNet(vector_dim=int(enc.dim), ref_channels=int(enc.map_channels[0]), widths=widths,
                  blocks=blocks, groups=groups, ffn_expansion=ffn_expansion)


@hookimpl
def register_enhancers(register):
    """Register the style-attention U-Net."""
    register("sa", build=build_sa,
             description="U-Net whose bottleneck attends to the reference feature maps (weight-tied style "
                         "attention, any N) and is FiLM-modulated by the preference vector",
             paper="the original research's style-attention (SA) block (docs/models.md)",
             configurations={
                 "small": {"widths": [16, 24, 48, 64], "blocks": 1, "groups": 1, "ffn_expansion": 2},
                 "paper": {"widths": [64, 128, 256, 512], "blocks": 2, "groups": 8, "ffn_expansion": 2},
             },
             version="1", consumes=["vector", "maps"])
