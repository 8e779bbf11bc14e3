"""piebench: benchmark and evaluation harness for personalized image enhancement."""

from __future__ import annotations

import pluggy

from ._version import __version__
from .interfaces import Batch, BuildContext, Encoder, Enhancer, Loss, Preference, RefSet

#: Decorator marking a plugin's hook implementations (see :mod:`piebench.hookspecs`).
hookimpl = pluggy.HookimplMarker("piebench")

__all__ = [
    "Batch", "BuildContext", "Encoder", "Enhancer", "Loss", "Preference", "RefSet",
    "hookimpl", "__version__", "load_pretrained",
]


def load_pretrained(name: str, path: str, configuration: str = "paper", device: str = "cpu",
                    kind: str = "enhancer"):
    """A released enhancer (or, ``kind="encoder"``, style encoder) ``name`` with weights from ``path``, in eval mode.

    The plugin must register ``load_weights(module, path)`` in its meta. An enhancer is callable
    on ``[B, 3, H, W]`` float images in [0, 1] (``model(x)``, or ``model(x, pref)`` when it
    consumes a preference); an encoder gives style codes with ``encoder.embed(images)``.
    """
    from .pretrained import load_pretrained as _load

    return _load(name, path, configuration=configuration, device=device, kind=kind)
