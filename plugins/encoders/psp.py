"""A pSp GradualStyleEncoder-style preference encoder (Richardson et al., CVPR 2021).

Each reference goes through a ResNet-18 trunk (torchvision's architecture; pSp itself uses an
IR-SE-50 face backbone, which has no use for photos). Its stride-8, -16 and -32 stage outputs
are merged FPN-style as in pSp: the deepest map goes through a 1x1 lateral (identity when it
already has the FPN width, as pSp's 512-channel ``c3``), each finer one is
``upsample(coarser) + lateral_1x1(stage)`` (bilinear, ``align_corners=True``). A "map2style"
head per scale (repeated stride-2 3x3 conv + LeakyReLU down to 1x1 at the build resolution,
then a linear layer; a global average covers other resolutions) turns each merged map into a
style; ``styles`` sets how many heads each scale has (pSp: 18 StyleGAN layers; one per scale
here). A reference's embedding is the average of its styles (as StyleGAN's w is the average of
W+); the preference vector is the mean over the valid references.

``maps`` are the merged FPN maps of every reference, ordered (stride 8, stride 16, stride 32):
``maps[0]`` is the stride-8 map the ``sa`` enhancer attends to; all have ``fpn_width``
channels. ``metric_loss`` is ``"angular"`` by default (the embedding is trained like the angular
encoder, then jointly); build with ``metric_loss=None`` to train it end to end only.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Encoder, Preference, RefSet

from ._resnet import PAPER_WIDTHS, ResNetTrunk, load_resnet18, per_valid

STRIDES = (8, 16, 32)


class GradualStyleBlock(nn.Module):
    """pSp's map2style: stride-2 3x3 conv + LeakyReLU, repeated down to 1x1, then a linear layer."""

    def __init__(self, cin: int, cout: int, spatial: int) -> None:
        super().__init__()
        pools = max(1, math.ceil(math.log2(max(spatial, 1))))
        mods: list[nn.Module] = []
        for i in range(pools):
            mods += [nn.Conv2d(cin if i == 0 else cout, cout, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*mods)
        self.linear = nn.Linear(cout, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.convs(x).mean((2, 3)))


class PSPEncoder(Encoder):
    """ResNet-18 + FPN + map2style heads: vector = mean style, maps = merged FPN maps per scale."""

    provides = frozenset({"vector", "maps"})

    def __init__(self, widths: tuple[int, ...] = PAPER_WIDTHS, fpn_width: int = 512,
                 styles: tuple[int, int, int] = (1, 1, 1), image_size: int = 256,
                 metric_loss: str | None = "angular") -> None:
        super().__init__()
        if len(styles) != 3 or min(styles) < 1:
            raise UsageError(f"psp styles must give 1 or more heads for each of 3 scales, got {styles}")
        self.trunk = ResNetTrunk(tuple(widths))
        w = self.trunk.widths
        self.lateral = nn.ModuleList(
            nn.Identity() if (i == 2 and w[3] == fpn_width) else nn.Conv2d(w[i + 1], fpn_width, 1)
            for i in range(3))
        self.heads = nn.ModuleList(
            nn.ModuleList(GradualStyleBlock(fpn_width, fpn_width, image_size // s) for _ in range(k))
            for s, k in zip(STRIDES, styles, strict=True))
        self.dim = fpn_width
        self.map_channels = (fpn_width,) * 3
        self.metric_loss = metric_loss

    def _features(self, images: Tensor) -> list[Tensor]:
        c8, c16, c32 = self.trunk.stages(images)[1:]
        p32 = self.lateral[2](c32)
        p16 = _upsample_add(p32, self.lateral[1](c16))
        p8 = _upsample_add(p16, self.lateral[0](c8))
        maps = (p8, p16, p32)
        styles = [head(m) for m, heads in zip(maps, self.heads, strict=True) for head in heads]
        return [sum(styles) / len(styles), *maps]

    def embed(self, images: Tensor) -> Tensor:
        """Average style of each image ``[M, fpn_width]``."""
        return self._features(images)[0]

    def forward(self, refs: RefSet) -> Preference:
        """Mean style over the valid references, and their merged FPN maps (stride 8 first)."""
        mask = refs.valid_mask()
        emb, *maps = per_valid(self._features, refs.targets, mask)
        return Preference(vector=self.masked_mean(emb, mask), maps=tuple(maps), mask=mask)


def _upsample_add(x: Tensor, y: Tensor) -> Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


def build_psp(ctx: BuildContext, widths: tuple[int, ...] = PAPER_WIDTHS, fpn_width: int = 512,
              styles: tuple[int, int, int] = (1, 1, 1), metric_loss: str | None = "angular") -> PSPEncoder:
    """The pSp-style encoder sized for ``ctx.image_size``; ImageNet trunk weights when ``ctx.pretrained``."""
    enc = PSPEncoder(widths, fpn_width, tuple(styles), ctx.image_size, metric_loss)
    enc.pretrained_from = load_resnet18(enc.trunk, ctx)
    return enc


@hookimpl
def register_encoders(register):
    register(
        "psp", build=build_psp,
        description="pSp GradualStyleEncoder-style: ResNet-18 + FPN + map2style heads; vector and "
                    "stride 8/16/32 maps",
        paper="Richardson et al., Encoding in Style: a StyleGAN Encoder for Image-to-Image Translation, CVPR 2021",
        configurations={
            "small": {"widths": (8, 16, 32, 64), "fpn_width": 64, "styles": (1, 1, 1)},
            "paper": {"widths": PAPER_WIDTHS, "fpn_width": 512, "styles": (1, 1, 1)},
        },
        version="1", provides=["vector", "maps"], meta={"metric_loss": "angular", "pretrained_weights": "resnet18-f37072fd.pth"})
