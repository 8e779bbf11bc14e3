"""StarEnhancer's mapping network and curve enhancer (Song et al., ICCV 2021; IDKiro/StarEnhancer).

``Mapping``: MLP of 4 linear layers (PReLU) and one head per modulated block (linear, PReLU,
linear to 2 x width, sigmoid) giving ``(sigma, mu)`` for each block of the curve encoder's last
stage. ``SlimEnhancer``: the image average-pooled to 224 x 224 -> a Fixup ResNet-18 whose last
two blocks are dual-AdaIN modulated, ``F' = sigma_b (F - mu_a) / sigma_a + mu_b`` (a = mapping of
the input's style code ``Preference.source``, b = mapping of the target code
``Preference.vector``) -> 9 RGB->RGB curves of 64 knots, bicubically interpolated to 256
entries -> applied per pixel at full resolution: ``out_i = x_i + sum_j curve_ij(x_j)``.

Fidelity: ``StarEnhancer.mapping`` and ``StarEnhancer.enhancer`` have the official key names
and shapes (mapping 2,626,566 and SlimEnhancer 11,462,459 parameters in ``paper``), and
:func:`load_official` reads the released ``mapping.pth.tar`` / ``enhancer.pth.tar``. The one
deliberate difference: inputs are clamped to [0, 1] before the curve lookup (the official
lookup indexes out of range otherwise); in-range inputs give the official result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from piebench_plugins.encoders.star import FixupResNet
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Enhancer, Preference
from piebench.pretrained import load_into, read_state_dict

#: Entries of each interpolated curve (8-bit lookup).
CURVE_DEPTH = 256


class Mapping(nn.Module):
    """Style code ``[B, in_dim]`` -> per block ``[sigma, mu]``, each ``[B, planes, 1, 1]`` in (0, 1)."""

    def __init__(self, in_dim: int = 512, width: int = 512, planes: int = 512, blocks: int = 2) -> None:
        super().__init__()
        self.in_dim, self.planes = int(in_dim), int(planes)
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Linear(in_dim if i == 0 else width, width), nn.PReLU()]
        self.mlp_in = nn.Sequential(*layers)
        self.mlp_out = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.PReLU(), nn.Linear(width, 2 * planes), nn.Sigmoid())
            for _ in range(blocks))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, code: Tensor) -> list[list[Tensor]]:
        if code.dim() != 2 or code.shape[1] != self.in_dim:
            raise UsageError(f"star enhancer: style codes must be [B, {self.in_dim}], got {tuple(code.shape)}")
        h = self.mlp_in(code)
        return [list(head(h).view(h.shape[0], -1, 1, 1).chunk(2, dim=1)) for head in self.mlp_out]


class CurveEncoder(FixupResNet):
    """Fixup ResNet whose last-stage blocks take dual-AdaIN modulation; global avg pool -> fc."""

    def __init__(self, out_dim: int, layers: Sequence[int] = (2, 2, 2, 2),
                 planes: Sequence[int] = (64, 128, 256, 512)) -> None:
        super().__init__(layers, planes, last_stage_list=True)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.bias2 = nn.Parameter(torch.zeros(1))
        self.fc = nn.Linear(self.planes[3], out_dim)
        self.reset_parameters()

    def forward(self, x: Tensor, sa: list[list[Tensor]], sb: list[list[Tensor]]) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        for block, (sig_a, mu_a), (sig_b, mu_b) in zip(self.layer4, sa, sb, strict=True):
            alpha = sig_b / sig_a  # F' = sigma_b (F - mu_a) / sigma_a + mu_b
            x = block(x, (alpha, mu_b - mu_a * alpha))
        return self.fc(self.gap(x).flatten(1) + self.bias2)


#: Pixels per chunk of the inference lookup: 3 x 64 Ki int64 indices (1.5 MB) stay in cache.
CHUNK = 1 << 16


def curve_indices(x: Tensor, depth: int) -> Tensor:
    """``floor(clamp(x, 0, 1) * (depth - 1))`` as int64, computed as ``clamp(x * (depth - 1))`` in place.

    Equal to the clamp-first form for every input (both give ``depth - 1`` above 1 and 0 below 0).
    """
    t = x.detach() * (depth - 1)
    return t.clamp_(0, depth - 1).long()


def apply_curves(x: Tensor, curves: Tensor) -> Tensor:
    """``out_i = sum_j curves[:, 3 i + j][floor(x_j * (depth - 1))]`` per pixel: ``[B, 3, H, W]``.

    ``curves [B, 9, depth]``; ``x`` in [0, 1] (clamped). The three terms of an output channel
    are added in the official order (j = 0, 1, 2), so the result equals the official
    gather-and-sum bit for bit. Two formulations of the same lookup:

    * inference on the CPU (no gradient to the curves): the image is walked in chunks of
      :data:`CHUNK` pixels; per chunk the three index rows are computed once and each output
      row is written by ``index_select`` from a contiguous 1-D curve of ``depth`` entries
      straight into the preallocated result, then the two other terms are added in place. The
      indices stay in cache and the only full-size tensor is the result (12 bytes a pixel).
    * training (gradients reach the curves) or a GPU: one ``gather`` per curve on ``[B, HW]``
      int64 indices, summed and stacked (differentiable; one kernel per curve on a GPU).
    """
    b, _, h, w = x.shape
    depth = curves.shape[-1]
    n = h * w
    flat = x.reshape(b, 3, n)
    tables = curves.reshape(b, 9, depth)
    if (torch.is_grad_enabled() and curves.requires_grad) or x.device.type != "cpu":
        idx = [curve_indices(flat[:, j], depth) for j in range(3)]
        rows = [tables[:, 3 * i].gather(1, idx[0]) + tables[:, 3 * i + 1].gather(1, idx[1])
                + tables[:, 3 * i + 2].gather(1, idx[2]) for i in range(3)]
        return torch.stack(rows, 1).view(b, 3, h, w)
    tables = tables.detach().contiguous()
    out = torch.empty(b, 3, n, dtype=curves.dtype, device=x.device)
    for k in range(b):
        t = tables[k]
        for s in range(0, n, CHUNK):
            idx = curve_indices(flat[k, :, s:s + CHUNK], depth)  # [3, m]
            o = out[k, :, s:s + CHUNK]
            for i in range(3):
                torch.index_select(t[3 * i], 0, idx[0], out=o[i])
                o[i] += t[3 * i + 1].index_select(0, idx[1])
                o[i] += t[3 * i + 2].index_select(0, idx[2])
    return out.view(b, 3, h, w)


class SlimEnhancer(nn.Module):
    """The official ``SlimEnhancer``: pooled image -> :class:`CurveEncoder` -> 9 curves -> ``x + residual``."""

    def __init__(self, knots: int = 64, layers: Sequence[int] = (2, 2, 2, 2),
                 planes: Sequence[int] = (64, 128, 256, 512), pool_size: int = 224) -> None:
        super().__init__()
        self.knots, self.pool_size = int(knots), int(pool_size)
        self.encoder = CurveEncoder(9 * self.knots, layers, planes)

    def curves(self, x: Tensor, sa: list[list[Tensor]], sb: list[list[Tensor]]) -> Tensor:
        """``[B, 9, 256]`` curves predicted from the pooled image."""
        params = self.encoder(F.adaptive_avg_pool2d(x, (self.pool_size, self.pool_size)), sa, sb)
        params = params.view(x.shape[0], 9, self.knots, 1)
        return F.interpolate(params, (CURVE_DEPTH, 1), mode="bicubic", align_corners=True).squeeze(3)

    def forward(self, x: Tensor, sa: list[list[Tensor]], sb: list[list[Tensor]]) -> Tensor:
        return self.apply(x, self.curves(x, sa, sb))

    @staticmethod
    def apply(x: Tensor, curves: Tensor) -> Tensor:
        """The full-resolution step: ``x + apply_curves(x, curves)``."""
        res = apply_curves(x, curves)
        if not res.requires_grad and not x.requires_grad and res.dtype == x.dtype:
            return res.add_(x)  # x + res, without a second full-size tensor
        return x + res


class StarEnhancer(Enhancer):
    """StarEnhancer: ``enhancer(x, mapping(pref.source), mapping(pref.vector))``.

    ``mapping`` and ``enhancer`` carry the official module names, so their state_dicts are
    the official checkpoints' without the ``module.`` prefix.
    """

    consumes = frozenset({"vector", "source"})

    def __init__(self, code_dim: int = 512, mapping_width: int = 512, knots: int = 64,
                 layers: Sequence[int] = (2, 2, 2, 2), planes: Sequence[int] = (64, 128, 256, 512),
                 pool_size: int = 224) -> None:
        super().__init__()
        self.mapping = Mapping(code_dim, mapping_width, planes[3], layers[3])
        self.enhancer = SlimEnhancer(knots, layers, planes, pool_size)

    def forward(self, x: Tensor, pref: Preference) -> Tensor:
        return self.apply_full_resolution(x, self.prepare_full_resolution(x, pref))

    def prepare_full_resolution(self, x: Tensor, pref: Preference) -> Tensor:
        """Everything before the full-resolution step: the ``[B, 9, 256]`` curves."""
        if pref is None or pref.source is None:
            raise UsageError("star enhancer needs Preference.source (the input's style code); "
                             "pair it with an encoder that provides 'source', such as 'star'")
        return self.enhancer.curves(x, self.mapping(pref.source), self.mapping(pref.vector))

    def apply_full_resolution(self, x: Tensor, curves: Tensor) -> Tensor:
        """The per-pixel step on the full image (timed on its own by ``piebench bench``)."""
        return self.enhancer.apply(x, curves)


def load_official(enhancer: StarEnhancer, mapping_path: str, enhancer_path: str) -> None:
    """Load the official ``mapping.pth.tar`` and ``enhancer.pth.tar`` (``{'state_dict': ...}``, ``module.`` keys)."""
    load_into(enhancer.mapping, read_state_dict(mapping_path), mapping_path)
    load_into(enhancer.enhancer, read_state_dict(enhancer_path), enhancer_path)


def load_weights(enhancer: StarEnhancer, path: str) -> None:
    """``load_pretrained`` entry: ``path`` is a folder holding ``mapping.pth.tar`` and ``enhancer.pth.tar``."""
    if not os.path.isdir(path):
        raise UsageError(f"star weights: {path} must be a folder holding mapping.pth.tar and enhancer.pth.tar")
    load_official(enhancer, os.path.join(path, "mapping.pth.tar"), os.path.join(path, "enhancer.pth.tar"))


def build_star(ctx: BuildContext, code_dim: int = 512, mapping_width: int = 512, knots: int = 64,
               layers: Sequence[int] = (2, 2, 2, 2), planes: Sequence[int] = (64, 128, 256, 512),
               pool_size: int = 224) -> StarEnhancer:
    """Build the enhancer; the style-code size follows the paired encoder's ``dim`` when known."""
    if ctx.encoder is not None and getattr(ctx.encoder, "dim", 0):
        code_dim = int(ctx.encoder.dim)
    return StarEnhancer(code_dim, mapping_width, knots, layers, planes, pool_size)


@hookimpl
def register_enhancers(register):
    register(
        "star", build=build_star,
        description="StarEnhancer: mapping MLP + dual-AdaIN curve encoder, 9 RGB curves applied at full resolution",
        paper="Song et al., StarEnhancer, ICCV 2021 (IDKiro/StarEnhancer)",
        configurations={
            "small": {"code_dim": 64, "mapping_width": 64, "knots": 16, "layers": [1, 1, 1, 2],
                      "planes": [16, 32, 64, 64], "pool_size": 64},
            "paper": {"code_dim": 512, "mapping_width": 512, "knots": 64, "layers": [2, 2, 2, 2],
                      "planes": [64, 128, 256, 512], "pool_size": 224},
        },
        version="1", consumes=["vector", "source"],
        load_weights=load_weights,
        full_resolution=True,  # curves applied to the full image; the CNN sees a small copy
        meta={"parameters": {"paper mapping": 2_626_566, "paper SlimEnhancer": 11_462_459}})
