"""VGG-16 feature losses: ``perceptual`` (feature distance) and ``gram-vgg`` (Gram-matrix distance).

Both run the convolutional part of torchvision's VGG-16 up to the deepest requested layer on
ImageNet-normalised images, with the ImageNet weights of torchvision's ``vgg16-397923af.pth``
(``$TORCH_HOME/hub/checkpoints``, downloaded once when missing, see :mod:`piebench.weights`).
Building without that file is an error, never a loss over random features. Default layers ``relu1_2, relu2_2, relu3_3`` (Johnson et
al.'s perceptual-loss layers).

* ``perceptual``: mean over layers of the mean absolute (``l1``, default) or squared (``l2``)
  difference of the feature maps of output and target.
* ``gram-vgg``: mean over layers of the mean squared (``l2``, default) or absolute difference of
  the Gram matrices ``F F^T / (C h w)`` of output and *target* features (Gatys et al.).

The VGG is a frozen constant: it is kept out of ``parameters()`` and the loss's state_dict (no
optimiser group, no checkpoint bloat) and follows ``.to()`` / ``.cuda()`` with the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Loss
from piebench.weights import VGG16, load_torchvision_backbone

#: torchvision ``vgg16().features`` index of each ReLU output.
VGG16_RELU = {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13,
              "relu3_3": 15, "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "relu5_1": 25, "relu5_2": 27,
              "relu5_3": 29}
DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGFeatures(nn.Module):
    """Frozen VGG-16 convolutional layers returning the requested ReLU outputs of [0, 1] images."""

    def __init__(self, layers: tuple[str, ...] = DEFAULT_LAYERS) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in VGG16_RELU]
        if unknown or not layers:
            raise UsageError(f"unknown VGG-16 layer(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose from: {', '.join(VGG16_RELU)}")
        # torchvision loads torch._dynamo (about 2 s): imported when a model is built, not at every command's start
        from torchvision.models.vgg import cfgs, make_layers

        self.indices = tuple(VGG16_RELU[name] for name in layers)
        self.features = make_layers(cfgs["D"])[: max(self.indices) + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.pretrained_from = load_torchvision_backbone(self.features, VGG16, prefix="features.")
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor) -> list[Tensor]:
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.indices:
                out.append(x)
        return out


class _VGGLoss(Loss):
    """Base: holds the frozen VGG outside the module tree and moves it along with the loss."""

    kind = "image"

    def __init__(self, vgg: VGGFeatures, criterion: str) -> None:
        super().__init__()
        if criterion not in ("l1", "l2"):
            raise UsageError(f"criterion must be 'l1' or 'l2', got '{criterion}'")
        object.__setattr__(self, "vgg", vgg)  # not a submodule: no parameters, no state_dict
        self.criterion = criterion
        self.pretrained_from = vgg.pretrained_from

    def _apply(self, fn, recurse=True):  # .to(), .cuda(), .half() move the VGG too
        self.vgg._apply(fn)
        return super()._apply(fn, recurse)

    def _distance(self, a: Tensor, b: Tensor) -> Tensor:
        return F.l1_loss(a, b) if self.criterion == "l1" else F.mse_loss(a, b)

    def _features(self, output: Tensor, target: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        ref = self.vgg.mean
        if ref.device != output.device or ref.dtype != output.dtype:
            self.vgg.to(device=output.device, dtype=output.dtype)
        with torch.no_grad():
            tgt = self.vgg(target)
        return self.vgg(output), tgt


class PerceptualLoss(_VGGLoss):
    """Mean over layers of the L1 (or L2) distance between VGG-16 features of output and target."""

    def forward(self, output: Tensor, target: Tensor, batch=None) -> Tensor:
        out, tgt = self._features(output, target)
        return torch.stack([self._distance(o, t) for o, t in zip(out, tgt, strict=True)]).mean()


def gram(features: Tensor) -> Tensor:
    """Gram matrices ``[B, C, C]`` of ``features [B, C, h, w]``, divided by ``C h w``."""
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


class GramVGGLoss(_VGGLoss):
    """Mean over layers of the L2 (or L1) distance between Gram matrices of output and target features."""

    def forward(self, output: Tensor, target: Tensor, batch=None) -> Tensor:
        out, tgt = self._features(output, target)
        return torch.stack([self._distance(gram(o), gram(t)) for o, t in zip(out, tgt, strict=True)]).mean()


def build_perceptual(ctx: BuildContext, layers: tuple[str, ...] = DEFAULT_LAYERS,
                     criterion: str = "l1") -> PerceptualLoss:
    """Perceptual loss on ImageNet VGG-16 features (UsageError when the file cannot be had)."""
    return PerceptualLoss(VGGFeatures(tuple(layers)), criterion)


def build_gram_vgg(ctx: BuildContext, layers: tuple[str, ...] = DEFAULT_LAYERS,
                   criterion: str = "l2") -> GramVGGLoss:
    """Gram (style) loss on ImageNet VGG-16 features (UsageError when the file cannot be had)."""
    return GramVGGLoss(VGGFeatures(tuple(layers)), criterion)


@hookimpl
def register_losses(register):
    register("perceptual", build=build_perceptual,
             description="VGG-16 feature L1 at relu1_2/relu2_2/relu3_3 (torchvision vgg16-397923af.pth, fetched once)",
             paper="Johnson et al., Perceptual Losses for Real-Time Style Transfer and Super-Resolution, ECCV 2016",
             configurations={"default": {"layers": DEFAULT_LAYERS, "criterion": "l1"}},
             version="1", kind="image", meta={"pretrained_weights": VGG16})
    register("gram-vgg", build=build_gram_vgg,
             description="Gram matrices of VGG-16 features, output vs target, MSE (torchvision vgg16-397923af.pth, fetched once)",
             paper="Gatys et al., Image Style Transfer Using Convolutional Neural Networks, CVPR 2016",
             configurations={"default": {"layers": DEFAULT_LAYERS, "criterion": "l2"}},
             version="1", kind="image", meta={"pretrained_weights": VGG16})
