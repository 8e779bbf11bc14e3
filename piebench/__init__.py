"""piebench: benchmark and evaluation harness for personalized image enhancement."""

from __future__ import annotations

import pluggy

from ._version import __version__
from .interfaces import Batch, BuildContext, Encoder, Enhancer, Loss, Preference, RefSet
from .pretrained import load_pretrained

#: Decorator marking a plugin's hook implementations (see :mod:`piebench.hookspecs`).
hookimpl = pluggy.HookimplMarker("piebench")

__all__ = [
    "Batch", "BuildContext", "Encoder", "Enhancer", "Loss", "Preference", "RefSet",
    "hookimpl", "__version__", "load_pretrained",
]

