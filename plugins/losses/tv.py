"""Total-variation losses on the output: ``tv`` and PieNet's edge-weighted ``edge-tv``.

``tv``: mean absolute horizontal plus vertical difference of the output (anisotropic L1 TV).
``edge-tv``: the same differences weighted by ``exp(-|grad I|)`` of the *input* image (the
gradient magnitude averaged over channels), so smoothing is not asked for across the
input's edges (PieNet, Kim et al., ECCV 2020).
"""

from __future__ import annotations

from torch import Tensor

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import Batch, BuildContext, Loss


def _grads(x: Tensor) -> tuple[Tensor, Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


class TVLoss(Loss):
    """Anisotropic total variation: mean |dx| + mean |dy| of the output."""

    kind = "image"
    default_weight = 0.01

    def forward(self, output: Tensor, target: Tensor | None = None, batch: Batch | None = None) -> Tensor:
        dx, dy = _grads(output)
        return dx.abs().mean() + dy.abs().mean()


class EdgeTVLoss(Loss):
    """Total variation of the output weighted by ``exp(-|grad input|)`` (PieNet)."""

    kind = "image"
    default_weight = 0.01

    def forward(self, output: Tensor, target: Tensor | None = None, batch: Batch | None = None) -> Tensor:
        if batch is None:
            raise UsageError("loss 'edge-tv' weights by the input image's gradients; pass the batch")
        ix, iy = _grads(batch.input)
        wx = ix.abs().mean(dim=1, keepdim=True).neg().exp()
        wy = iy.abs().mean(dim=1, keepdim=True).neg().exp()
        dx, dy = _grads(output)
        return (wx * dx.abs()).mean() + (wy * dy.abs()).mean()


def build_tv(ctx: BuildContext | None = None) -> TVLoss:
    """Build :class:`TVLoss`."""
    return TVLoss()


def build_edge_tv(ctx: BuildContext | None = None) -> EdgeTVLoss:
    """Build :class:`EdgeTVLoss`."""
    return EdgeTVLoss()


@hookimpl
def register_losses(register):
    """Register the two total-variation losses."""
    register("tv", build=build_tv, description="total variation of the output (anisotropic L1)",
             paper="Rudin et al., Physica D 1992; lambda 0.01 from the original research",
             kind="image", meta={"default_weight": 0.01})
    register("edge-tv", build=build_edge_tv,
             description="total variation of the output weighted by exp(-|grad input|) (PieNet)",
             paper="Kim et al., ECCV 2020 (PieNet)", kind="image", meta={"default_weight": 0.01})
