"""The image store cache: every version of every photo as one memory-mapped uint8 ``.npy``.

A store lives in ``$PIEBENCH_CACHE/stores/<name>-<hash16>/`` (``PIEBENCH_CACHE`` defaults to
``~/.cache/piebench``), named by :func:`recipe_hash` of the recipe that built it:
``versions.npy`` (``[1 + U, P, H, W, 3]`` uint8) and ``store.json`` (the recipe, its hash and
the builder's metadata: users, photos, parameters). It is rebuilt only when the hash changes.

Builds are atomic and safe under concurrency: the builder writes into a temporary folder
next to the store, which is renamed into place when complete; an exclusive ``fcntl.flock`` on
``<store>.lock`` makes a second process wait and then load what the first one built.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .. import jsonio
from ..errors import PiebenchError, UsageError

#: Bumped when the store layout changes; part of every recipe hash.
STORE_VERSION = 1
_RESERVED = ("recipe", "recipe_hash", "store_version", "shape", "build_seconds", "created")

#: Counters for this process: ``builds`` (stores written) and ``hits`` (stores reused).
stats = {"builds": 0, "hits": 0}


def cache_root() -> Path:
    """``$PIEBENCH_CACHE`` or ``~/.cache/piebench``."""
    return Path(os.environ.get("PIEBENCH_CACHE") or Path.home() / ".cache" / "piebench").expanduser()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise UsageError(f"a recipe value must be JSON data, not {type(obj).__name__}: {obj!r}")


def canonical_json(obj: Any) -> str:
    """Key-sorted compact JSON (tuples as lists, numpy scalars as numbers)."""
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def recipe_hash(recipe: dict[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``recipe`` plus :data:`STORE_VERSION`."""
    return hashlib.sha256(canonical_json({"store_version": STORE_VERSION, "recipe": recipe}).encode()).hexdigest()


def store_dir(recipe: dict[str, Any]) -> Path:
    """Where the store of ``recipe`` lives (``recipe["dataset"]`` names it when present)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(recipe.get("dataset", "store")))
    return cache_root() / "stores" / f"{name}-{recipe_hash(recipe)[:16]}"


def _try_load(folder: Path, digest: str) -> tuple[np.memmap, dict[str, Any]] | None:
    try:
        meta = json.loads((folder / "store.json").read_text())
        if meta.get("recipe_hash") != digest or meta.get("store_version") != STORE_VERSION:
            return None
        versions = np.load(folder / "versions.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if list(versions.shape) != meta.get("shape"):
        return None
    meta["path"] = str(folder)
    return versions, meta


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def build_or_load(recipe: dict[str, Any],
                  builder: Callable[[Callable[[tuple[int, ...]], np.memmap]], dict[str, Any]]
                  ) -> tuple[np.memmap, dict[str, Any]]:
    """The store of ``recipe``: loaded from the cache, or built once by ``builder``.

    ``builder(allocate)`` calls ``allocate(shape)`` once to get a writable uint8 memmap
    ``[1 + U, P, H, W, 3]``, fills it (crop by crop, never the whole store in RAM) and returns
    JSON-able metadata (users, photos, params...). Returns the read-only memmap and the sidecar
    dict (builder metadata plus ``recipe``, ``recipe_hash``, ``shape``, ``build_seconds``,
    ``path``, and ``cache_hit``).
    """
    digest = recipe_hash(recipe)
    final = store_dir(recipe)
    got = _try_load(final, digest)
    if got is None:
        final.parent.mkdir(parents=True, exist_ok=True)
        with _locked(final.with_name(final.name + ".lock")):
            got = _try_load(final, digest)  # another process may have built it meanwhile
            if got is None:
                _build(recipe, digest, final, builder)
                stats["builds"] += 1
                got = _try_load(final, digest)
                if got is None:
                    raise PiebenchError(f"the image store at {final} could not be read back after building it")
                got[1]["cache_hit"] = False
                return got
    stats["hits"] += 1
    got[1]["cache_hit"] = True
    return got


def _build(recipe: dict[str, Any], digest: str, final: Path, builder: Callable[..., dict[str, Any]]) -> None:
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed builder
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():  # a store of another layout version under the same name
        shutil.rmtree(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    start = time.perf_counter()
    allocated: dict[str, Any] = {}

    def allocate(shape: tuple[int, ...]) -> np.memmap:
        shape = tuple(int(s) for s in shape)
        if "array" in allocated:
            raise PiebenchError("a store builder may call allocate() only once")
        if len(shape) != 5 or shape[-1] != 3 or min(shape) < 1:
            raise PiebenchError(f"a store has shape [1 + U, P, H, W, 3], got {shape}")
        allocated["array"] = np.lib.format.open_memmap(tmp / "versions.npy", mode="w+", dtype=np.uint8, shape=shape)
        return allocated["array"]

    try:
        meta = builder(allocate)
        if "array" not in allocated:
            raise PiebenchError("the store builder returned without calling allocate(shape)")
        array = allocated.pop("array")
        array.flush()
        shape = list(array.shape)
        del array
        clash = sorted(set(meta or {}) & set(_RESERVED))
        if clash:
            raise PiebenchError(f"store metadata may not use the reserved key(s) {', '.join(clash)}")
        sidecar = {**_jsonable(meta or {}), "recipe": _jsonable(recipe), "recipe_hash": digest,
                   "store_version": STORE_VERSION, "shape": shape, "created": time.time(),
                   "build_seconds": round(time.perf_counter() - start, 3)}
        with open(tmp / "store.json", "w") as f:
            f.write(jsonio.dumps(sidecar, non_finite="refuse"))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(tmp, final)
        except OSError:
            if _try_load(final, digest) is None:  # lost a race to an identical build: keep theirs
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        allocated.clear()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
