"""Shared parts of the ResNet-based encoders (pienet, msm, psp): a ResNet-18 trunk and masking.

:class:`ResNetTrunk` has torchvision's ResNet-18 layout and module names (``conv1``, ``bn1``,
``layer1`` .. ``layer4``; no classifier), so with the paper widths ``(64, 128, 256, 512)`` it
loads torchvision's ``resnet18-f37072fd.pth`` key for key; the ``small`` configurations use the
same layout with narrower widths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from piebench.errors import UsageError
from piebench.interfaces import BuildContext
from piebench.weights import RESNET18, load_torchvision_backbone

if TYPE_CHECKING:
    from torchvision.models.resnet import BasicBlock

#: ResNet-18's stage widths (torchvision).
PAPER_WIDTHS = (64, 128, 256, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetTrunk(nn.Module):
    """ResNet-18 without its classifier; images in [0, 1] are ImageNet-normalised inside.

    widths: channels of the stem and of the four stages (torchvision: 64, 128, 256, 512).
    depth: number of stages to build (4 = whole trunk); stage i has stride ``2 ** (i + 1)``.
    """

    def __init__(self, widths: tuple[int, ...] = PAPER_WIDTHS, depth: int = 4) -> None:
        # torchvision loads torch._dynamo (about 2 s): imported when a model is built, not at every command's start
        from torchvision.models.resnet import BasicBlock

        super().__init__()
        if len(widths) != 4 or min(widths) < 1:
            raise UsageError(f"ResNet widths must be four positive channel counts, got {widths}")
        if not 1 <= depth <= 4:
            raise UsageError(f"ResNet depth must be 1..4 stages, got {depth}")
        self.widths = tuple(int(w) for w in widths)
        self.depth = depth
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, self.widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = self.widths[0]
        for i in range(depth):
            cout, stride = self.widths[i], 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != cout:
                down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, cout, stride, down),
                                                         BasicBlock(cout, cout)))
            cin = cout
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def out_channels(self) -> int:
        return self.widths[self.depth - 1]

    def stages(self, x: Tensor, last_pre_relu: bool = False) -> list[Tensor]:
        """Outputs of every built stage (strides 4, 8, 16, 32) for images ``x`` in [0, 1].

        last_pre_relu: the last stage's final block skips its closing ReLU (the PieNet and
        Masked Style Modeling embeddings pool that signed feature).
        """
        x = (x - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = []
        for i in range(self.depth):
            layer = getattr(self, f"layer{i + 1}")
            if last_pre_relu and i == self.depth - 1:
                x = layer[0](x)
                x = _block_pre_relu(layer[1], x)
            else:
                x = layer(x)
            out.append(x)
        return out

    def pooled(self, x: Tensor, last_pre_relu: bool = True) -> Tensor:
        """Global average of the last stage ``[M, out_channels]``."""
        return self.stages(x, last_pre_relu)[-1].mean((2, 3))


def _block_pre_relu(block: BasicBlock, x: Tensor) -> Tensor:
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    return block.bn2(block.conv2(out)) + identity


def load_resnet18(trunk: ResNetTrunk, ctx: BuildContext) -> str:
    """ImageNet weights into ``trunk`` when ``ctx.pretrained``; the ``pretrained_from`` note."""
    if not ctx.pretrained:
        return "random initialisation"
    if trunk.widths != PAPER_WIDTHS:
        raise UsageError(
            f"--pretrained needs the paper widths {PAPER_WIDTHS} (torchvision's ResNet-18), this "
            f"configuration has {trunk.widths}; use the 'paper' configuration or drop --pretrained")
    return load_torchvision_backbone(trunk, RESNET18)


def per_valid(fn: Callable[[Tensor], Tensor | list[Tensor]], images: Tensor, mask: Tensor):
    """``fn`` applied to the valid images of ``images [B, N, 3, H, W]`` only, results ``[B, N, ...]``.

    Padded references (``mask`` False) never reach ``fn`` (so they cannot leak in through batch
    norm statistics either); their rows are zeros. ``fn`` returns a tensor or a list of tensors.
    """
    b, n = images.shape[:2]
    flat = mask.reshape(-1).to(device=images.device, dtype=torch.bool)
    every = images.reshape(b * n, *images.shape[2:])
    if bool(flat.any()):
        index = flat.nonzero().squeeze(1)
        out = fn(every.index_select(0, index))
    else:  # nothing valid: run one image for the shapes, keep only zeros
        index = None
        out = fn(every[:1])
    single = isinstance(out, Tensor)
    outs = [out] if single else list(out)
    full = []
    for o in outs:
        z = o.new_zeros(b * n, *o.shape[1:])
        if index is not None:
            z = z.index_copy(0, index, o)
        full.append(z.view(b, n, *o.shape[1:]))
    return full[0] if single else full


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
