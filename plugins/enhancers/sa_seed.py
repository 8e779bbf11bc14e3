"""``sa-seed``: the style-attention (SA) block as the original research wrote it (grouped heads).

One attention head per reference, built with grouped 1x1 convs (one group per reference), so
the number of references N is fixed when the model is built (``ctx.num_refs``, the run's
``--refs``) and the heads are tied to reference *positions*: permuting the references changes
the output. A different N at forward raises a :class:`UsageError`. ``sa``
(:mod:`piebench_plugins.enhancers.sa`) is the weight-tied variant that takes any N in any order.

:class:`GroupedStyleAttention` (docs/models.md, "Style attention (SA) block"): queries from the
content map through a 1x1 conv; the N reference maps ``[B, N, Cr, h, w]`` (resized to the
content's H x W) stacked along channels ``[B, N*Cr, H, W]`` and turned into keys and values by
grouped 1x1 convs (``groups=N``); for each reference head n, channel attention
softmax(t_n * q_hat k_hat_n^T) with L2-normalised q, k over the positions and a learnable rescale
t_n; the N head outputs concatenated ``[B, N*C, H, W]`` and linearly projected back to C; two
residual adds (attention, then a feed-forward 1x1-conv block). The LayerNorms are those of ``sa``.
Padded references (``Preference.mask`` False) have their head output zeroed (the original had
no padding).

The U-Net around it is ``sa``'s :class:`SAUNet` (same widths, FiLM of the bottleneck by the
preference vector), so ``sa-seed`` and ``sa`` differ only in the attention block; it therefore
consumes ``{"vector", "maps"}``.

Parameters with N = 3: small 252,462 (128-d vector, 64-channel maps); paper (two blocks)
12,531,913 (512-d vector, 128-channel maps). The grouped convs and the projection grow with N.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from piebench_plugins.enhancers.sa import ChannelNorm, SAUNet, require_maps
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Preference


class GroupedStyleAttention(nn.Module):
    """Style attention with one grouped-conv head per reference (fixed N, order-dependent).

    ``forward(x [B,C,H,W], refs [B,N,Cr,h,w], mask [B,N] | None) -> [B,C,H,W]``.
    """

    def __init__(self, channels: int, ref_channels: int, num_refs: int, ffn_expansion: int = 2) -> None:
        super().__init__()
        if num_refs < 1:
            raise UsageError(f"sa-seed needs at least one reference per preference, got num_refs={num_refs}")
        self.channels, self.num_refs = channels, num_refs
        self.norm_x = ChannelNorm(channels)
        self.norm_ref = ChannelNorm(ref_channels)
        self.to_q = nn.Conv2d(channels, channels, 1)
        self.to_k = nn.Conv2d(num_refs * ref_channels, num_refs * channels, 1, groups=num_refs)
        self.to_v = nn.Conv2d(num_refs * ref_channels, num_refs * channels, 1, groups=num_refs)
        self.temperature = nn.Parameter(torch.ones(num_refs, 1, 1))
        self.proj = nn.Conv2d(num_refs * channels, channels, 1)
        self.norm_ffn = ChannelNorm(channels)
        hidden = channels * ffn_expansion
        self.ffn = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor, refs: Tensor, mask: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        n = refs.shape[1]
        if n != self.num_refs:
            raise UsageError(
                f"sa-seed was built for N={self.num_refs} references (one grouped attention head each) but got "
                f"N={n}; rebuild it with --refs {n}, or use enhancer 'sa' (weight-tied, any N)")
        r = refs.reshape(b * n, *refs.shape[2:])
        if r.shape[-2:] != (h, w):
            r = F.interpolate(r, size=(h, w), mode="bilinear", align_corners=False)
        r = self.norm_ref(r).reshape(b, n * r.shape[1], h, w)
        q = F.normalize(self.to_q(self.norm_x(x)).reshape(b, 1, c, h * w), dim=-1)
        k = F.normalize(self.to_k(r).reshape(b, n, c, h * w), dim=-1)
        v = self.to_v(r).reshape(b, n, c, h * w)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # [B, N, C, C]
        heads = attn.softmax(dim=-1) @ v  # [B, N, C, HW]
        if mask is not None:
            heads = heads * mask.to(heads.dtype).view(b, n, 1, 1)
        x = x + self.proj(heads.reshape(b, n * c, h, w))
        return x + self.ffn(self.norm_ffn(x))


class SeedSAUNet(SAUNet):
    """``sa``'s U-Net with :class:`GroupedStyleAttention` blocks at the bottleneck (N fixed)."""

    def __init__(self, vector_dim: int, ref_channels: int, num_refs: int,
                 widths: Sequence[int] = (16, 24, 48, 64), blocks: int = 1, ffn_expansion: int = 2) -> None:
        super().__init__(vector_dim, ref_channels, widths, blocks=0, ffn_expansion=ffn_expansion)
        self.num_refs = num_refs
        self.attn = nn.ModuleList([GroupedStyleAttention(int(widths[-1]), ref_channels, num_refs, ffn_expansion)
                                   for _ in range(blocks)])

    def forward(self, x: Tensor, pref: Preference) -> Tensor:
        if pref.maps is None:
            raise UsageError("enhancer 'sa-seed' needs Preference.maps (pair it with an encoder that provides maps)")
        return super().forward(x, pref)


def build_sa_seed(ctx: BuildContext, *, widths: Sequence[int] = (16, 24, 48, 64), blocks: int = 1,
                  ffn_expansion: int = 2) -> SeedSAUNet:
    """Build :class:`SeedSAUNet` for ``ctx.encoder`` (``dim``, ``map_channels[0]``) and ``ctx.num_refs``."""
    enc = require_maps(ctx, "sa-seed")
    return SeedSAUNet(vector_dim=int(enc.dim), ref_channels=int(enc.map_channels[0]), num_refs=int(ctx.num_refs),
                      widths=widths, blocks=blocks, ffn_expansion=ffn_expansion)


@hookimpl
def register_enhancers(register):
    """Register ``sa-seed``."""
    register("sa-seed", build=build_sa_seed,
             description="sa's U-Net with the original grouped style attention: one head per reference, "
                         "N fixed at build (--refs), order-dependent",
             paper="the original research's style-attention (SA) block (docs/models.md)",
             configurations={
                 "small": {"widths": [16, 24, 48, 64], "blocks": 1, "ffn_expansion": 2},
                 "paper": {"widths": [64, 128, 256, 512], "blocks": 2, "ffn_expansion": 2},
             },
             version="1", consumes=["vector", "maps"], meta={"downsample": 8, "fixed_num_refs": True})
