"""The ``folder`` dataset: a person's own photos, ``root/input/NAME.ext`` + ``root/<user>/NAME.ext``.

``piebench run --dataset folder:PATH``. Parameters: ``root``, ``resolution`` (square side,
default 256), ``test_fraction`` (hash split when there is no ``split.json``, default 0.2),
``unseen_users`` (user folders held out of training). See :mod:`piebench.data.folder`.
"""

from __future__ import annotations

from typing import Any

from piebench import hookimpl
from piebench.data.folder import build_folder as folder_dataset
from piebench.errors import UsageError
from piebench.interfaces import BuildContext


def build_folder(ctx: BuildContext, root: str | None = None, resolution: int = 256, test_fraction: float = 0.2,
                 unseen_users: Any = None, **ignored: Any):
    """Build (once, cached) and open the folder dataset at ``root``."""
    if not root:
        raise UsageError("folder needs a path: --dataset folder:PATH (PATH/input/ and PATH/<user>/)")
    if isinstance(unseen_users, str):
        unseen_users = [unseen_users]
    if unseen_users is not None and not (isinstance(unseen_users, list) and all(isinstance(u, str) for u in unseen_users)):
        raise UsageError(f"folder: unseen_users must be a list of user folder names, got {unseen_users!r}")
    if not isinstance(test_fraction, int | float) or isinstance(test_fraction, bool):
        raise UsageError(f"folder: test_fraction must be a number in [0, 1), got {test_fraction!r}")
    return folder_dataset(root, resolution=resolution, test_fraction=float(test_fraction), unseen_users=unseen_users,
                 min_refs=max(1, int(getattr(ctx, "num_refs", 1) or 1)), progress=True)


@hookimpl
def register_datasets(register):
    register("folder", build=build_folder,
             description="your own photos: PATH/input/NAME + PATH/<user>/NAME (pairs by file name)",
             paper="piebench (your own data)", version="1")
