"""Staged pretrained weights: torchvision files the user put in ``$TORCH_HOME/hub/checkpoints``.

Nothing here downloads. A model built with ``--pretrained`` asks for torchvision's file by its
usual name (``resnet18-f37072fd.pth``, ``vgg16-397923af.pth``); when the file is not staged the
builder stops with a :class:`~piebench.errors.UsageError` that names the file and the folder.
"""

from __future__ import annotations

import pathlib

import torch
from torch import nn

from .errors import UsageError

#: torchvision's file names for the backbones piebench knows.
RESNET18 = "resnet18-f37072fd.pth"
VGG16 = "vgg16-397923af.pth"


def checkpoint_dir() -> pathlib.Path:
    """``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()/checkpoints``), where files are staged."""
    return pathlib.Path(torch.hub.get_dir()) / "checkpoints"


def staged_weights(filename: str) -> pathlib.Path:
    """The path of the staged file ``filename``, or a UsageError naming the file and the folder."""
    folder = checkpoint_dir()
    path = folder / filename
    if not path.is_file():
        raise UsageError(
            f"pretrained weights not found: {filename} is missing from {folder}; stage it there "
            f"(torchvision's file name) or run without --pretrained")
    return path


def load_torchvision_backbone(model: nn.Module, filename: str, *, prefix: str = "") -> str:
    """Load the staged torchvision state_dict ``filename`` into ``model``; return a provenance note.

    The file's keys under ``prefix`` (stripped; e.g. ``"features."`` for a VGG's convolutional
    part) are matched to ``model``'s keys. ``model`` may be a *truncation* of the torchvision
    network (no classifier, fewer layers): file keys it has no place for are ignored. Every key
    of ``model`` must be in the file with the same shape, else a UsageError says what does not fit.
    """
    path = staged_weights(filename)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a usage problem
        raise UsageError(f"could not read pretrained weights {path}: {err}; stage an intact copy") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        what = (f"{len(missing)} missing keys (e.g. {missing[0]})" if missing
                else f"{len(wrong)} keys of another shape (e.g. {wrong[0]})")
        raise UsageError(
            f"pretrained weights {path} do not fit the {type(model).__name__}: {what}; "
            f"stage torchvision's original {filename} and use the configuration with the paper's widths")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    return f"torchvision {filename} ({path})"
