"""Oracle encoders: preferences that know who the user is, to measure how much an encoder loses.

* ``oracle-id``: a learned embedding per *seen* user id (``nn.Embedding(num_seen, dim)``,
  L2-normalised). Unseen users have no row: their vector is zero and
  ``Preference.extras["oracle_known"]`` is False (the oracle is defined for seen users only).
* ``oracle-params`` (pie-synth): the user's true retouch parameters, standardised with the
  seen users' mean and std, used raw (``mode="raw"``, dim = number of parameters, nothing to
  train) or mapped by a small trainable MLP to ``dim`` (``mode="mlp"``). Known for seen and
  unseen users alike.

Encoder gap = oracle - model: the PSNR an encoder leaves on the table for a given enhancer.

How the oracle knows the user without a contract change: a :class:`RefSet` carries only
pixels, so at build time the oracle indexes the run's dataset (``BuildContext.dataset``) by the
per-channel sums of every stored retouch ``versions[1 + u, p]`` (uint8). A reference is
quantised back to uint8 and looked up by its sums, which flips and 90-degree rotations do not
change; each sample's user is the majority over its valid references, and an ambiguous sum (two
stored images with equal sums) is settled by the other references. A reference that matches
no stored retouch (resized, cropped or re-coloured) is an error: the oracle is only defined on
the dataset's own images. Building the index reads the store once (cheap for pie-synth; for a
prepared FiveK store about one pass over the data).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Encoder, Preference, RefSet


class ReferenceIndex:
    """Which user a stored retouch belongs to, keyed by the uint8 image's per-channel sums."""

    def __init__(self, dataset: Any) -> None:
        versions = dataset.versions
        users = dataset.num_users
        self.table: dict[tuple[int, int, int], set[int]] = defaultdict(set)
        for p in range(versions.shape[1]):
            sums = np.asarray(versions[1:, p], dtype=np.uint8).reshape(users, -1, 3).sum(1, dtype=np.int64)
            for u in range(users):
                if dataset.has(u, p):
                    self.table[tuple(int(s) for s in sums[u])].add(u)

    def users_of(self, images: Tensor) -> list[set[int]]:
        """Candidate users of each image ``[M, 3, H, W]`` in [0, 1] (empty set = not a stored retouch)."""
        q = torch.round(images.detach().float().clamp(0, 1) * 255).to(torch.int64)
        sums = q.sum(dim=(2, 3)).cpu().numpy()
        return [self.table.get(tuple(int(s) for s in row), set()) for row in sums]

    def identify(self, refs: RefSet) -> Tensor:
        """``[B]`` user id of each sample from its valid references (majority vote)."""
        b, n = refs.batch_size, refs.num_refs
        cands = self.users_of(refs.targets.reshape(b * n, *refs.targets.shape[2:]))
        mask = refs.valid_mask().reshape(-1).tolist()
        out = []
        for i in range(b):
            votes: Counter[int] = Counter()
            for j in range(n):
                k = i * n + j
                if not mask[k]:
                    continue
                if not cands[k]:
                    raise UsageError("oracle encoders identify the user by exact lookup of the references in the "
                                     "run's dataset; reference does not match any stored retouch (references "
                                     "must be the store's own images, flips/rotations allowed, not resized or "
                                     "cropped)")
                votes.update(cands[k])
            if not votes:
                raise UsageError("oracle encoders need at least one valid reference per sample")
            (best, count), *rest = votes.most_common(2) + [(None, -1)]
            if rest[0][1] == count:
                raise UsageError(f"oracle encoders cannot tell users {best} and {rest[0][0]} apart from these "
                                 f"references (identical images); give more references")
            out.append(best)
        return torch.as_tensor(out, dtype=torch.long, device=refs.targets.device)


def _index(ctx: BuildContext | None, who: str) -> tuple[Any, ReferenceIndex]:
    ds = getattr(ctx, "dataset", None)
    if ds is None:
        raise UsageError(f"encoder '{who}' needs the run's dataset to recognise users (BuildContext.dataset); "
                         f"build it through piebench run / the runner")
    return ds, ReferenceIndex(ds)


class OracleIdEncoder(Encoder):
    """A learned, L2-normalised vector per seen user id; zero (flagged) for unseen users."""

    provides = frozenset({"vector"})
    metric_loss = None

    def __init__(self, index: ReferenceIndex, num_seen: int, dim: int = 64) -> None:
        super().__init__()
        if dim < 1 or num_seen < 1:
            raise UsageError(f"oracle-id needs dim >= 1 and at least one seen user, got dim={dim}, {num_seen} users")
        self.index, self.num_seen, self.dim = index, int(num_seen), int(dim)
        self.table = nn.Embedding(self.num_seen, self.dim)
        nn.init.normal_(self.table.weight)
        self.pretrained_from = "oracle: learned embedding per seen user id (random initialisation)"

    def _vectors(self, users: Tensor) -> tuple[Tensor, Tensor]:
        known = users < self.num_seen
        vec = F.normalize(self.table(users.clamp(max=self.num_seen - 1)), dim=1)
        return vec * known[:, None].to(vec.dtype), known

    def embed(self, images: Tensor) -> Tensor:
        """The user vector of each image's retoucher (an image may belong to several: first id)."""
        users = [min(c) if c else -1 for c in self.index.users_of(images)]
        if min(users, default=0) < 0:
            raise UsageError("oracle-id: an image to embed is not a stored retouch of the run's dataset")
        return self._vectors(torch.as_tensor(users, dtype=torch.long, device=images.device))[0]

    def forward(self, refs: RefSet) -> Preference:
        """The identified user's vector; ``extras["oracle_known"]`` is False for unseen users."""
        vec, known = self._vectors(self.index.identify(refs))
        return Preference(vector=vec, extras={"oracle_known": known})


class OracleParamsEncoder(Encoder):
    """The user's true retouch parameters (standardised), raw or through a trainable MLP."""

    provides = frozenset({"vector"})
    metric_loss = None

    def __init__(self, index: ReferenceIndex, params: np.ndarray, seen: int, mode: str = "mlp", dim: int = 64,
                 hidden: int = 128) -> None:
        super().__init__()
        if mode not in ("raw", "mlp"):
            raise UsageError(f"oracle-params mode must be 'raw' or 'mlp', got '{mode}'")
        p = torch.as_tensor(np.asarray(params, dtype=np.float32))
        ref = p[: max(1, seen)]
        mean, std = ref.mean(0), ref.std(0, unbiased=False)
        std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant parameters stay 0
        self.index, self.mode = index, mode
        self.register_buffer("params", (p - mean) / std)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        if mode == "raw":
            self.dim, self.mlp, self.trainable = p.shape[1], None, False
            self.pretrained_from = "oracle: true user parameters, standardised (no weights)"
        else:
            self.dim = int(dim)
            self.mlp = nn.Sequential(nn.Linear(p.shape[1], hidden), nn.ReLU(inplace=True), nn.Linear(hidden, self.dim))
            self.pretrained_from = "oracle: true user parameters through an MLP (random initialisation)"

    def _vectors(self, users: Tensor) -> Tensor:
        v = self.params[users]
        return v if self.mlp is None else F.normalize(self.mlp(v), dim=1)

    def embed(self, images: Tensor) -> Tensor:
        """The vector of each image's retoucher."""
        users = [min(c) if c else -1 for c in self.index.users_of(images)]
        if min(users, default=0) < 0:
            raise UsageError("oracle-params: an image to embed is not a stored retouch of the run's dataset")
        return self._vectors(torch.as_tensor(users, dtype=torch.long, device=images.device))

    def forward(self, refs: RefSet) -> Preference:
        """The identified user's parameter vector."""
        return Preference(vector=self._vectors(self.index.identify(refs).to(self.params.device)))


def build_oracle_id(ctx: BuildContext, dim: int = 64) -> OracleIdEncoder:
    """``oracle-id`` for the run's dataset (its seen users)."""
    ds, index = _index(ctx, "oracle-id")
    return OracleIdEncoder(index, ds.num_seen, dim)


def build_oracle_params(ctx: BuildContext, mode: str = "mlp", dim: int = 64, hidden: int = 128) -> OracleParamsEncoder:
    """``oracle-params`` for a dataset that knows its users' true parameters (pie-synth)."""
    ds = getattr(ctx, "dataset", None)
    if ds is not None and getattr(ds, "user_params", None) is None:
        raise UsageError(f"encoder 'oracle-params' needs a dataset with the users' true parameters (pie-synth); "
                         f"dataset '{ds.name}' has none; use oracle-id instead")
    ds, index = _index(ctx, "oracle-params")
    return OracleParamsEncoder(index, ds.user_params, ds.num_seen, mode, dim, hidden)


@hookimpl
def register_encoders(register):
    """Register ``oracle-id`` and ``oracle-params``."""
    register("oracle-id", build=build_oracle_id,
             description="oracle: a learned embedding per seen user id (users recognised by exact reference lookup); "
                         "encoder gap = oracle - model",
             paper="attribution baseline (piebench)",
             configurations={"small": {"dim": 64}, "paper": {"dim": 512}},
             version="1", provides=["vector"], requires=["targets"], role="oracle", meta={"metric_loss": None})
    register("oracle-params", build=build_oracle_params,
             description="oracle (pie-synth): the user's true retouch parameters, raw or through a small MLP",
             paper="attribution baseline (piebench)",
             configurations={"small": {"mode": "mlp", "dim": 64, "hidden": 128},
                             "paper": {"mode": "mlp", "dim": 512, "hidden": 512},
                             "raw": {"mode": "raw"}},
             version="1", provides=["vector"], requires=["targets"], role="oracle", meta={"metric_loss": None})
