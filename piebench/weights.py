"""Pretrained weights: torchvision's files in ``$TORCH_HOME/hub/checkpoints``, fetched once when missing.

A model built with ``--pretrained`` (and LPIPS's AlexNet trunk) asks for torchvision's file by
its usual name (``resnet18-f37072fd.pth``, ``vgg16-397923af.pth``, ``alexnet-owt-7be5be79.pth``).
When the file is not in the folder, :func:`fetch_weights` downloads it from torchvision's
published URL with ``torch.hub.download_url_to_file``: a progress bar on stderr, the SHA-256
checked against the prefix in the file name, and the bytes written to a temporary
``<file>.<uuid>.partial`` that is renamed into place only after the hash matched (and removed
otherwise), so a broken download never sits at the final path. Random weights are never a
fallback: when the file cannot be had, a :class:`~piebench.errors.UsageError` names the file,
the folder and the URL to fetch it from elsewhere.

Environment:
  PIEBENCH_OFFLINE=1            never download; a missing file is an error naming its URL.
  PIEBENCH_WEIGHTS_URL_BASE     a mirror serving torchvision's file names (default
                                https://download.pytorch.org/models); for mirrors and tests.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import socket
import sys

import torch
from torch import nn

from .errors import UsageError

#: torchvision's file names for the backbones piebench knows.
RESNET18 = "resnet18-f37072fd.pth"
VGG16 = "vgg16-397923af.pth"
ALEXNET = "alexnet-owt-7be5be79.pth"

#: Where torchvision publishes them.
DEFAULT_URL_BASE = "https://download.pytorch.org/models"

#: The SHA-256 prefix each file must have (torchvision puts it in the file name).
SHA256_PREFIX = {RESNET18: "f37072fd", VGG16: "397923af", ALEXNET: "7be5be79"}

#: Seconds a stalled connection may stay silent before the download counts as failed.
TIMEOUT_S = 60


def checkpoint_dir() -> pathlib.Path:
    """``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()/checkpoints``), where files are kept."""
    return pathlib.Path(torch.hub.get_dir()) / "checkpoints"


def weights_url(filename: str) -> str:
    """The URL of ``filename``: torchvision's, or under ``$PIEBENCH_WEIGHTS_URL_BASE``."""
    base = os.environ.get("PIEBENCH_WEIGHTS_URL_BASE", "").strip() or DEFAULT_URL_BASE
    return f"{base.rstrip('/')}/{filename}"


def offline() -> bool:
    """True when ``PIEBENCH_OFFLINE`` forbids downloads."""
    return os.environ.get("PIEBENCH_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def fetch_weights(filename: str, *, what: str = "", progress: bool = True) -> pathlib.Path:
    """The path of ``filename`` in :func:`checkpoint_dir`, downloading it first when missing.

    ``what`` opens the error message (default: "pretrained weights"). Raises UsageError naming
    the file, the folder and the URL when the file is missing and cannot be downloaded
    (``PIEBENCH_OFFLINE=1``, no network, a hash mismatch); nothing is left at the final path then.
    """
    folder = checkpoint_dir()
    path = folder / filename
    if path.is_file():
        return path
    url = weights_url(filename)
    what = what or "pretrained weights"
    fix = f"download {url} elsewhere and copy it to {folder} (set by $TORCH_HOME)"
    if offline():
        raise UsageError(f"{what}: {filename} is missing from {folder} and PIEBENCH_OFFLINE is set; {fix}")
    prefix = SHA256_PREFIX.get(filename)
    if prefix is None:
        raise UsageError(f"{what}: {filename} is missing from {folder} and piebench knows no hash to check a "
                         f"download against; {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        print(f"piebench: downloading {url} to {path}", file=sys.stderr)
        with _socket_timeout(TIMEOUT_S):
            torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=progress)
    except Exception as err:  # noqa: BLE001 - no network, HTTP error, hash mismatch, disk: one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UsageError(f"{what}: {filename} is missing from {folder} and downloading it failed "
                         f"({type(err).__name__}: {first}); {fix}") from None
    return path


def staged_weights(filename: str) -> pathlib.Path:
    """The path of ``filename`` (fetched when missing), or a UsageError naming the file, folder and URL."""
    return fetch_weights(filename, what="pretrained weights (or run without --pretrained)")


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
        raise UsageError(f"could not read pretrained weights {path}: {err}; delete it to download it again, or "
                         f"copy an intact one from {weights_url(filename)}") from None
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
