"""CSRNet: conditional sequential retouching network (He et al., ECCV 2020; hejingwenhejingwen/CSRNet).

Condition network: three convs (7x7, 3x3, 3x3; 32 channels, stride 2, zero padding 1, ReLU)
and a global average -> a 32-d condition vector. Base network: three per-pixel 1x1 convs
3 -> 64 -> 64 -> 3, each followed by global feature modulation (GFM) from the condition,
``out = out * scale + shift + out`` (ReLU after the first two). The ``paper`` configuration is
the official model: 36,489 parameters.

Full resolution: the base network runs per pixel on the full image. The condition network sees
the image itself (as officially) unless its shorter side exceeds ``cond_short_side``; then it
sees an area-downsampled copy with that shorter side (480 in ``paper``, the 480p FiveK setting
the model was trained at, so 480p inputs are processed exactly as officially and a 4K image
never runs through the conv stack at 4K). ``cond_short_side=None`` always uses the full image.

Conditioning on the user's preference (``condition``):
  ``"image"`` (``paper``; consumes nothing): the official model; :func:`load_weights` reads the
    official ``csrnet.pth`` (its keys are this module's).
  ``"concat"`` (``small``, ``paper-cond``; consumes ``vector``): GFM reads the image condition
    concatenated with the preference vector ``[B, 32 + D]``.
  ``"preference"`` (consumes ``vector``): GFM reads the preference vector only; no condition network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Enhancer, Preference
from piebench.pretrained import load_into, read_state_dict

CONDITIONS = ("image", "concat", "preference")
#: Pixels per chunk of the folded inference path (64 channels x 4 Ki pixels = 1 MB in float32).
PIXEL_CHUNK = 1 << 12


class Condition(nn.Module):
    """The official condition network: 3 strided convs with ReLU, then the spatial mean."""

    def __init__(self, in_nc: int = 3, nf: int = 32) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d(1)
        self.conv1 = nn.Conv2d(in_nc, nf, 7, 2, 0)
        self.conv2 = nn.Conv2d(nf, nf, 3, 2, 0)
        self.conv3 = nn.Conv2d(nf, nf, 3, 2, 0)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        for conv in (self.conv1, self.conv2, self.conv3):
            x = self.act(conv(self.pad(x)))
        return x.mean(dim=(2, 3))


class CSRNet(Enhancer):
    """CSRNet with GFM read from the image condition (``condition="image"``), official names."""

    consumes = frozenset()

    def __init__(self, base_nf: int = 64, cond_nf: int = 32, cond_short_side: int | None = 480,
                 gfm_in: int | None = None, with_condition_net: bool = True) -> None:
        super().__init__()
        self.base_nf = int(base_nf)
        self.cond_short_side = cond_short_side
        self.cond_net = Condition(3, cond_nf) if with_condition_net else None
        gfm_in = cond_nf if gfm_in is None else gfm_in
        for i, n in enumerate((base_nf, base_nf, 3), start=1):
            self.add_module(f"cond_scale{i}", nn.Linear(gfm_in, n))
            self.add_module(f"cond_shift{i}", nn.Linear(gfm_in, n))
        self.conv1 = nn.Conv2d(3, base_nf, 1)
        self.conv2 = nn.Conv2d(base_nf, base_nf, 1)
        self.conv3 = nn.Conv2d(base_nf, 3, 1)
        self.act = nn.ReLU(inplace=True)

    def condition_input(self, x: Tensor) -> Tensor:
        """The image the condition network sees (area-downsampled above ``cond_short_side``)."""
        h, w = x.shape[-2:]
        s = self.cond_short_side
        if s is None or min(h, w) <= s:
            return x
        size = (s, max(1, round(w * s / h))) if h <= w else (max(1, round(h * s / w)), s)
        return F.interpolate(x, size=size, mode="area")

    def condition(self, x: Tensor, pref: Preference | None) -> Tensor:
        """``[B, gfm_in]`` vector driving the modulation."""
        return self.cond_net(self.condition_input(x))

    def forward(self, x: Tensor, pref: Preference | None = None) -> Tensor:
        return self.apply_full_resolution(x, self.prepare_full_resolution(x, pref))

    def prepare_full_resolution(self, x: Tensor, pref: Preference | None = None) -> list[tuple[Tensor, Tensor]]:
        """Everything before the full-resolution step: the GFM ``(scale, shift)`` of each 1x1 conv."""
        cond = self.condition(x, pref)
        return [(getattr(self, f"cond_scale{i}")(cond)[:, :, None, None],
                 getattr(self, f"cond_shift{i}")(cond)[:, :, None, None]) for i in (1, 2, 3)]

    def apply_full_resolution(self, x: Tensor, gfm: list[tuple[Tensor, Tensor]]) -> Tensor:
        """The per-pixel base network on the full image: 1x1 conv, ``out * scale + shift + out``, ReLU.

        Without gradients the modulation is folded into each sample's 1x1 weights and biases
        (``conv(h) * (1 + s) + t`` = ``(W (1 + s)) h + (b (1 + s) + t)``; equal up to float
        rounding) and the three layers run as matrix products over chunks of pixels that stay in
        cache, so the 64-channel maps of a 4K image are never materialised.
        """
        if not torch.is_grad_enabled():
            return self._apply_folded(x, gfm)
        out = x
        for i, (conv, (scale, shift)) in enumerate(zip((self.conv1, self.conv2, self.conv3), gfm, strict=True)):
            out = conv(out)
            out = out * scale + shift + out
            if i < 2:
                out = self.act(out)
        return out


    def _apply_folded(self, x: Tensor, gfm: list[tuple[Tensor, Tensor]]) -> Tensor:
        b, c, h, w = x.shape
        n = h * w
        flat = x.reshape(b, c, n)
        out = None  # allocated with the dtype the products come out in (bf16 under autocast)
        chunk = PIXEL_CHUNK if x.device.type == "cpu" else 1 << 22
        convs = (self.conv1, self.conv2, self.conv3)
        for k in range(b):
            layers = []
            for conv, (scale, shift) in zip(convs, gfm, strict=True):
                g = 1 + scale[k].reshape(-1)
                weight = conv.weight.reshape(conv.out_channels, conv.in_channels) * g[:, None]
                layers.append((weight, (conv.bias * g + shift[k].reshape(-1))[:, None]))
            (w1, b1), (w2, b2), (w3, b3) = layers
            for s in range(0, n, chunk):
                t = torch.addmm(b1, w1, flat[k, :, s:s + chunk]).relu_()
                t = torch.addmm(b2, w2, t).relu_()
                t = torch.addmm(b3, w3, t)
                if out is None:
                    out = torch.empty(b, 3, n, dtype=t.dtype, device=x.device)
                out[k, :, s:s + chunk] = t
        return out.view(b, 3, h, w)


class CSRNetConditioned(CSRNet):
    """CSRNet whose GFM reads the preference vector (``"concat"`` with the image condition, or alone)."""

    consumes = frozenset({"vector"})

    def __init__(self, pref_dim: int, condition: str = "concat", base_nf: int = 64, cond_nf: int = 32,
                 cond_short_side: int | None = 480) -> None:
        if condition not in ("concat", "preference"):
            raise UsageError(f"csrnet: condition must be one of {', '.join(CONDITIONS)}, got '{condition}'")
        concat = condition == "concat"
        super().__init__(base_nf, cond_nf, cond_short_side, gfm_in=pref_dim + (cond_nf if concat else 0),
                         with_condition_net=concat)
        self.pref_dim = int(pref_dim)

    def condition(self, x: Tensor, pref: Preference | None) -> Tensor:
        if pref is None or pref.vector.dim() != 2 or pref.vector.shape[1] != self.pref_dim:
            got = "none" if pref is None else tuple(pref.vector.shape)
            raise UsageError(f"csrnet (conditioned) needs a preference vector [B, {self.pref_dim}], got {got}")
        if self.cond_net is None:
            return pref.vector
        return torch.cat([self.cond_net(self.condition_input(x)), pref.vector], 1)


def load_weights(module: CSRNet, path: str) -> None:
    """``load_pretrained`` entry: ``path`` is a CSRNet state_dict file such as the official
    ``experiments/pretrain_models/csrnet.pth`` (a plain state_dict with the official key names)."""
    if type(module) is not CSRNet:
        raise UsageError("csrnet: released weights fit the unconditioned model (configuration 'paper')")
    load_into(module, read_state_dict(path), path)


def build_csrnet(ctx: BuildContext, condition: str = "image", base_nf: int = 64, cond_nf: int = 32,
                 cond_short_side: int | None = 480, pref_dim: int = 512) -> CSRNet:
    """Build CSRNet; conditioned variants take ``pref_dim`` from the paired encoder's ``dim``."""
    if condition not in CONDITIONS:
        raise UsageError(f"csrnet: condition must be one of {', '.join(CONDITIONS)}, got '{condition}'")
    if condition == "image":
        return CSRNet(base_nf, cond_nf, cond_short_side)
    if ctx.encoder is not None and getattr(ctx.encoder, "dim", 0):
        pref_dim = int(ctx.encoder.dim)
    return CSRNetConditioned(pref_dim, condition, base_nf, cond_nf, cond_short_side)


@hookimpl
def register_enhancers(register):
    register(
        "csrnet", build=build_csrnet,
        description="CSRNet: per-pixel 1x1 base network with global feature modulation from a condition vector",
        paper="He et al., Conditional Sequential Modulation for Efficient Global Image Retouching, ECCV 2020",
        configurations={
            "small": {"condition": "concat", "base_nf": 32, "cond_nf": 16, "cond_short_side": 480, "pref_dim": 64},
            "paper": {"condition": "image", "base_nf": 64, "cond_nf": 32, "cond_short_side": 480},
            "paper-cond": {"condition": "concat", "base_nf": 64, "cond_nf": 32, "cond_short_side": 480,
                           "pref_dim": 512},
        },
        version="1",
        load_weights=load_weights,
        full_resolution=True,  # curves / LUT / 1x1 convs applied to the full image; the CNN sees a small copy
        meta={"parameters": {"paper": 36_489}})
