"""A training-free encoder: Gram-matrix statistics of colour and edge channels at several scales.

Per image and scale (average-pooled by 1, 2, 4, ...), the feature channels are a constant 1,
opponent colours (luminance ``2 (R+G+B)/3 - 1``, red-green ``R - G``, yellow-blue
``(R+G)/2 - B``) and the horizontal and vertical Sobel responses of the luminance. Their Gram
matrix ``F F^T / (h w)`` (thanks to the constant channel it holds the channel means as well as
the second moments) is flattened (upper triangle, the constant 1 x 1 entry left out),
signed-square-rooted and L2-normalised. A user's preference is the normalised mean over the
valid references. No parameters; differentiable with respect to the images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Encoder, Preference, RefSet

from ._resnet import per_valid

_CHANNELS = 6  # 1, L, R-G, Y-B, d/dx L, d/dy L


class GramEncoder(Encoder):
    """Gram statistics of opponent-colour and Sobel channels, averaged over the references."""

    provides = frozenset({"vector"})
    metric_loss = None
    trainable = False

    def __init__(self, scales: tuple[int, ...] = (1, 2, 4)) -> None:
        super().__init__()
        if not scales or min(scales) < 1:
            raise UsageError(f"gram scales must be positive pooling factors, got {scales}")
        self.scales = tuple(int(s) for s in scales)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
        self.register_buffer("sobel", torch.stack([sobel, sobel.t()])[:, None], persistent=False)
        iu = torch.triu_indices(_CHANNELS, _CHANNELS)
        keep = ~((iu[0] == 0) & (iu[1] == 0))
        self.register_buffer("iu", iu[:, keep], persistent=False)
        self.dim = len(self.scales) * int(keep.sum())
        self.pretrained_from = "training-free (no weights)"

    def _channels(self, x: Tensor) -> Tensor:
        r, g, b = x.unbind(1)
        lum = (r + g + b) / 3
        grads = F.conv2d(F.pad(lum[:, None], (1, 1, 1, 1), mode="replicate"), self.sobel.to(x.dtype))
        return torch.cat([torch.ones_like(lum)[:, None], torch.stack([2 * lum - 1, r - g, (r + g) / 2 - b], 1),
                          grads], 1)

    def embed(self, images: Tensor) -> Tensor:
        """L2-normalised Gram features ``[M, dim]`` of images in [0, 1]."""
        feats = []
        for s in self.scales:
            x = F.avg_pool2d(images, s) if s > 1 else images
            if min(x.shape[-2:]) < 1:
                raise UsageError(f"image of {tuple(images.shape[-2:])} is too small for gram scale {s}")
            c = self._channels(x).flatten(2)
            gram = c @ c.transpose(1, 2) / c.shape[-1]
            feats.append(gram[:, self.iu[0], self.iu[1]])
        f = torch.cat(feats, 1)
        f = f.sign() * (f.abs() + 1e-8).sqrt()
        return F.normalize(f, dim=1)

    def forward(self, refs: RefSet) -> Preference:
        """Normalised mean Gram feature of the valid references."""
        mask = refs.valid_mask()
        emb = per_valid(self.embed, refs.targets, mask)
        return Preference(vector=F.normalize(self.masked_mean(emb, mask), dim=1))


def build_gram(ctx: BuildContext, scales: tuple[int, ...] = (1, 2, 4)) -> GramEncoder:
    """The training-free Gram encoder (``ctx.pretrained`` has nothing to load)."""
    return GramEncoder(tuple(scales))


@hookimpl
def register_encoders(register):
    register(
        "gram", build=build_gram,
        description="training-free: Gram statistics of opponent-colour and Sobel channels at several scales",
        paper="Gatys et al., Image Style Transfer Using Convolutional Neural Networks, CVPR 2016 (Gram statistics)",
        configurations={"small": {"scales": (1, 2, 4)}, "paper": {"scales": (1, 2, 4, 8)}},
        version="1", meta={"metric_loss": None, "trainable": False})
