"""PieNet's embedding network (Kim et al., ECCV 2020): ResNet-18 -> 512-d L2-normalised vector.

Each reference photo is embedded by a ResNet-18 trunk (torchvision's architecture, ImageNet
weights with ``--pretrained``), global-average-pooled (the final block's ReLU is skipped, as in
the public PieNet re-implementation shipped with Masked Style Modeling) and L2-normalised. The
user's preference vector is the mean embedding of the valid references, L2-normalised again.
The embedding is trained with a triplet loss (margin 0.2 in the paper).

Besides the vector the encoder provides ``maps``: the references' ``layer2`` feature maps
(stride 8; 128 channels in the paper widths), so PieNet's embedding can also drive the
attention enhancers (``sa``); enhancers that consume only the vector ignore them.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from piebench import hookimpl
from piebench.interfaces import BuildContext, Encoder, Preference, RefSet

from ._resnet import PAPER_WIDTHS, ResNetTrunk, load_resnet18, per_valid


class PieNetEncoder(Encoder):
    """ResNet-18 embedding, preference = normalised mean embedding; maps = layer2 of each reference."""

    provides = frozenset({"vector", "maps"})
    metric_loss = "triplet"  # the registered triplet loss uses PieNet's margin 0.2

    def __init__(self, widths: tuple[int, ...] = PAPER_WIDTHS) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(tuple(widths))
        self.dim = self.trunk.out_channels
        self.map_channels = (self.trunk.widths[1],)

    def _features(self, images: Tensor) -> list[Tensor]:
        stages = self.trunk.stages(images, last_pre_relu=True)
        return [F.normalize(stages[-1].mean((2, 3)), dim=1), stages[1]]

    def embed(self, images: Tensor) -> Tensor:
        """L2-normalised embeddings ``[M, dim]``."""
        return self._features(images)[0]

    def forward(self, refs: RefSet) -> Preference:
        """Normalised mean embedding of the valid references, plus their layer2 maps."""
        mask = refs.valid_mask()
        emb, maps = per_valid(self._features, refs.targets, mask)
        vector = F.normalize(self.masked_mean(emb, mask), dim=1)
        return Preference(vector=vector, maps=(maps,), mask=mask)


def build_pienet(ctx: BuildContext, widths: tuple[int, ...] = PAPER_WIDTHS) -> PieNetEncoder:
    """PieNet's embedding network; ImageNet ResNet-18 weights when ``ctx.pretrained``."""
    enc = PieNetEncoder(widths)
    enc.pretrained_from = load_resnet18(enc.trunk, ctx)
    return enc


@hookimpl
def register_encoders(register):
    register(
        "pienet", build=build_pienet,
        description="PieNet embedding: ResNet-18 -> 512-d L2-normalised, mean over references (triplet, margin 0.2)",
        paper="Kim et al., PieNet: Personalized Image Enhancement Network, ECCV 2020",
        configurations={"small": {"widths": (16, 32, 64, 128)}, "paper": {"widths": PAPER_WIDTHS}},
        version="1", provides=["vector", "maps"],
        meta={"metric_loss": "triplet", "pretrained_weights": "resnet18-f37072fd.pth"})
