"""``sa-adain``: style attention at the bottleneck and AdaIN modulation in the decoder.

The ``adain`` U-Net (:class:`~piebench_plugins.enhancers.adain.AdaINUNet`: AdaIN of the
bottleneck and of every decoder block, (sigma, mu) from the preference vector through the
mapping network) with ``blocks`` weight-tied :class:`~piebench_plugins.enhancers.sa.StyleAttention`
blocks on the bottleneck feature before its AdaIN. The attention reads ``Preference.maps[0]``
(resized to the bottleneck's size) with its mask, so the model takes any N and is invariant to
the order of the references. The original research found this variant closest to its baseline.
Consumes ``{"vector", "maps"}``; output = input + residual.

Parameters: small 299,444 (128-d vector, 64-channel maps); paper (two SA blocks of 8 channel
groups, mapping 4x512) 14,012,435 (512-d vector, 128-channel maps).
"""

from __future__ import annotations

from collections.abc import Sequence

from piebench_plugins.enhancers.adain import AdaINUNet, resolve_pref_dim
from piebench_plugins.enhancers.sa import StyleAttention, require_maps
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Preference


class SAAdaINUNet(AdaINUNet):
    """AdaIN U-Net whose bottleneck first attends to the references (weight-tied SA blocks)."""

    consumes = frozenset({"vector", "maps"})

    def __init__(self, pref_dim: int, ref_channels: int, widths: Sequence[int] = (16, 24, 48, 64),
                 mlp_hidden: int = 64, mlp_layers: int = 2, blocks: int = 1, groups: int = 1,
                 ffn_expansion: int = 2) -> None:
        super().__init__(pref_dim, tuple(int(c) for c in widths), mlp_hidden, mlp_layers)
        self.attn = nn.ModuleList([StyleAttention(self.widths[-1], ref_channels, groups, ffn_expansion)
                                   for _ in range(blocks)])

    def bottleneck(self, z: Tensor, pref: Preference) -> Tensor:
        """Style attention of the bottleneck feature to ``pref.maps[0]``."""
        if pref.maps is None:
            raise UsageError("enhancer 'sa-adain' needs Preference.maps (pair it with an encoder that provides maps)")
        for block in self.attn:
            z = block(z, pref.maps[0], pref.mask)
        return z


def build_sa_adain(ctx: BuildContext, *, widths: Sequence[int] = (16, 24, 48, 64), mlp_hidden: int = 64,
                   mlp_layers: int = 2, blocks: int = 1, groups: int = 1, ffn_expansion: int = 2,
                   pref_dim: int = 128) -> SAAdaINUNet:
    """Build :class:`SAAdaINUNet` for ``ctx.encoder`` (``dim``, ``map_channels[0]``)."""
    enc = require_maps(ctx, "sa-adain")
    return SAAdaINUNet(resolve_pref_dim(ctx, pref_dim), int(enc.map_channels[0]), widths, mlp_hidden,
                       mlp_layers, blocks, groups, ffn_expansion)


@hookimpl
def register_enhancers(register):
    """Register ``sa-adain``."""
    register("sa-adain", build=build_sa_adain,
             description="AdaIN U-Net (decoder modulated by the preference vector) with weight-tied style "
                         "attention to the reference maps at the bottleneck",
             paper="the original research's SA block (docs/models.md) + AdaIN (Huang & Belongie, ICCV 2017)",
             configurations={
                 "small": {"widths": [16, 24, 48, 64], "mlp_hidden": 64, "mlp_layers": 2, "blocks": 1,
                           "groups": 1, "ffn_expansion": 2},
                 "paper": {"widths": [64, 128, 256, 512], "mlp_hidden": 512, "mlp_layers": 4, "blocks": 2,
                           "groups": 8, "ffn_expansion": 2},
             },
             version="2", consumes=["vector", "maps"], meta={"downsample": 8})
