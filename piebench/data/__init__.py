"""Datasets as piebench sees them: an image store of every version of every photo.

A :class:`PieDataset` holds ``versions``, a uint8 array ``[1 + U, P, H, W, 3]`` (usually a
memory map): version 0 is the input photo, version ``1 + u`` is user ``u``'s retouch. Users
are ordered seen first (ids ``0 .. S-1``, the training users) then unseen (``S .. U-1``,
evaluation only), so training labels are ``0 .. S-1``. Photos carry a ``scene`` (crops of one
scene share content and never straddle the train/test split) and a ``split``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class UserInfo:
    """A user (a retoucher): ``seen`` users train and test, unseen users test only."""

    id: int
    name: str
    seen: bool


@dataclass(frozen=True)
class PhotoInfo:
    """A photo (or crop): ``scene`` groups crops of one picture; ``split`` is train or test."""

    id: int
    name: str
    scene: str
    split: str


@dataclass
class PieDataset:
    """Every version of every photo plus who the users are.

    versions: uint8 ``[1 + U, P, H, W, 3]``; available: bool ``[U, P]`` (a user may lack some
    photos; None = all present); user_params: ``[U, A]`` true retouch parameters when known
    (pie-synth), named by ``param_names``; recipe / recipe_hash: what built the store (two
    datasets with the same hash hold the same pixels); info: free-form provenance;
    full_versions: for a store kept at the sources' resolution, ``photo -> uint8 [1 + U, h, w, 3]``
    (input first, users in this dataset's order) at the photo's own size, so a protocol can test
    at full resolution while training and references use the fixed-size ``versions``.
    """

    name: str
    versions: np.ndarray
    users: list[UserInfo]
    photos: list[PhotoInfo]
    recipe: dict[str, Any]
    recipe_hash: str
    available: np.ndarray | None = None
    param_names: list[str] = field(default_factory=list)
    user_params: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    full_versions: Callable[[int], np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        seen_flags = [u.seen for u in self.users]
        if seen_flags != sorted(seen_flags, reverse=True):
            raise ValueError("users must be ordered seen first, then unseen")
        if [u.id for u in self.users] != list(range(len(self.users))):
            raise ValueError("user ids must be 0..U-1 in order")
        if self.versions.shape[0] != 1 + len(self.users) or self.versions.shape[1] != len(self.photos):
            raise ValueError(f"versions has shape {self.versions.shape}, expected "
                             f"[1 + {len(self.users)}, {len(self.photos)}, H, W, 3]")

    # -- sizes ------------------------------------------------------------------------------
    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_seen(self) -> int:
        return sum(u.seen for u in self.users)

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.versions.shape[2]), int(self.versions.shape[3])

    # -- lookups ----------------------------------------------------------------------------
    def input(self, photo: int) -> np.ndarray:
        """The input photo, uint8 ``[H, W, 3]``."""
        return self.versions[0, photo]

    def target(self, user: int, photo: int) -> np.ndarray:
        """User ``user``'s retouch of ``photo``, uint8 ``[H, W, 3]``."""
        return self.versions[1 + user, photo]

    def has(self, user: int, photo: int) -> bool:
        return True if self.available is None else bool(self.available[user, photo])

    def photo_ids(self, split: str) -> list[int]:
        return [p.id for p in self.photos if p.split == split]

    def user_ids(self, seen: bool | None = None) -> list[int]:
        return [u.id for u in self.users if seen is None or u.seen == seen]

    def support(self, user: int) -> list[int]:
        """Photos that may serve as ``user``'s references: training-split photos the user has."""
        return [p for p in self.photo_ids("train") if self.has(user, p)]

    def references(self, user: int) -> list[int]:
        """:meth:`support` plus ``user``'s reference-only photos (split ``"ref"``: a retouch with no
        input, so never a training pair or a test photo; the ``folder`` dataset makes them)."""
        return [p.id for p in self.photos if p.split in ("train", "ref") and self.has(user, p.id)]
