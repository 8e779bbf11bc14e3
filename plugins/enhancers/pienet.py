"""PieNet's enhancer (Kim et al., ECCV 2020): a ResNet-18 U-Net with personalised up-sample blocks.

PieNet has no official code; this follows the public re-implementation inside Masked Style
Modeling (Kosugi & Yamasaki), whose enhancer has 16.39 M parameters (``paper`` configuration,
preference vector D = 512):

* encoder: the torchvision ResNet-18 trunk (conv1/bn1/relu, maxpool + layer1, layer2, layer3,
  layer4 + global average pool), so ImageNet weights load by name;
* decoder: four *personalised up-sample blocks* (PUB). Each upsamples the decoder feature and
  applies conv3x3-BN-ReLU, maps the preference vector through a 1x1 conv + ReLU, upsamples it
  to the skip's size (a broadcast: the vector has no spatial extent), concatenates
  [decoder, skip, preference] and fuses them with a residual block (the last PUB only
  concatenates);
* head: bilinear x2 and a 3x3 conv to a 3-channel residual; output = input + residual.

The bottleneck is globally pooled (as in the re-implementation), so the deepest level carries
only image-global content. The input is padded (replicate) to a multiple of 32 and the output
cropped back, so any size works.

Parameters: paper (width 64, 512-d vector) 16,387,328; small (width 8, 128-d vector) 263,200.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from piebench_plugins.enhancers._common import pad_to_multiple
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Enhancer, Preference
from piebench.weights import staged_weights

#: torchvision's ImageNet ResNet-18 checkpoint, looked up (never downloaded) under $TORCH_HOME.
RESNET18_FILE = "resnet18-f37072fd.pth"


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, bn: bool = True) -> nn.Sequential:
    """Bias-free conv (3x3 or 1x1), optional BatchNorm, ReLU."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """Basic residual block (two conv3x3-BN) with a 1x1 conv-BN projection when widths differ."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
                     if cin != cout else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.proj(x))


class PersonalisedUpBlock(nn.Module):
    """PUB: upsample + conv, preference -> 1x1 conv -> upsampled, concat with skip, residual block."""

    def __init__(self, cin: int, cout: int, pref_dim: int, skip_ch: int, fuse: bool = True):
        super().__init__()
        self.conv = conv_bn_relu(cin, cout)
        self.pref = conv_bn_relu(pref_dim, cout, kernel=1, bn=False)
        self.fuse = ResBlock(2 * cout + skip_ch, cout) if fuse else None
        self.out_channels = cout if fuse else 2 * cout + skip_ch

    def forward(self, x: Tensor, skip: Tensor, vector: Tensor) -> Tensor:
        size = skip.shape[-2:]
        x = self.conv(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        p = self.pref(vector[:, :, None, None]).expand(-1, -1, *size)
        x = torch.cat([x, skip, p], dim=1)
        return self.fuse(x) if self.fuse is not None else x


class ResNet18Trunk(nn.Module):
    """ResNet-18 (torchvision layout: [2, 2, 2, 2] BasicBlocks) with base width ``width``.

    ``width=64`` is torchvision's resnet18 (same parameter names, so its weights load).
    """

    def __init__(self, width: int = 64):
        # torchvision loads torch._dynamo (about 2 s): imported when a model is built, not at every command's start
        from torchvision.models.resnet import BasicBlock

        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.widths = (w, w, 2 * w, 4 * w, 8 * w)
        cin = w
        for i, cout in enumerate(self.widths[1:], start=1):
            stride = 1 if i == 1 else 2
            down = None
            if stride != 1 or cin != cout:
                down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride, down), BasicBlock(cout, cout)))
            cin = cout

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features at strides 2, 4, 8, 16 and the globally pooled stride-32 feature [B, 8w, 1, 1]."""
        x0 = self.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(x0))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = F.adaptive_avg_pool2d(self.layer4(x3), 1)
        return [x0, x1, x2, x3, x4]


def load_imagenet_resnet18(trunk: ResNet18Trunk) -> str:
    """Load torchvision's ImageNet ResNet-18 weights (fetched once when missing) into ``trunk``; returns the file used."""
    path = str(staged_weights(RESNET18_FILE))  # fetched once when missing; UsageError naming the URL
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    trunk.load_state_dict(state, strict=True)
    return path


class PieNetEnhancer(Enhancer):
    """PieNet enhancer: ``forward(x, pref)`` = x + residual(x, pref.vector)."""

    consumes = frozenset({"vector"})

    def __init__(self, pref_dim: int, width: int = 64):
        super().__init__()
        self.pref_dim = pref_dim
        self.encoder = ResNet18Trunk(width)
        c0, c1, c2, c3, c4 = self.encoder.widths
        self.up1 = PersonalisedUpBlock(c4, c3, pref_dim, c3)
        self.up2 = PersonalisedUpBlock(c3, c2, pref_dim, c2)
        self.up3 = PersonalisedUpBlock(c2, c1, pref_dim, c1)
        self.up4 = PersonalisedUpBlock(c1, c0, pref_dim, c0, fuse=False)
        self.head = nn.Conv2d(self.up4.out_channels, 3, 3, padding=1, bias=False)

    def forward(self, x: Tensor, pref: Preference) -> Tensor:
        v = pref.vector
        if v.dim() != 2 or v.shape[1] != self.pref_dim:
            raise UsageError(f"pienet enhancer expects a preference vector [B, {self.pref_dim}], got "
                             f"{list(v.shape)}; build it with the encoder it is paired with")
        xp, h, w = pad_to_multiple(x, 32)
        x0, x1, x2, x3, x4 = self.encoder(xp)
        d = self.up1(x4, x3, v)
        d = self.up2(d, x2, v)
        d = self.up3(d, x1, v)
        d = self.up4(d, x0, v)
        d = F.interpolate(d, size=xp.shape[-2:], mode="bilinear", align_corners=False)
        return x + self.head(d)[..., :h, :w]


def build_pienet(ctx: BuildContext, width: int = 64, pref_dim: int = 512) -> PieNetEnhancer:
    """Build PieNet's enhancer; the paired encoder's ``dim`` overrides ``pref_dim`` (used without one)."""
    if ctx.encoder is not None:
        pref_dim = int(ctx.encoder.dim)
    if width < 1 or pref_dim < 1:
        raise UsageError(f"pienet enhancer needs width >= 1 and pref_dim >= 1, got {width} and {pref_dim}")
    model = PieNetEnhancer(pref_dim=pref_dim, width=width)
    if ctx.pretrained:
        if width != 64:
            raise UsageError(f"--pretrained needs the ImageNet ResNet-18 width 64, this configuration has "
                             f"width {width}; use the 'paper' configuration")
        model.pretrained_from = load_imagenet_resnet18(model.encoder)
    return model


@hookimpl
def register_enhancers(register):
    """Register ``pienet``."""
    register("pienet", build=build_pienet,
             description="PieNet enhancer: ResNet-18 U-Net with personalised up-sample blocks, x + residual",
             paper="Kim et al., PieNet: Personalized Image Enhancement Network, ECCV 2020",
             configurations={"small": {"width": 8, "pref_dim": 128}, "paper": {"width": 64, "pref_dim": 512}},
             version="1", consumes=["vector"], meta={"downsample": 32, "reference_params_m": 16.39})
