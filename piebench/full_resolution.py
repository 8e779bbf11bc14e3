"""Full-resolution inference: an enhancer on a whole photo, whatever its size.

:func:`enhance_full` runs in one pass when the enhancer has a full-resolution path (the spec
field or instance attribute ``full_resolution``: curves, LUTs, bilateral grids, per-pixel
networks, see :func:`full_resolution_of`), otherwise in overlapping tiles blended with linear
ramps. ``piebench enhance`` and the evaluation at ``eval.test_resolution = "full"``
(:func:`enhance_each`) both go through here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .errors import UsageError
from .interfaces import Preference


def full_resolution_of(spec: Any, module: Any) -> bool:
    """Whether an enhancer declares a full-resolution path (spec field or attribute ``full_resolution``)."""
    return bool(spec.full_resolution or getattr(module, "full_resolution", False))


def _pad_to(x: Tensor, multiple: int) -> tuple[Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


def _ramp(n: int, overlap: int, first: bool, last: bool) -> Tensor:
    w = torch.ones(n)
    if overlap > 0:
        ramp = torch.linspace(0, 1, overlap + 2)[1:-1]
        if not first:
            w[:overlap] = ramp
        if not last:
            w[-overlap:] = ramp.flip(0)
    return w


@torch.no_grad()
def enhance_full(enhancer: Any, x: Tensor, pref: Preference | None, *, full_resolution: bool, tile: int = 512,
                 overlap: int = 64, multiple: int = 32) -> Tensor:
    """Enhance ``x [1, 3, H, W]`` at its own resolution; returns ``[1, 3, H, W]`` clamped to [0, 1].

    In one pass when ``full_resolution`` or when the photo fits in one tile; otherwise in
    ``tile``-pixel tiles overlapping by ``overlap``, blended with linear ramps. A pass the model
    refuses for its size is retried padded (reflection) to a multiple of ``multiple``.
    """
    def call(t: Tensor) -> Tensor:
        return enhancer(t, pref) if pref is not None else enhancer(t)

    def run(t: Tensor) -> Tensor:
        # Unpadded first (padding would change a model's global statistics); a U-Net that needs
        # sizes divisible by its downsampling refuses odd sizes, and gets a reflected border.
        try:
            return call(t)
        except RuntimeError:
            padded, h, w = _pad_to(t, multiple)
            if padded.shape == t.shape:
                raise
            return call(padded)[..., :h, :w]

    _, _, h, w = x.shape
    if full_resolution or (h <= tile and w <= tile):
        return run(x).clamp(0, 1)
    if overlap * 2 >= tile:
        raise UsageError(f"--overlap {overlap} must be less than half of --tile {tile}")
    step = tile - overlap
    ys = list(range(0, max(h - tile, 0) + 1, step)) or [0]
    xs = list(range(0, max(w - tile, 0) + 1, step)) or [0]
    if ys[-1] + tile < h:
        ys.append(h - tile)
    if xs[-1] + tile < w:
        xs.append(w - tile)
    acc = torch.zeros_like(x)
    weight = torch.zeros(1, 1, h, w, device=x.device)
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            t = x[..., y0:y0 + tile, x0:x0 + tile]
            th, tw = t.shape[-2:]
            out = run(t)
            wy = _ramp(th, min(overlap, th // 2), i == 0, i == len(ys) - 1).to(x.device)
            wx = _ramp(tw, min(overlap, tw // 2), j == 0, j == len(xs) - 1).to(x.device)
            wt = (wy[:, None] * wx[None, :])[None, None]
            acc[..., y0:y0 + th, x0:x0 + tw] += out * wt
            weight[..., y0:y0 + th, x0:x0 + tw] += wt
    return (acc / weight.clamp_min(1e-8)).clamp(0, 1)


def enhance_each(enhancer: Any, inputs: Tensor, pref: Preference, *, full_resolution: bool) -> Tensor:
    """``[B, 3, H, W]`` photos enhanced one at a time at their own resolution, each under its own
    row of ``pref``, clamped to [0, 1] (float32)."""
    return torch.cat([enhance_full(enhancer, inputs[i : i + 1], pref.take([i]), full_resolution=full_resolution).float()
                      for i in range(inputs.shape[0])]).clamp(0, 1)
