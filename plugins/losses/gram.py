"""``gram``: the original research's Gram (style) loss between the output and each reference.

For every sample, the Gram matrix of the output's features is compared with the Gram matrix
of each of that user's (valid) references: the squared Frobenius distance, averaged over
the references and the batch. No downloaded weights: the feature basis is fixed and
deterministic, the 3 raw RGB channels (colour second moments) concatenated with 16 ReLU
responses of a fixed random 3x3 conv (seeded, He-normal, a buffer: not trained, not
checkpointed). Gram = F F^T / (h w), so references of another size are comparable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import Batch, BuildContext, Loss


class GramLoss(Loss):
    """Mean over references of ||Gram(output features) - Gram(reference features)||_F^2."""

    kind = "image"
    default_weight = 0.01

    def __init__(self, random_channels: int = 16, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        weight = torch.randn(int(random_channels), 3, 3, 3, generator=gen) * (2.0 / 27) ** 0.5
        self.register_buffer("weight", weight, persistent=False)

    def features(self, x: Tensor) -> Tensor:
        """``[M, 3 + random_channels, H, W]``: RGB and fixed random-conv ReLU responses."""
        return torch.cat([x, F.relu(F.conv2d(x, self.weight.to(x.dtype), padding=1))], dim=1)

    def gram(self, x: Tensor) -> Tensor:
        """Gram matrices ``[M, C, C]`` of images ``[M, 3, H, W]``, normalised by H W."""
        f = self.features(x).flatten(2)
        return f @ f.transpose(1, 2) / f.shape[-1]

    def forward(self, output: Tensor, target: Tensor, batch: Batch | None = None) -> Tensor:
        if batch is None or batch.refs is None:
            raise UsageError("loss 'gram' compares the output with the batch's references; pass the batch")
        refs = batch.refs.targets
        b, n = refs.shape[:2]
        g_out = self.gram(output).unsqueeze(1)  # [B, 1, C, C]
        g_ref = self.gram(refs.reshape(b * n, *refs.shape[2:])).view(b, n, *g_out.shape[2:])
        per_ref = (g_out - g_ref).pow(2).sum(dim=(2, 3))  # [B, N]
        mask = batch.refs.valid_mask().to(per_ref.dtype)
        per_sample = (per_ref * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return per_sample.mean()


def build_gram(ctx: BuildContext | None = None, **params) -> GramLoss:
    """Build :class:`GramLoss` (``random_channels``, ``seed``)."""
    return GramLoss(**params)


@hookimpl
def register_losses(register):
    """Register the Gram loss."""
    register("gram", build=build_gram,
             description="Gram-matrix loss between the output and each reference (RGB + fixed random conv "
                         "features; no pretrained weights)",
             paper="Gatys et al., CVPR 2016 (Gram matrices); lambda 0.01 from the original research",
             kind="image", meta={"default_weight": 0.01})
