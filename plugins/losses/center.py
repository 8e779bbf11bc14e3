"""``center``: the center loss (Wen et al., ECCV 2016), which pytorch-metric-learning lacks.

Each training user has a learned centre in embedding space (``centres [num_users, D]``, a
parameter, so it is in ``state_dict`` and checkpointed); the loss is the mean over the batch
of half the squared distance between an embedding and its user's centre. The centres train
with their own learning rate ``lr`` = 0.0005 and the loss's default weight is 0.01
(docs/losses.md). Used alone it only pulls embeddings together (it has no term pushing users
apart); Wen et al. pair it with a softmax loss, e.g. ``--loss normsoftmax --loss center``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Loss


class CenterLoss(Loss):
    """``0.5 * mean_i ||x_i - c_{y_i}||^2`` with learned centres ``c`` (one per user)."""

    kind = "embedding"
    default_weight = 0.01

    def __init__(self, num_classes: int, dim: int, lr: float = 0.0005, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        init = torch.randn(int(num_classes), int(dim), generator=gen)
        self.centres = nn.Parameter(init / init.norm(dim=1, keepdim=True))
        self.lr = lr

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        labels = labels.long()
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.centres.shape[0]):
            raise UsageError(f"loss 'center': labels must be training user ids 0..{self.centres.shape[0] - 1}, "
                             f"got {int(labels.min())}..{int(labels.max())}")
        diff = embeddings - self.centres.index_select(0, labels)
        return 0.5 * diff.pow(2).sum(dim=1).mean()


def build_center(ctx: BuildContext | None = None, lr: float = 0.0005, seed: int = 0) -> CenterLoss:
    """Centres for ``ctx.num_users`` users in the encoder's ``ctx.encoder.dim``-d space."""
    if ctx is None or ctx.encoder is None or not getattr(ctx.encoder, "dim", 0):
        raise UsageError("loss 'center' needs the encoder's embedding size: build it with "
                         "BuildContext(encoder=..., num_users=...)")
    return CenterLoss(ctx.num_users, int(ctx.encoder.dim), lr=lr, seed=seed)


@hookimpl
def register_losses(register):
    """Register the center loss."""
    register("center", build=build_center,
             description="squared distance to a learned per-user centre (centre lr 0.0005, weight 0.01)",
             paper="Wen et al., ECCV 2016", kind="embedding", meta={"default_weight": 0.01})
