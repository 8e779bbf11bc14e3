"""HDRNet: deep bilateral learning (Gharbi et al., SIGGRAPH 2017; google/hdrnet ``HDRNetCurves``).

Low resolution: the image resized to 256 x 256 -> splat (4 stride-2 convs, 8/16/32/64 ch)
-> local path (two 3x3 convs, the second linear and bias-free) and global path (two stride-2
convs, fc 256 -> 128 -> 64 linear) -> fusion ``relu(local + global)`` -> 1x1 conv to a
16 x 16 x 8 bilateral grid of 3 x 4 affine colour transforms. Full resolution: the guide map
(3x3 colour matrix + bias, per-channel piecewise-linear curves of 16 ReLU pieces, 1x1 mixing
to one channel, clipped to [0, 1]), trilinear slicing of the grid at (x, y, guide) with
``grid_sample`` (cell centres at +0.5, clamped borders, as the official CUDA op), and the
per-pixel affine apply ``out_c = sum_j A_cj x_j + A_c3``.

The ``paper`` configuration is the official default model (channel multiplier 1, 8 luma bins,
spatial bin 16, input 256, no batch norm) with the curve guide: exactly 482,080 parameters,
the official count (docs/models.md). Differences from the TensorFlow original: PyTorch's symmetric
padding for the stride-2 convs (TF "SAME" pads bottom/right only), plain linear depth weights
(the official op smooths the tent weight in z), and the low-res input is an antialiased
bilinear resize done inside the model.

Conditioning (``conditioned=True``; consumes ``vector``): the preference vector is concatenated
with the flattened global-path features before the first fully connected layer, so the user's
preference shapes the global features that are fused into every grid cell.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Enhancer, Preference


class Coefficients(nn.Module):
    """Low-res network: ``[B, 3, S, S]`` -> bilateral grid ``[B, 12, D, S/sb, S/sb]`` (row-major 3x4 affine)."""

    def __init__(self, net_input_size: int = 256, spatial_bin: int = 16, luma_bins: int = 8,
                 channel_multiplier: int = 1, extra_global: int = 0) -> None:
        super().__init__()
        cm, gd = int(channel_multiplier), int(luma_bins)
        n_splat = int(math.log2(net_input_size / spatial_bin))
        n_global = int(math.log2(spatial_bin / 4))  # down to 4 x 4 at the coarsest level
        if 2 ** n_splat * spatial_bin != net_input_size or n_global < 1:
            raise UsageError(f"hdrnet: net_input_size / spatial_bin must be a power of two and spatial_bin >= 8, "
                             f"got {net_input_size}, {spatial_bin}")
        self.luma_bins = gd
        splat, cin = [], 3
        for i in range(n_splat):
            splat += [nn.Conv2d(cin, cm * 2 ** i * gd, 3, 2, 1), nn.ReLU(inplace=True)]
            cin = cm * 2 ** i * gd
        self.splat = nn.Sequential(*splat)
        splat_out, c = cin, 8 * cm * gd
        glob = []
        for _ in range(n_global):
            glob += [nn.Conv2d(cin, c, 3, 2, 1), nn.ReLU(inplace=True)]
            cin = c
        self.global_conv = nn.Sequential(*glob)
        flat = c * (spatial_bin // 2 ** n_global) ** 2 + extra_global
        self.global_fc = nn.Sequential(nn.Linear(flat, 32 * cm * gd), nn.ReLU(inplace=True),
                                       nn.Linear(32 * cm * gd, 16 * cm * gd), nn.ReLU(inplace=True),
                                       nn.Linear(16 * cm * gd, c))
        self.local = nn.Sequential(nn.Conv2d(splat_out, c, 3, 1, 1),
                                   nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, 1, 1, bias=False))
        self.prediction = nn.Conv2d(c, gd * 12, 1)
        for m in self.modules():  # variance scaling (He) init, zero biases, as officially
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, low: Tensor, extra: Tensor | None = None) -> Tensor:
        splat = self.splat(low)
        g = self.global_conv(splat).flatten(1)
        if extra is not None:
            g = torch.cat([g, extra], 1)
        g = self.global_fc(g)
        fusion = F.relu(self.local(splat) + g[:, :, None, None])
        b, _, h, w = fusion.shape
        # Official unrolling: channel (in * n_out + out) * D + z -> [B, out, in, D, h, w].
        grid = self.prediction(fusion).view(b, 4, 3, self.luma_bins, h, w).transpose(1, 2)
        return grid.reshape(b, 12, self.luma_bins, h, w)


class CurveGuide(nn.Module):
    """Official ``HDRNetCurves`` guide: ccm + bias, 16-piece ReLU curves per channel, 1x1 mix, clip."""

    def __init__(self, points: int = 16) -> None:
        super().__init__()
        self.ccm = nn.Parameter(torch.eye(3) + torch.randn(1) * 1e-4)
        self.ccm_bias = nn.Parameter(torch.zeros(3))
        self.shifts = nn.Parameter(torch.linspace(0, 1, points + 1)[:-1].repeat(3, 1))  # [3, points]
        slopes = torch.zeros(3, points)
        slopes[:, 0] = 1.0
        self.slopes = nn.Parameter(slopes)
        self.mix_weight = nn.Parameter(torch.full((3,), 1.0 / 3))
        self.mix_bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        g = torch.einsum("bihw,ij->bjhw", x, self.ccm) + self.ccm_bias[:, None, None]
        curve = torch.zeros_like(g)
        for k in range(self.shifts.shape[1]):  # one piece at a time: O(B H W) memory at 4K
            curve = torch.addcmul(curve, self.slopes[:, k, None, None], F.relu(g - self.shifts[:, k, None, None]))
        g = curve
        g = torch.einsum("bchw,c->bhw", g, self.mix_weight) + self.mix_bias
        return g.clamp(0, 1)


#: Pixels per band of rows in the inference path (guide, slicing and apply stay in cache).
PIXEL_CHUNK = 1 << 15


def slice_apply(grid: Tensor, guide: Tensor, x: Tensor, row0: int = 0, height: int | None = None) -> Tensor:
    """Slice ``grid [B, 12, D, gh, gw]`` at every pixel (x, y, ``guide [B, H, W]``) and apply to ``x``.

    ``x`` may be the band of rows ``row0 .. row0 + H`` of an image ``height`` rows tall (the
    slicing's y coordinates are the full image's).
    """
    b, _, h, w = x.shape
    full_h = h if height is None else height
    ys = (torch.arange(row0, row0 + h, device=x.device, dtype=x.dtype) + 0.5) / full_h * 2 - 1
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w * 2 - 1
    coords = torch.stack([xs.view(1, 1, w).expand(b, h, w), ys.view(1, h, 1).expand(b, h, w),
                          guide * 2 - 1], dim=-1).unsqueeze(1)  # [B, 1, H, W, (x, y, z)]
    coeff = F.grid_sample(grid, coords, mode="bilinear", padding_mode="border", align_corners=False)
    coeff = coeff.view(b, 3, 4, h, w)
    return (coeff[:, :, :3] * x.unsqueeze(1)).sum(2) + coeff[:, :, 3]


class HDRNet(Enhancer):
    """Unconditioned HDRNet (``HDRNetCurves``); ``forward(x, pref=None)``."""

    consumes = frozenset()

    def __init__(self, net_input_size: int = 256, spatial_bin: int = 16, luma_bins: int = 8,
                 channel_multiplier: int = 1, guide_points: int = 16, extra_global: int = 0) -> None:
        super().__init__()
        self.net_input_size = int(net_input_size)
        self.coefficients = Coefficients(net_input_size, spatial_bin, luma_bins, channel_multiplier, extra_global)
        self.guide = CurveGuide(guide_points)

    def lowres(self, x: Tensor) -> Tensor:
        """The network's ``net_input_size`` square input (antialiased bilinear resize)."""
        s = self.net_input_size
        return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)

    def global_extra(self, pref: Preference | None) -> Tensor | None:
        return None

    def forward(self, x: Tensor, pref: Preference | None = None) -> Tensor:
        return self.apply_full_resolution(x, self.prepare_full_resolution(x, pref))

    def prepare_full_resolution(self, x: Tensor, pref: Preference | None = None) -> Tensor:
        """Everything before the full-resolution step: the bilateral grid from the 256 px copy."""
        return self.coefficients(self.lowres(x), self.global_extra(pref))

    def apply_full_resolution(self, x: Tensor, grid: Tensor) -> Tensor:
        """The per-pixel step on the full image: guide map, slicing, affine apply.

        Without gradients on the CPU the image is walked in bands of rows (about
        :data:`PIXEL_CHUNK` pixels) so that the guide's 16 curve pieces and the slicing work on
        cache-resident data; every pixel is computed by the same operations either way.
        """
        h, w = x.shape[-2:]
        rows = max(1, PIXEL_CHUNK // w)
        if torch.is_grad_enabled() or x.device.type != "cpu" or rows >= h:
            return slice_apply(grid, self.guide(x), x)
        out = None  # allocated with the dtype the bands come out in (autocast may change it)
        for r in range(0, h, rows):
            band = x[:, :, r:r + rows]
            y = slice_apply(grid, self.guide(band), band, row0=r, height=h)
            if out is None:
                out = torch.empty(x.shape, dtype=y.dtype, device=x.device)
            out[:, :, r:r + rows] = y
        return out


class HDRNetConditioned(HDRNet):
    """HDRNet whose global path also reads the preference vector (before its first fc layer)."""

    consumes = frozenset({"vector"})

    def __init__(self, pref_dim: int, **kwargs) -> None:
        super().__init__(extra_global=int(pref_dim), **kwargs)
        self.pref_dim = int(pref_dim)

    def global_extra(self, pref: Preference | None) -> Tensor:
        if pref is None or pref.vector.dim() != 2 or pref.vector.shape[1] != self.pref_dim:
            got = "none" if pref is None else tuple(pref.vector.shape)
            raise UsageError(f"hdrnet (conditioned) needs a preference vector [B, {self.pref_dim}], got {got}")
        return pref.vector


def build_hdrnet(ctx: BuildContext, conditioned: bool = False, net_input_size: int = 256, spatial_bin: int = 16,
                 luma_bins: int = 8, channel_multiplier: int = 1, guide_points: int = 16,
                 pref_dim: int = 512) -> HDRNet:
    """Build HDRNet; the conditioned variant takes ``pref_dim`` from the paired encoder's ``dim``."""
    kw = dict(net_input_size=net_input_size, spatial_bin=spatial_bin, luma_bins=luma_bins,
              channel_multiplier=channel_multiplier, guide_points=guide_points)
    if not conditioned:
        return HDRNet(**kw)
    if ctx.encoder is not None and getattr(ctx.encoder, "dim", 0):
        pref_dim = int(ctx.encoder.dim)
    return HDRNetConditioned(pref_dim, **kw)


@hookimpl
def register_enhancers(register):
    register(
        "hdrnet", build=build_hdrnet,
        description="HDRNet: low-res bilateral grid of affine colour transforms, sliced by a full-res guide",
        paper="Gharbi et al., Deep Bilateral Learning for Real-Time Image Enhancement, SIGGRAPH 2017",
        configurations={
            "small": {"conditioned": True, "net_input_size": 64, "spatial_bin": 8, "luma_bins": 4,
                      "channel_multiplier": 1, "pref_dim": 64},
            "paper": {"conditioned": False, "net_input_size": 256, "spatial_bin": 16, "luma_bins": 8,
                      "channel_multiplier": 1},
            "paper-cond": {"conditioned": True, "net_input_size": 256, "spatial_bin": 16, "luma_bins": 8,
                           "channel_multiplier": 1, "pref_dim": 512},
        },
        version="1",
        full_resolution=True,  # coefficients predicted at 256 px, sliced and applied at full resolution
        meta={"parameters": {"paper": 482_080}})
