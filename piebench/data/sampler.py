"""The training sampler: P users x K photos per batch, each with N references of its user.

Everything is an index lookup into the dataset's uint8 store, in the main process; one
:class:`numpy.random.Generator` drives every choice, so :meth:`TrainSampler.state_dict` /
:meth:`TrainSampler.load_state_dict` resume the exact same future batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..interfaces import Batch, RefSet
from . import PieDataset


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` -> float32 ``[..., 3, H, W]`` in [0, 1] on ``device``.

    On the CPU the conversion runs in numpy (no torch thread pool for small batches); on an
    accelerator the uint8 pixels travel and are converted there (4x less to transfer).
    """
    images = np.asarray(images)
    if torch.device(device).type == "cpu":
        out = np.empty((*images.shape[:-3], 3, *images.shape[-3:-1]), np.float32)
        np.divide(np.moveaxis(images, -1, -3), np.float32(255.0), out=out)
        return torch.from_numpy(out)
    t = torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True)
    return t.movedim(-1, -3).float().div_(255.0).contiguous()


def gather(dataset: PieDataset, versions: np.ndarray, photos: np.ndarray) -> np.ndarray:
    """Store lookups ``dataset.versions[versions, photos]`` (any matching shapes), uint8."""
    versions, photos = np.asarray(versions), np.asarray(photos)
    flat_v, flat_p = versions.reshape(-1), photos.reshape(-1)
    order = np.lexsort((flat_p, flat_v))  # read the memory map in file order
    out = np.empty((flat_v.size, *dataset.versions.shape[2:]), np.uint8)
    out[order] = dataset.versions[flat_v[order], flat_p[order]]
    return out.reshape(*versions.shape, *dataset.versions.shape[2:])


class TrainSampler:
    """Batches of ``batch_users`` seen users x ``per_user`` training photos, ``refs`` references each.

    Each sample: input (version 0), target (its user's retouch), ``refs`` reference photos of
    the same user excluding the sample's own photo, ``RefSet.query`` = the input. Training
    photos come from ``dataset.support(user)``; references from ``dataset.references(user)``
    (training plus reference-only photos), or from ``support`` alone when ``pairs`` (their
    inputs are needed too). Never from test photos. Users are drawn without replacement
    within a batch when there are enough, photos likewise within a user, references likewise
    within a sample. ``augment`` flips input and target together, each reference on its own.
    ``last_indices`` holds the last batch's ``user``, ``photo``, ``refs`` and flips.
    """

    def __init__(self, dataset: PieDataset, *, batch_users: int, per_user: int, refs: int,
                 pairs: bool = False, seed: int = 0, augment: bool = True, device: Any = "cpu") -> None:
        if batch_users < 1 or per_user < 1 or refs < 1:
            raise UsageError(f"batch_users, per_user and refs must be >= 1, got {batch_users}, {per_user}, {refs}")
        self.dataset = dataset
        self.batch_users, self.per_user, self.refs = int(batch_users), int(per_user), int(refs)
        self.pairs, self.augment, self.device, self.seed = bool(pairs), bool(augment), device, int(seed)
        self.users = np.array(dataset.user_ids(seen=True), np.int64)
        if len(self.users) == 0:
            raise UsageError(f"dataset '{dataset.name}' has no seen (training) users to sample")
        self.support = [np.array(dataset.support(int(u)), np.int64) for u in self.users]
        # reference pool: training photos first, then (without pairs) reference-only photos
        pool = dataset.support if self.pairs else dataset.references
        self.pool = []
        for u, support in zip(self.users, self.support, strict=True):
            extra = sorted(set(pool(int(u))) - set(support.tolist()))
            self.pool.append(np.concatenate([support, np.array(extra, np.int64)]))
        short = [dataset.users[int(u)].name for u, s, r in zip(self.users, self.support, self.pool, strict=True)
                 if len(s) < 1 or len(r) < 2]
        if short:
            raise UsageError(f"user(s) {', '.join(short)} have too few photos: a sample needs a training photo "
                             "and at least one other photo as reference")
        self.params = (torch.as_tensor(np.asarray(dataset.user_params), dtype=torch.float32)
                       if dataset.user_params is not None else None)
        self.rng = np.random.default_rng(self.seed)
        self.step = 0
        self.last_indices: dict[str, Any] = {}

    @property
    def batch_size(self) -> int:
        return self.batch_users * self.per_user

    def _choose(self, n: int, k: int) -> np.ndarray:
        return self.rng.choice(n, size=k, replace=k > n)

    def indices(self) -> dict[str, np.ndarray]:
        """Draw the next batch's indices (advances the generator)."""
        rng = self.rng
        slots = self._choose(len(self.users), self.batch_users)
        users, photos, refs = [], [], []
        for slot in slots:
            support, pool = self.support[slot], self.pool[slot]
            pos = self._choose(len(support), self.per_user)
            for own in pos:  # pool starts with support, so the own photo sits at pool[own]
                others = self._choose(len(pool) - 1, self.refs)
                others = others + (others >= own)  # skip the sample's own photo
                users.append(self.users[slot])
                photos.append(support[own])
                refs.append(pool[others])
        b = len(users)
        flips = rng.random(b) < 0.5 if self.augment else np.zeros(b, bool)
        ref_flips = rng.random((b, self.refs)) < 0.5 if self.augment else np.zeros((b, self.refs), bool)
        return {"user": np.array(users, np.int64), "photo": np.array(photos, np.int64),
                "refs": np.stack(refs).astype(np.int64), "flip": flips, "ref_flip": ref_flips}

    def sample(self) -> Batch:
        """The next batch (index lookups into the store; nothing decoded)."""
        idx = self.indices()
        self.step += 1
        self.last_indices = {k: v.tolist() for k, v in idx.items()}
        return self.batch_from_indices(idx)

    def batch_from_indices(self, idx: dict[str, Any]) -> Batch:
        """The batch that ``idx`` (as in :attr:`last_indices`) describes."""
        user, photo = np.asarray(idx["user"], np.int64), np.asarray(idx["photo"], np.int64)
        refs = np.asarray(idx["refs"], np.int64)
        flip = np.asarray(idx.get("flip", np.zeros(len(user), bool)), bool)
        ref_flip = np.asarray(idx.get("ref_flip", np.zeros(refs.shape, bool)), bool)
        inputs = gather(self.dataset, np.zeros_like(photo), photo)
        targets = gather(self.dataset, 1 + user, photo)
        ref_targets = gather(self.dataset, np.broadcast_to((1 + user)[:, None], refs.shape), refs)
        ref_inputs = gather(self.dataset, np.zeros_like(refs), refs) if self.pairs else None
        if flip.any():
            inputs[flip] = inputs[flip][:, :, ::-1]
            targets[flip] = targets[flip][:, :, ::-1]
        if ref_flip.any():
            ref_targets[ref_flip] = ref_targets[ref_flip][:, :, ::-1]
            if ref_inputs is not None:
                ref_inputs[ref_flip] = ref_inputs[ref_flip][:, :, ::-1]
        x = to_tensor(inputs, self.device)
        extras = {}
        if self.params is not None:
            extras["user_params"] = self.params[torch.as_tensor(user)].to(self.device)
        return Batch(
            input=x, target=to_tensor(targets, self.device),
            refs=RefSet(targets=to_tensor(ref_targets, self.device),
                        inputs=to_tensor(ref_inputs, self.device) if ref_inputs is not None else None,
                        mask=None, query=x),
            user=torch.as_tensor(user, device=self.device), photo=torch.as_tensor(photo, device=self.device),
            extras=extras)

    def _fingerprint(self) -> dict[str, Any]:
        return {"recipe_hash": self.dataset.recipe_hash, "batch_users": self.batch_users,
                "per_user": self.per_user, "refs": self.refs, "augment": self.augment}

    def state_dict(self) -> dict[str, Any]:
        """The generator state and step (JSON-able); resuming from it gives the same future batches."""
        return {"rng": self.rng.bit_generator.state, "step": self.step, "seed": self.seed,
                **self._fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; refuses a state from another dataset or batch shape."""
        mine = self._fingerprint()
        diff = [k for k in mine if k in state and state[k] != mine[k]]
        if diff:
            raise UsageError(f"sampler state does not match this sampler ({', '.join(diff)} differ); "
                             "resume with the same dataset and batch settings")
        bit_generator = type(self.rng.bit_generator)()
        bit_generator.state = state["rng"]
        self.rng = np.random.Generator(bit_generator)
        self.step = int(state.get("step", 0))
