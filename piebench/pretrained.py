"""Released weights: read official checkpoint files and load an enhancer or an encoder for use.

``load_pretrained(name, path)`` builds the registered enhancer ``name`` and hands ``path`` to the
``load_weights(module, path)`` function its plugin registers in the spec's meta (what ``path``
must be -- one file or a folder -- is documented by each plugin). The result is in eval mode and
callable as ``model(x)`` on ``[B, 3, H, W]`` float images in [0, 1]; an enhancer that consumes a
preference must be called as ``model(x, pref)``. ``load_pretrained(name, path, kind="encoder")``
does the same for a style encoder (StarEnhancer's): the encoder module itself, in eval mode.

The helpers :func:`read_torch_file`, :func:`read_state_dict` and :func:`load_into` turn every
problem with a weights file (missing, unreadable, keys or shapes that do not fit) into a one-line
:class:`~piebench.errors.UsageError` naming the file.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .contract import build_checked
from .errors import UsageError, first_line
from .interfaces import BuildContext
from .plugins import get_registry


def read_torch_file(path: str | pathlib.Path) -> Any:
    """The object saved in ``path`` (loaded on the CPU, tensors only), or a UsageError naming it."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UsageError(f"could not read weights file {path}: {type(err).__name__}: {first_line(err)}") from None


def read_state_dict(path: str | pathlib.Path, prefix: str = "module.") -> dict[str, Tensor]:
    """A state_dict from ``path``: unwraps ``{'state_dict': ...}`` and strips ``prefix`` (DataParallel)."""
    obj = read_torch_file(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise UsageError(f"weights file {path} does not hold a state_dict of tensors")
    return {(k[len(prefix):] if prefix and k.startswith(prefix) else k): v for k, v in obj.items()}


def load_into(module: nn.Module, state: Mapping[str, Tensor], path: str | pathlib.Path) -> None:
    """Load ``state`` into ``module`` strictly; any missing, extra or reshaped key -> UsageError naming ``path``."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or wrong:
        if missing:
            what = f"{len(missing)} missing key(s) (e.g. {missing[0]})"
        elif extra:
            what = f"{len(extra)} unexpected key(s) (e.g. {extra[0]})"
        else:
            k = wrong[0]
            what = (f"{len(wrong)} key(s) of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                    f"{tuple(own[k].shape)} in the model)")
        raise UsageError(f"weights file {path} does not fit {type(module).__name__}: {what}; "
                         "check the file and the configuration")
    module.load_state_dict(dict(state), strict=True)


class Pretrained(nn.Module):
    """A loaded enhancer in eval mode: ``model(x)`` (unconditioned) or ``model(x, pref)``."""

    def __init__(self, name: str, enhancer: nn.Module) -> None:
        super().__init__()
        self.name = name
        self.enhancer = enhancer
        self.consumes = frozenset(getattr(enhancer, "consumes", frozenset()))

    def forward(self, x: Tensor, pref: Any = None) -> Tensor:
        if pref is None and self.consumes:
            raise UsageError(
                f"enhancer '{self.name}' needs a Preference (it consumes {', '.join(sorted(self.consumes))}); "
                "call model(x, pref)")
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise UsageError(f"enhancer '{self.name}' expects float images [B, 3, H, W] in [0, 1], got {shape}")
        return self.enhancer(x, pref)


def load_pretrained(name: str, path: str, configuration: str = "paper", device: str = "cpu",
                    kind: str = "enhancer") -> nn.Module:
    """The registered enhancer (or, ``kind="encoder"``, encoder) ``name`` with released weights from ``path``.

    The plugin must register ``load_weights(module, path)`` in its meta. Enhancers come as a
    :class:`Pretrained` module, callable on ``[B, 3, H, W]`` float images in [0, 1] (``model(x)``, or
    ``model(x, pref)`` when it consumes a preference); encoders as the encoder module itself
    (``encoder.embed(images)`` gives style codes); in eval mode on ``device``. Raises UsageError
    for an unknown name, kind or configuration, a plugin without a registered ``load_weights``,
    or a missing / unreadable / ill-fitting weights file (the message names the file).
    """
    if kind not in ("enhancer", "encoder"):
        raise UsageError(f"load_pretrained: kind must be 'enhancer' or 'encoder', got '{kind}'")
    spec = get_registry().get(kind, name)
    load_weights = spec.load_weights
    if not callable(load_weights):
        raise UsageError(f"{kind} '{name}' has no released weights to load (its plugin registers no load_weights)")
    if not pathlib.Path(path).exists():
        raise UsageError(f"weights not found: {path}")
    module = build_checked(spec, BuildContext(num_users=1), configuration)
    load_weights(module, str(path))
    if kind == "encoder":
        return module.to(device).eval()
    return Pretrained(name, module).to(device).eval()
