"""Small helpers shared by several enhancer files (not a plugin: no entry point)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, int, int]:
    """``x`` padded (replicate, bottom/right) so H and W are multiples of ``multiple``; returns (x, H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, h, w
