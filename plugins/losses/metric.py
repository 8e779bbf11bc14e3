"""Embedding losses from pytorch-metric-learning, with the settings the PIE papers used.

``triplet`` (margin 0.2 as PieNet; the library's default is 0.05), ``angular`` (alpha 40),
``circle`` (m 0.4, gamma 80), ``npair``, ``multisim`` (alpha 2, beta 50, base 0.5, with a
MultiSimilarityMiner, epsilon 0.1) and ``normsoftmax`` (temperature 0.05 = StarEnhancer's
scale 20; its class proxies ``[num_users, D]`` are parameters trained at ``lr`` 0.01,
StarEnhancer's proxy LR of 100 x its encoder LR 1e-4). Kind "embedding":
``forward(embeddings [M, D], labels [M]) -> scalar``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Loss


def _pml() -> Any:
    """pytorch-metric-learning, imported when a metric loss is built: it loads scipy.stats (0.7 s),
    which every command would otherwise pay at start-up."""
    import pytorch_metric_learning.losses
    import pytorch_metric_learning.miners

    return pytorch_metric_learning


class MetricLoss(Loss):
    """A pytorch-metric-learning loss (and optional miner) as a piebench embedding loss."""

    kind = "embedding"

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None, lr: float | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner
        self.lr = lr

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        indices = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, indices_tuple=indices)


def build_triplet(ctx: BuildContext | None = None, margin: float = 0.2, **kw: Any) -> MetricLoss:
    """TripletMarginLoss over all triplets in the batch (PieNet's margin 0.2)."""
    return MetricLoss(_pml().losses.TripletMarginLoss(margin=margin, **kw))


def build_angular(ctx: BuildContext | None = None, alpha: float = 40, **kw: Any) -> MetricLoss:
    """AngularLoss (alpha in degrees)."""
    return MetricLoss(_pml().losses.AngularLoss(alpha=alpha, **kw))


def build_circle(ctx: BuildContext | None = None, m: float = 0.4, gamma: float = 80, **kw: Any) -> MetricLoss:
    """CircleLoss (cosine similarity)."""
    return MetricLoss(_pml().losses.CircleLoss(m=m, gamma=gamma, **kw))


def build_npair(ctx: BuildContext | None = None, **kw: Any) -> MetricLoss:
    """NPairsLoss."""
    return MetricLoss(_pml().losses.NPairsLoss(**kw))


def build_multisim(ctx: BuildContext | None = None, alpha: float = 2, beta: float = 50, base: float = 0.5,
                   epsilon: float = 0.1, **kw: Any) -> MetricLoss:
    """MultiSimilarityLoss with its MultiSimilarityMiner."""
    return MetricLoss(_pml().losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base, **kw),
                      _pml().miners.MultiSimilarityMiner(epsilon=epsilon))


def build_normsoftmax(ctx: BuildContext | None = None, temperature: float = 0.05, lr: float = 0.01,
                      **kw: Any) -> MetricLoss:
    """NormalizedSoftmaxLoss with ``ctx.num_users`` proxies of size ``ctx.encoder.dim``."""
    if ctx is None or ctx.encoder is None or not getattr(ctx.encoder, "dim", 0):
        raise UsageError("loss 'normsoftmax' needs the encoder's embedding size: build it with "
                         "BuildContext(encoder=..., num_users=...)")
    if ctx.num_users < 2:
        raise UsageError(f"loss 'normsoftmax' needs at least 2 training users, got {ctx.num_users}")
    if hasattr(ctx.encoder, "proxy_logits"):
        return EncoderProxyLoss(ctx.encoder)
    loss = _pml().losses.NormalizedSoftmaxLoss(num_classes=ctx.num_users, embedding_size=int(ctx.encoder.dim),
                                        temperature=temperature, **kw)
    return MetricLoss(loss, lr=lr)


class EncoderProxyLoss(Loss):
    """Normalised softmax over proxies the *encoder* owns (StarEnhancer's ``Stylish`` holds them):
    ``cross_entropy(encoder.proxy_logits(embeddings), labels)``. The proxies train with the
    encoder's parameter group; the encoder is held by plain reference, not as a submodule."""

    kind = "embedding"

    def __init__(self, encoder: Any) -> None:
        super().__init__()
        self._encoder = [encoder]

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(self._encoder[0].proxy_logits(embeddings), labels)


_LOSSES = {
    "triplet": (build_triplet, "triplet margin loss, margin 0.2 (PieNet), all triplets in the batch",
                "Schroff et al., CVPR 2015; margin from Kim et al., ECCV 2020 (PieNet)"),
    "angular": (build_angular, "angular loss, alpha 40 degrees", "Wang et al., ICCV 2017"),
    "circle": (build_circle, "circle loss, m 0.4, gamma 80", "Sun et al., CVPR 2020"),
    "npair": (build_npair, "N-pair loss", "Sohn, NeurIPS 2016"),
    "multisim": (build_multisim, "multi-similarity loss 2/50/0.5 with its miner (epsilon 0.1)",
                 "Wang et al., CVPR 2019"),
    "normsoftmax": (build_normsoftmax,
                    "normalized-softmax proxy classifier over the training users, temperature 0.05 (scale 20)",
                    "Zhai & Wu, BMVC 2019; StarEnhancer (Song et al., ICCV 2021)"),
}


@hookimpl
def register_losses(register):
    """Register the pytorch-metric-learning embedding losses."""
    for name, (build, description, paper) in _LOSSES.items():
        register(name, build=build, description=description, paper=paper, kind="embedding")
