"""Image-adaptive 3D LUTs (Zeng et al., TPAMI 2020; official code HuiZeng/Image-Adaptive-3DLUT).

A small CNN (the official ``Classifier``) sees the image bilinearly resized to 256 x 256 and
predicts one raw weight per basis LUT (3 LUTs of 3 x 33^3, no softmax); the image-specific LUT
``sum_k w_k T_k`` is applied to the input at full resolution by trilinear interpolation
(``torch.nn.functional.grid_sample``; LUT indexed ``[channel, b, g, r]``, bin size 1.0001 / 32 as
in the official evaluation; out-of-range colours are clamped to the LUT's border).

Variants (the ``conditioned`` parameter):
  unconditioned (configuration ``paper``; consumes nothing): the official model, 270,083
    classifier + 107,811 x 3 LUT = 593,516 parameters; :func:`load_weights` reads the released
    ``classifier.pth`` / ``LUTs.pth``.
  conditioned (``paper-cond``, ``small``; consumes ``vector``): the preference vector is
    projected (linear + LeakyReLU 0.2) to ``pref_channels`` features, broadcast over the
    classifier's last ``k x k`` feature map and concatenated with it before the final
    ``k x k`` conv, so the LUT weights depend on the image and on the user's preference.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Enhancer, Preference
from piebench.pretrained import load_into, read_torch_file

#: The official trilinear kernel's bin size numerator (``binsize = 1.0001 / (dim - 1)``).
BIN_NUMERATOR = 1.0001


def identity_lut(dim: int) -> Tensor:
    """``[3, dim, dim, dim]`` identity LUT indexed ``[channel, b, g, r]`` (r varies fastest)."""
    ramp = torch.linspace(0, 1, dim)
    b, g, r = torch.meshgrid(ramp, ramp, ramp, indexing="ij")
    return torch.stack([r, g, b])


def trilinear_lut(lut: Tensor, x: Tensor) -> Tensor:
    """Look ``x [B, 3, H, W]`` up in per-sample LUTs ``lut [B, 3, D, D, D]`` (``[c, b, g, r]``)."""
    grid = (x / BIN_NUMERATOR * 2 - 1).permute(0, 2, 3, 1).unsqueeze(1)  # [B, 1, H, W, (r, g, b)]
    out = F.grid_sample(lut, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.squeeze(2)


class Classifier(nn.Module):
    """The official weight predictor; ``model`` indices match the released ``classifier.pth``.

    resize to ``size`` (bilinear), conv 3->w (3x3/2) + LeakyReLU + InstanceNorm, three blocks
    doubling the width with InstanceNorm, a conv 8w->8w (3x3/2) + LeakyReLU, Dropout 0.5 and a
    ``size/32``-wide conv to ``outputs`` weights. ``features`` stops before the last conv.
    """

    def __init__(self, width: int = 16, size: int = 256, outputs: int = 3) -> None:
        super().__init__()
        if size % 32 or size < 32:
            raise UsageError(f"lut3d: classifier 'size' must be a multiple of 32, got {size}")
        w = int(width)

        def block(cin: int, cout: int, norm: bool) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            return layers + [nn.InstanceNorm2d(cout, affine=True)] if norm else layers

        self.size = int(size)
        self.model = nn.Sequential(
            nn.Upsample(size=(size, size), mode="bilinear", align_corners=False),
            *block(3, w, True), *block(w, 2 * w, True), *block(2 * w, 4 * w, True),
            *block(4 * w, 8 * w, True), *block(8 * w, 8 * w, False),
            nn.Dropout(p=0.5),
            nn.Conv2d(8 * w, outputs, size // 32, padding=0),
        )
        for m in self.modules():  # the official weights_init_normal_classifier, last bias 1
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
            elif isinstance(m, nn.InstanceNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.model[-1].bias, 1.0)

    def features(self, x: Tensor) -> Tensor:
        """``[B, 8w, size/32, size/32]``: everything before the last conv."""
        return self.model[:-1](x)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).flatten(1)


class LUT3D(Enhancer):
    """Unconditioned image-adaptive 3D LUT (the official model); ``forward(x, pref=None)``."""

    consumes = frozenset()

    def __init__(self, num_luts: int = 3, lut_dim: int = 33, width: int = 16, size: int = 256) -> None:
        super().__init__()
        self.lut_dim = int(lut_dim)
        self.classifier = Classifier(width, size, num_luts)
        luts = torch.zeros(num_luts, 3, lut_dim, lut_dim, lut_dim)
        luts[0] = identity_lut(lut_dim)  # basis 0 identity, the others zero, as officially
        self.luts = nn.Parameter(luts)

    def weights(self, x: Tensor, pref: Preference | None) -> Tensor:
        """``[B, num_luts]`` raw mixing weights."""
        return self.classifier(x)

    def forward(self, x: Tensor, pref: Preference | None = None) -> Tensor:
        return self.apply_full_resolution(x, self.prepare_full_resolution(x, pref))

    def prepare_full_resolution(self, x: Tensor, pref: Preference | None = None) -> Tensor:
        """Everything before the full-resolution step: the image-specific LUT ``[B, 3, D, D, D]``."""
        return torch.einsum("bk,kcdhw->bcdhw", self.weights(x, pref), self.luts)

    def apply_full_resolution(self, x: Tensor, lut: Tensor) -> Tensor:
        """The per-pixel step on the full image: the trilinear lookup."""
        return trilinear_lut(lut, x)


class LUT3DConditioned(LUT3D):
    """3D LUT whose weights come from the image features and the preference vector."""

    consumes = frozenset({"vector"})

    def __init__(self, pref_dim: int, num_luts: int = 3, lut_dim: int = 33, width: int = 16,
                 size: int = 256, pref_channels: int = 32) -> None:
        super().__init__(num_luts, lut_dim, width, size)
        self.pref_dim = int(pref_dim)
        self.pref_proj = nn.Sequential(nn.Linear(pref_dim, pref_channels), nn.LeakyReLU(0.2))
        last = self.classifier.model[-1]
        self.head = nn.Conv2d(last.in_channels + pref_channels, num_luts, last.kernel_size)
        nn.init.xavier_normal_(self.head.weight)
        nn.init.constant_(self.head.bias, 1.0)
        self.classifier.model[-1] = nn.Identity()  # the head replaces the unconditioned last conv

    def weights(self, x: Tensor, pref: Preference | None) -> Tensor:
        if pref is None or pref.vector.dim() != 2 or pref.vector.shape[1] != self.pref_dim:
            got = "none" if pref is None else tuple(pref.vector.shape)
            raise UsageError(f"lut3d (conditioned) needs a preference vector [B, {self.pref_dim}], got {got}")
        feats = self.classifier.features(x)
        p = self.pref_proj(pref.vector)[:, :, None, None].expand(-1, -1, *feats.shape[2:])
        return self.head(torch.cat([feats, p], 1)).flatten(1)


def load_weights(module: LUT3D, path: str) -> None:
    """Load the released weights: ``path`` is a folder holding ``classifier.pth`` and ``LUTs.pth``,
    or a single file holding ``{"classifier": state_dict, "LUTs": {"0": {"LUT": T0}, ...}}``.

    ``LUTs.pth`` is ``{"0": {"LUT": T0}, "1": ..., ...}`` with each T ``[3, D, D, D]``.
    """
    if type(module) is not LUT3D:
        raise UsageError("lut3d: released weights fit the unconditioned model (configuration 'paper')")
    if os.path.isdir(path):
        cls_path, lut_path = os.path.join(path, "classifier.pth"), os.path.join(path, "LUTs.pth")
        cls_state, luts = read_torch_file(cls_path), read_torch_file(lut_path)
    else:
        both = read_torch_file(path)
        if not isinstance(both, dict) or not {"classifier", "LUTs"} <= set(both):
            raise UsageError(f"weights file {path} must hold {{'classifier': ..., 'LUTs': ...}} "
                             "(or pass the folder holding classifier.pth and LUTs.pth)")
        cls_path = lut_path = path
        cls_state, luts = both["classifier"], both["LUTs"]
    if not isinstance(cls_state, dict):
        raise UsageError(f"weights file {cls_path} does not hold the classifier's state_dict")
    load_into(module.classifier, cls_state, cls_path)
    n = module.luts.shape[0]
    try:
        tables = torch.stack([luts[str(k)]["LUT"] for k in range(n)])
    except (KeyError, TypeError, RuntimeError):
        raise UsageError(f"weights file {lut_path} must hold {{'0': {{'LUT': T}}, ...}} for {n} LUTs "
                         f"of shape {tuple(module.luts.shape[1:])}") from None
    if tables.shape != module.luts.shape:
        raise UsageError(f"weights file {lut_path} holds LUTs of shape {tuple(tables.shape)}, "
                         f"the model has {tuple(module.luts.shape)}")
    with torch.no_grad():
        module.luts.copy_(tables)


def build_lut3d(ctx: BuildContext, conditioned: bool = False, num_luts: int = 3, lut_dim: int = 33,
                width: int = 16, size: int = 256, pref_dim: int = 512, pref_channels: int = 32) -> LUT3D:
    """Build the LUT model; conditioned variants take ``pref_dim`` from the paired encoder's ``dim``."""
    if not conditioned:
        return LUT3D(num_luts, lut_dim, width, size)
    if ctx.encoder is not None and getattr(ctx.encoder, "dim", 0):
        pref_dim = int(ctx.encoder.dim)
    return LUT3DConditioned(pref_dim, num_luts, lut_dim, width, size, pref_channels)


@hookimpl
def register_enhancers(register):
    register(
        "lut3d", build=build_lut3d,
        description="Image-adaptive 3D LUTs: CNN-weighted basis LUTs, trilinear lookup at full resolution",
        paper="Zeng et al., Learning Image-adaptive 3D Lookup Tables, TPAMI 2020 (HuiZeng/Image-Adaptive-3DLUT)",
        configurations={
            "small": {"conditioned": True, "num_luts": 3, "lut_dim": 17, "width": 8, "size": 64,
                      "pref_dim": 64, "pref_channels": 16},
            "paper": {"conditioned": False, "num_luts": 3, "lut_dim": 33, "width": 16, "size": 256},
            "paper-cond": {"conditioned": True, "num_luts": 3, "lut_dim": 33, "width": 16, "size": 256,
                           "pref_dim": 512, "pref_channels": 32},
        },
        version="1",
        load_weights=load_weights,
        full_resolution=True,  # curves / LUT / 1x1 convs applied to the full image; the CNN sees a small copy
        meta={"parameters": {"paper": 593_516}})
