"""The evaluation reference manifest: which N references every (test photo, user, draw) gets.

Fixing the references makes every model evaluated on a protocol see exactly the same
reference photos, so differences between models are paired. The manifest is JSON data with
the dataset's ``recipe_hash`` and a ``hash`` of its own content; the references of one
(photo, user, draw) are seeded by (seed, photo, user, draw) alone, so a ``max_photos`` subset
holds the same references as the full manifest for the photos it keeps.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import jsonio
from ..errors import UsageError
from ..interfaces import Batch, RefSet
from . import PieDataset
from .sampler import gather, to_tensor

MANIFEST_FORMAT = 1


def _content_hash(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "hash"}
    return hashlib.sha256(jsonio.dumps(body, non_finite="refuse", sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def manifest_photos(dataset: PieDataset, max_photos: int | None = None) -> list[int]:
    """The test photos, or an evenly spaced deterministic subset of ``max_photos`` of them."""
    photos = dataset.photo_ids("test")
    if max_photos is not None and max_photos < len(photos):
        if max_photos < 1:
            raise UsageError(f"max_photos must be >= 1 (or None for all), got {max_photos}")
        keep = np.unique(np.round(np.linspace(0, len(photos) - 1, max_photos)).astype(int))
        photos = [photos[i] for i in keep]
    return photos


def build_manifest(dataset: PieDataset, *, refs: int, draws: int, seed: int,
                   max_photos: int | None = None, pool: str = "support") -> dict[str, Any]:
    """References for every test photo, every user who has it (seen and unseen) and every draw.

    Each reference list holds ``refs`` distinct photos of ``dataset.support(user)`` (training
    photos, which have inputs, so pair encoders can use the same manifest), or of
    ``dataset.references(user)`` with ``pool="references"`` (adds reference-only photos).
    Never a test photo.
    """
    if refs < 1 or draws < 1 or seed < 0:
        raise UsageError(f"refs and draws must be >= 1 and seed >= 0, got {refs}, {draws}, {seed}")
    if pool not in ("support", "references"):
        raise UsageError(f"manifest pool must be 'support' or 'references', got '{pool}'")
    photos = manifest_photos(dataset, max_photos)
    if not photos:
        raise UsageError(f"dataset '{dataset.name}' has no test photos to build a reference manifest for")
    source = dataset.support if pool == "support" else dataset.references
    support = {u: np.array(source(u), np.int64) for u in dataset.user_ids()}
    short = [dataset.users[u].name for u, s in support.items() if len(s) < refs]
    if short:
        raise UsageError(f"user(s) {', '.join(short)} have fewer than {refs} training photos; "
                         f"use fewer references (refs)")
    entries = []
    for p in photos:
        users = [u for u in dataset.user_ids() if dataset.has(u, p)]
        table = []
        for u in users:
            table.append([np.random.default_rng([seed, p, u, k]).choice(support[u], refs, replace=False).tolist()
                          for k in range(draws)])
        entries.append({"photo": int(p), "users": users, "refs": table})
    manifest = {"format": MANIFEST_FORMAT, "dataset": dataset.name, "recipe_hash": dataset.recipe_hash,
                "refs": int(refs), "draws": int(draws), "seed": int(seed), "max_photos": max_photos, "pool": pool,
                "photos": [int(p) for p in photos], "entries": entries}
    manifest["hash"] = _content_hash(manifest)
    return manifest


def save_manifest(manifest: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``manifest`` as JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(jsonio.dumps(manifest, non_finite="refuse", separators=(",", ":")))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read a manifest and check its content hash."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot read reference manifest {path}: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or "hash" not in manifest:
        raise UsageError(f"{path} is not a piebench reference manifest (format {MANIFEST_FORMAT})")
    if _content_hash(manifest) != manifest["hash"]:
        raise UsageError(f"reference manifest {path} was modified (its content no longer matches its hash); "
                         "rebuild it")
    return manifest


def eval_batches(dataset: PieDataset, manifest: dict[str, Any], *, pairs: bool,
                 device: Any = "cpu", full: bool = False) -> Iterator[tuple[int, int, Batch]]:
    """Yield ``(photo, draw, batch)``: one test photo and one draw per batch, one row per user
    who has the photo (input repeated, each user's target and references); no augmentation.

    ``full``: input and targets at the photo's own resolution (``dataset.full_versions``);
    references, ``RefSet.query`` and ``extras["store_target"]`` stay at the store's size, which
    is what the encoders were trained on."""
    if manifest.get("recipe_hash") != dataset.recipe_hash:
        raise UsageError(f"the reference manifest was built for dataset recipe {manifest.get('recipe_hash', '?')[:12]}, "
                         f"not this dataset ({dataset.recipe_hash[:12]}); rebuild the manifest")
    if pairs and manifest.get("pool", "support") != "support":
        raise UsageError("this reference manifest draws from reference-only photos, which have no inputs; "
                         "build it with pool='support' for encoders that need reference pairs")
    params = (torch.as_tensor(np.asarray(dataset.user_params), dtype=torch.float32)
              if dataset.user_params is not None else None)
    if full and dataset.full_versions is None:
        raise UsageError(f"eval.test_resolution = 'full' needs a store kept at full resolution; dataset "
                         f"'{dataset.name}' has only its {dataset.resolution[0]}x{dataset.resolution[1]} copy: "
                         "prepare one with --size full, or set eval.test_resolution=store")
    for entry in manifest["entries"]:
        p = int(entry["photo"])
        users = np.array(entry["users"], np.int64)
        x = to_tensor(np.broadcast_to(dataset.input(p), (len(users), *dataset.versions.shape[2:])), device)
        target = to_tensor(gather(dataset, 1 + users, np.full(len(users), p)), device)
        extras = {"user_params": params[torch.as_tensor(users)].to(device)} if params is not None else {}
        query = x
        if full:
            photo = dataset.full_versions(p)
            extras["store_target"] = target
            x = to_tensor(np.broadcast_to(photo[0], (len(users), *photo.shape[1:])), device)
            target = to_tensor(np.ascontiguousarray(photo[1 + users]), device)
        for k in range(int(manifest["draws"])):
            refs = np.array([entry["refs"][i][k] for i in range(len(users))], np.int64)
            ref_targets = to_tensor(gather(dataset, np.broadcast_to((1 + users)[:, None], refs.shape), refs), device)
            ref_inputs = to_tensor(gather(dataset, np.zeros_like(refs), refs), device) if pairs else None
            yield p, k, Batch(input=x, target=target,
                              refs=RefSet(targets=ref_targets, inputs=ref_inputs, mask=None, query=query),
                              user=torch.as_tensor(users, device=device),
                              photo=torch.full((len(users),), p, dtype=torch.long, device=device),
                              extras=dict(extras))
