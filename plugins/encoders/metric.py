"""Metric-learning style encoders: one CNN backbone, registered once per embedding loss.

``MetricEncoder``: backbone -> global average pooling -> linear -> L2-normalised embedding.
The preference vector is the L2-normalised mean embedding of a user's valid references
(PieNet's recipe); the references' stride-8 backbone feature maps are passed on as
``Preference.maps[0]`` for attention enhancers such as ``sa``.

Configurations:
  small: three conv stages (widths 16/32/64, strides 2/2/2), 128-d embedding; fast at 64 px.
  paper: torchvision ResNet-18 trunk (layer1..layer4), 512-d embedding, maps from layer2
    (128 channels at stride 8). ``--pretrained`` loads torchvision's ImageNet weights
    ``resnet18-f37072fd.pth`` from ``$TORCH_HOME/hub/checkpoints/`` (downloaded once when missing).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Encoder, Preference, RefSet
from piebench.weights import staged_weights

RESNET18_FILE = "resnet18-f37072fd.pth"

#: The embedding losses this encoder is registered under, with the loss's paper.
METRIC_LOSSES = {
    "triplet": "Schroff et al., CVPR 2015 (FaceNet triplet loss; margin 0.2 as in PieNet, Kim et al., ECCV 2020)",
    "center": "Wen et al., ECCV 2016 (center loss)",
    "angular": "Wang et al., ICCV 2017 (angular loss)",
    "circle": "Sun et al., CVPR 2020 (circle loss)",
    "npair": "Sohn, NeurIPS 2016 (N-pair loss)",
    "multisim": "Wang et al., CVPR 2019 (multi-similarity loss)",
    "normsoftmax": "Zhai & Wu, BMVC 2019 (normalized softmax; StarEnhancer's style encoder loss, Song et al., ICCV 2021)",
}

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SmallTrunk(nn.Module):
    """A few stride-2 conv stages; returns (stride-8 map, last map)."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        if len(widths) < 3:
            raise UsageError(f"metric encoder: 'widths' needs at least 3 stages, got {list(widths)}")
        stages, cin = [], 3
        for w in widths:
            stages.append(nn.Sequential(_conv_bn(cin, w, 2), _conv_bn(w, w, 1)))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.map_channels = int(widths[2])
        self.out_channels = int(widths[-1])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fmap = None
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == 2:
                fmap = x
        return fmap, x


class ResNet18Trunk(nn.Module):
    """torchvision ResNet-18 without its classifier; returns (layer2 map, layer4 map)."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.map_channels = 128
        self.out_channels = 512

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.layer1(self.stem(x))
        fmap = self.layer2(x)
        return fmap, self.layer4(self.layer3(fmap))

    def load_torchvision(self, path: str) -> None:
        """Load a torchvision ``resnet18`` state dict (its ``fc`` is ignored)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        renamed = {}
        for key, value in state.items():
            if key.startswith("fc."):
                continue
            head = key.split(".", 1)[0]
            if head in ("conv1", "bn1"):
                key = {"conv1": "stem.0", "bn1": "stem.1"}[head] + key[len(head):]
            renamed[key] = value
        self.load_state_dict(renamed, strict=True)


class MetricEncoder(Encoder):
    """CNN -> global pool -> linear -> L2-normalised embedding; preference = normalised mean.

    ``embed(images [M,3,H,W]) -> [M,D]``; ``forward(refs)`` gives ``vector [B,D]``,
    ``maps = (refs' stride-8 feature maps [B,N,C,h,w],)`` and ``mask [B,N]``. Only valid
    references are run through the backbone, so padding never touches BatchNorm statistics;
    the maps of padded references are zeros.
    """

    requires = frozenset({"targets"})
    provides = frozenset({"vector", "maps"})

    def __init__(self, metric_loss: str, backbone: str = "small", widths: Sequence[int] = (16, 32, 64),
                 dim: int = 128) -> None:
        super().__init__()
        if backbone == "small":
            self.trunk: nn.Module = SmallTrunk(widths)
        elif backbone == "resnet18":
            self.trunk = ResNet18Trunk()
        else:
            raise UsageError(f"metric encoder: unknown backbone '{backbone}'; choose 'small' or 'resnet18'")
        if int(dim) < 1:
            raise UsageError(f"metric encoder: 'dim' must be positive, got {dim}")
        self.metric_loss = metric_loss
        self.backbone = backbone
        self.dim = int(dim)
        self.map_channels = (self.trunk.map_channels,)
        self.head = nn.Linear(self.trunk.out_channels, self.dim)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(stride-8 feature maps ``[M,C,h,w]``, L2-normalised embeddings ``[M,D]``)."""
        fmap, last = self.trunk((images - self.mean) / self.std)
        emb = self.head(last.mean(dim=(2, 3)))
        return fmap, F.normalize(emb, dim=1)

    def embed(self, images: Tensor) -> Tensor:
        """Per-image L2-normalised embeddings ``[M, D]``."""
        return self.features(images)[1]

    def forward(self, refs: RefSet) -> Preference:
        """Preference vector (normalised masked mean embedding) plus reference maps and mask."""
        targets = refs.targets
        b, n = targets.shape[:2]
        mask = refs.valid_mask()
        flat_mask = mask.reshape(-1)
        images = targets.reshape(b * n, *targets.shape[2:])
        if bool(flat_mask.all()):
            fmap, emb = self.features(images)
        else:
            idx = flat_mask.nonzero().squeeze(1)
            fmap_v, emb_v = self.features(images.index_select(0, idx))
            emb = emb_v.new_zeros(b * n, emb_v.shape[1]).index_copy(0, idx, emb_v)
            fmap = fmap_v.new_zeros(b * n, *fmap_v.shape[1:]).index_copy(0, idx, fmap_v)
        emb = emb.view(b, n, -1)
        vector = F.normalize(self.masked_mean(emb, mask), dim=1)
        maps = fmap.view(b, n, *fmap.shape[1:])
        return Preference(vector=vector, maps=(maps,), mask=mask)


def build_metric_encoder(ctx: BuildContext, *, metric_loss: str, backbone: str = "small",
                         widths: Sequence[int] = (16, 32, 64), dim: int = 128) -> MetricEncoder:
    """Build a :class:`MetricEncoder`; with ``ctx.pretrained`` the ResNet-18 trunk loads staged weights."""
    enc = MetricEncoder(metric_loss, backbone=backbone, widths=widths, dim=dim)
    if ctx is not None and ctx.pretrained:
        if backbone != "resnet18":
            enc.pretrained_from = "random initialisation (the small backbone has no pretrained weights)"
            return enc
        path = str(staged_weights(RESNET18_FILE))  # fetched once when missing; UsageError naming the URL
        enc.trunk.load_torchvision(path)
        enc.pretrained_from = f"torchvision ImageNet ResNet-18 ({path})"
    return enc


def _builder(loss_name: str) -> functools.partial:
    """``build(ctx, *, metric_loss=loss_name, backbone=..., widths=..., dim=...)``: the metric encoder
    trained with ``loss_name`` (a partial, so its parameters and defaults show in a run's config.json)."""
    return functools.partial(build_metric_encoder, metric_loss=loss_name)


CONFIGURATIONS = {
    "small": {"backbone": "small", "widths": [16, 32, 64], "dim": 128},
    "paper": {"backbone": "resnet18", "dim": 512},
}


@hookimpl
def register_encoders(register):
    """Register one metric encoder per embedding loss (same backbone, different default loss)."""
    for name, paper in METRIC_LOSSES.items():
        register(name, build=_builder(name),
                 description=f"CNN -> pooled L2-normalised embedding trained with the {name} loss; "
                             "preference = normalised mean of the references' embeddings",
                 paper=paper, configurations=CONFIGURATIONS, version="1",
                 provides=["vector", "maps"], requires=["targets"], meta={"metric_loss": name})
