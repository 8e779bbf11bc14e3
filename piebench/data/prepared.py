"""Prepared image stores on disk: written once (streamed, resumable), read as memory maps.

A store directory holds

* ``versions.u8`` -- raw uint8, photo-major ``[P, 1 + U, H, W, 3]`` (read back as the
  ``[1 + U, P, H, W, 3]`` view :class:`~piebench.data.PieDataset` wants, no copy); or, for
  ``size="full"``, ``full/NNNNN.npy`` per photo ``[1 + U, h, w, 3]`` at the source resolution;
* ``store.json`` -- users, photos (name, scene, split), availability, recipe and its hash;
* ``manifest.json`` -- per photo the source files with byte size, pixel size, bits, colour space,
  sha256, the fit applied (rotation, crop); and every photo skipped with the reason.

Writing goes to ``STORE.partial/`` with an append-only ``progress.jsonl`` (one line per photo
after its pixels are written), so a killed prepare continues where it stopped when rerun with the
same options; ``STORE`` itself appears only complete (renamed at the end).
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from .. import jsonio
from ..errors import UsageError
from ..hashing import canonical_hash
from . import PhotoInfo, PieDataset, UserInfo
from .icc import description
from .images import Image, fit, read_image, same_shape

FORMAT = "piebench-store/1"


@dataclass
class PhotoSource:
    """One photo to prepare: its name, scene, split and a source file (or None) per version.

    ``sources[0]`` is the input; ``sources[1 + u]`` user ``u``'s retouch (None = the user lacks
    it; allowed only when ``required`` is False for that user). ``colourspace`` forces a colour
    space per version (None = from the file).
    """

    name: str
    scene: str
    split: str
    sources: list[pathlib.Path | None]
    colourspace: list[str | None] = field(default_factory=list)


def atomic_json(path: pathlib.Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(jsonio.dumps(obj, non_finite="refuse", indent=1))
    os.replace(tmp, path)


def cache_dir() -> pathlib.Path:
    """``$PIEBENCH_CACHE`` or ``~/.cache/piebench``."""
    return pathlib.Path(os.environ.get("PIEBENCH_CACHE") or pathlib.Path.home() / ".cache" / "piebench")


def _read_log(path: pathlib.Path) -> list[dict]:
    entries = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: that photo is redone
    return entries


def write_store(out: str | pathlib.Path, *, name: str, recipe: dict, recipe_hash: str, users: list[str],
                photos: list[PhotoSource], size: tuple[int, int] | None, skip_bad: bool = False,
                require_all: bool = True, half_size_raw: bool = False, progress: bool = True,
                info: dict | None = None, skip_flag: str | None = "--skip-bad") -> pathlib.Path:
    """Prepare ``photos`` into the store ``out`` (``size`` = (H, W), or None for full resolution).

    Resumes ``out.partial`` when it was started with the same ``recipe_hash``; returns ``out``
    at once when it is already complete with that hash. A bad photo raises UsageError naming
    the file, unless ``skip_bad`` (then it is listed in the manifest; ``skip_flag`` is the option the
    error suggests, None where the command has none). ``require_all``: a missing
    retouch is an error (FiveK's experts retouched every photo) rather than an unavailable entry.
    """
    out = pathlib.Path(out)
    if out.exists():
        meta = _read_meta(out)
        if meta.get("recipe_hash") == recipe_hash:
            return out
        raise UsageError(f"{out} already holds a store prepared with other options (recipe "
                         f"{meta.get('recipe_hash')}); choose another --out or delete it")
    if not photos:
        raise UsageError(f"no photos to prepare for {name}; check --root and --layout")
    partial = out.with_name(out.name + ".partial")
    header = {"format": FORMAT, "recipe_hash": recipe_hash, "size": list(size) if size else "full",
              "users": users, "capacity": len(photos)}
    if partial.exists():
        try:
            old = json.loads((partial / "header.json").read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        if old != header:
            raise UsageError(f"{partial} is an unfinished prepare with other options; rerun with the "
                             f"same options to continue it, or delete it to start again")
    else:
        partial.mkdir(parents=True)
        if size:
            with open(partial / "versions.u8", "wb") as f:
                f.truncate(len(photos) * (1 + len(users)) * size[0] * size[1] * 3)
        else:
            (partial / "full").mkdir()
        atomic_json(partial / "header.json", header)
    log_path = partial / "progress.jsonl"
    entries = _read_log(log_path)
    with open(log_path, "w") as f:  # drop a trailing cut line, if any
        f.writelines(jsonio.dumps(e) + "\n" for e in entries)
    done = {e["name"] for e in entries}
    slots = sum(1 for e in entries if "slot" in e)
    todo = [p for p in photos if p.name not in done]
    bar = _progress(len(photos), len(done), name, progress)
    slot_bytes = (1 + len(users)) * size[0] * size[1] * 3 if size else 0
    with open(log_path, "a") as log, open(partial / "versions.u8", "r+b") if size else _null() as data:
        for photo in todo:
            try:
                pixels, record = _prepare_photo(photo, users, size, require_all, half_size_raw)
            except UsageError as err:
                if not skip_bad:
                    how = f"or rerun with {skip_flag} to skip it" if skip_flag else "or fix or remove that file"
                    raise UsageError(f"{err} ({how}; the {slots} photos done so far are kept in {partial} and a "
                                     f"rerun continues)") from None
                log.write(jsonio.dumps({"name": photo.name, "skipped": str(err)}) + "\n")
                log.flush()
                bar(1)
                continue
            if size:
                data.seek(slots * slot_bytes)
                data.write(np.ascontiguousarray(np.stack(pixels)).tobytes())
                data.flush()
            else:
                tmp = partial / "full" / f"{slots:05d}.tmp.npy"
                np.save(tmp, np.stack(pixels))
                os.replace(tmp, partial / "full" / f"{slots:05d}.npy")
            record["slot"] = slots
            log.write(jsonio.dumps(record) + "\n")
            log.flush()
            slots += 1
            bar(1)
    bar(None)
    return _finish(partial, out, name=name, recipe=recipe, recipe_hash=recipe_hash, users=users, size=size,
                   photos=photos, info=info or {})


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _progress(total: int, start: int, name: str, enabled: bool) -> Callable[[int | None], None]:
    if not enabled:
        return lambda n: None

    bar = tqdm(total=total, initial=start, desc=f"prepare {name}", unit="photo")

    def step(n: int | None) -> None:
        if n is None:
            bar.close()
        else:
            bar.update(n)

    return step


def _prepare_photo(photo: PhotoSource, users: list[str], size: tuple[int, int] | None, require_all: bool,
                   half_size_raw: bool) -> tuple[list[np.ndarray], dict]:
    spaces = photo.colourspace or [None] * len(photo.sources)
    if photo.sources[0] is None and photo.split != "ref":
        raise UsageError(f"photo {photo.name}: no input image; add it, or remove the retouches of {photo.name}")
    images: list[Image | None] = []
    for v, src in enumerate(photo.sources):
        if src is None or (v > 0 and not src.exists()):
            if require_all and v > 0:
                where = f" {src}" if src is not None else ""
                raise UsageError(f"photo {photo.name}: missing the file of user '{users[v - 1]}'{where}; "
                                 f"restore it")
            images.append(None)
            continue
        images.append(read_image(src, spaces[v], half_size=half_size_raw))
    present = [img for img in images if img is not None]
    if not present:
        raise UsageError(f"photo {photo.name}: no image file at all; remove it from the layout")
    first = present[0]
    for img in present[1:]:
        if img is not None and not same_shape(first, img):
            raise UsageError(f"{img.path}: size {img.size[1]}x{img.size[0]} does not match the input "
                             f"{first.path} ({first.size[1]}x{first.size[0]}); export both uncropped at the "
                             f"same aspect ratio, or remove the pair")
    pixels, sources = [], []
    target = size
    if size is None:  # full: every version at the input's size
        target = first.size
    for img in images:
        if img is None:  # a user without this photo, or the input of a reference-only photo
            pixels.append(np.zeros((*target, 3), np.uint8))
            sources.append(None)
            continue
        arr, how = fit(img, *target, rotate=size is not None)
        pixels.append(arr)
        sources.append({"file": img.path, "bytes": img.nbytes, "size": [img.size[0], img.size[1]],
                        "bits": img.bits, "colourspace": img.colourspace, "sha256": img.sha256, "fit": how,
                        "orientation": img.orientation, "icc": _icc_name(img.icc)})
    return pixels, {"name": photo.name, "scene": photo.scene, "split": photo.split,
                    "available": [s is not None for s in sources[1:]], "sources": sources}


def _icc_name(icc: bytes | None) -> str | None:
    """The embedded profile's description for the manifest (what the reader converted from)."""
    return (description(icc) or "unnamed") if icc else None


def _finish(partial: pathlib.Path, out: pathlib.Path, *, name: str, recipe: dict, recipe_hash: str,
            users: list[str], size: tuple[int, int] | None, photos: list[PhotoSource], info: dict) -> pathlib.Path:
    entries = _read_log(partial / "progress.jsonl")
    kept = sorted((e for e in entries if "slot" in e), key=lambda e: e["slot"])
    skipped = [{"name": e["name"], "reason": e["skipped"]} for e in entries if "skipped" in e]
    if not kept:
        raise UsageError(f"every photo of {name} was skipped as bad ({skipped[0]['reason'] if skipped else ''}); "
                         f"nothing to store")
    if size:
        with open(partial / "versions.u8", "r+b") as f:
            f.truncate(len(kept) * (1 + len(users)) * size[0] * size[1] * 3)
    meta = {"format": FORMAT, "name": name, "recipe": recipe, "recipe_hash": recipe_hash,
            "size": list(size) if size else "full", "users": users,
            "photos": [{"name": e["name"], "scene": e["scene"], "split": e["split"]} for e in kept],
            "available": [[bool(e["available"][u]) for e in kept] for u in range(len(users))],
            "info": info}
    manifest = {"name": name, "recipe": recipe, "recipe_hash": recipe_hash,
                "photos": [{k: e[k] for k in ("name", "split", "sources")} for e in kept],
                "skipped": skipped,
                "splits": {s: sum(e["split"] == s for e in kept) for s in sorted({e["split"] for e in kept})}}
    atomic_json(partial / "manifest.json", manifest)
    atomic_json(partial / "store.json", meta)
    (partial / "progress.jsonl").unlink()
    (partial / "header.json").unlink()
    os.replace(partial, out)
    return out


def _read_meta(path: pathlib.Path) -> dict:
    try:
        meta = json.loads((path / "store.json").read_text())
    except FileNotFoundError:
        hint = " (an unfinished prepare: rerun the same prepare command to finish it)" \
            if path.with_name(path.name + ".partial").exists() or path.name.endswith(".partial") else ""
        raise UsageError(f"{path} is not a prepared piebench store (no store.json){hint}; "
                         f"create one with `piebench data prepare`") from None
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"{path}/store.json is unreadable ({err}); prepare the store again") from None
    if meta.get("format") != FORMAT:
        raise UsageError(f"{path}: store format {meta.get('format')!r} is not {FORMAT!r}; prepare it again")
    return meta


def read_store_meta(path: str | pathlib.Path) -> dict:
    """The ``store.json`` of a prepared store, or a UsageError saying it is not one."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise UsageError(f"store not found: {path}; create it with `piebench data prepare`")
    return _read_meta(path)


def open_versions(path: pathlib.Path, meta: dict) -> np.ndarray:
    """The read-only ``[1 + U, P, H, W, 3]`` memory-mapped view of a fixed-size store."""
    h, w = meta["size"]
    shape = (len(meta["photos"]), 1 + len(meta["users"]), h, w, 3)
    mm = np.memmap(path / "versions.u8", dtype=np.uint8, mode="r", shape=shape)
    return mm.transpose(1, 0, 2, 3, 4)


def full_photo(path: pathlib.Path, slot: int) -> np.ndarray:
    """Every version ``[1 + U, h, w, 3]`` of photo ``slot`` of a full-resolution store."""
    return np.load(path / "full" / f"{slot:05d}.npy", mmap_mode="r")


def load_store(path: str | pathlib.Path, *, users: Iterable[str] | None = None, unseen: Iterable[str] = (),
               size: tuple[int, int] | None = None, name: str | None = None, progress: bool = False) -> PieDataset:
    """A :class:`PieDataset` over a prepared store.

    users: the users to keep (store order; None = all); unseen: those among them held out of
    training (they go last); size: (H, W) to resize to (required for a full-resolution store).
    The plain case is a zero-copy memory map; a reordering, a subset that is not a leading
    block, or a resize is written once to ``$PIEBENCH_CACHE`` (streamed photo by photo).
    """
    path = pathlib.Path(path).resolve()
    meta = read_store_meta(path)
    names = list(meta["users"])
    keep = list(users) if users is not None else names
    unseen = list(unseen)
    for u in keep + unseen:
        if u not in names:
            raise UsageError(f"store {path} has no user '{u}'; its users: {', '.join(names)}")
    order = [u for u in keep if u not in unseen] + [u for u in unseen if u in keep]
    missing_unseen = [u for u in unseen if u not in keep]
    if missing_unseen:
        order += missing_unseen
    idx = [names.index(u) for u in order]
    stored = tuple(meta["size"]) if meta["size"] != "full" else None
    if stored is None and size is None:
        raise UsageError(f"{path} is a full-resolution store (variable sizes); give a resolution "
                         f"(e.g. --set eval.data.resolution=480) or prepare with --size 480")
    target = tuple(size) if size else stored
    if stored == target and idx == list(range(len(idx))):
        versions = open_versions(path, meta)[: 1 + len(idx)]
        recipe_hash = meta["recipe_hash"] if len(idx) == len(names) else canonical_hash([meta["recipe_hash"], idx])
    else:
        recipe_hash = canonical_hash([meta["recipe_hash"], idx, list(target)])
        versions = _derived(path, meta, idx, target, recipe_hash, progress)
    avail = np.array(meta["available"], bool).reshape(len(names), -1)[idx] if names else None
    seen_set = {u for u in order if u not in unseen}
    slots = [0] + [1 + i for i in idx]
    return PieDataset(
        name=name or meta["name"], versions=versions,
        users=[UserInfo(i, u, u in seen_set) for i, u in enumerate(order)],
        photos=[PhotoInfo(i, p["name"], p["scene"], p["split"]) for i, p in enumerate(meta["photos"])],
        recipe={**meta["recipe"], "users": order, "unseen": unseen, "size": list(target)},
        recipe_hash=recipe_hash, available=None if avail is None or avail.all() else avail,
        info={**meta.get("info", {}), "store": str(path)},
        full_versions=(lambda p: np.asarray(full_photo(path, p)[slots])) if stored is None else None)


def _derived(path: pathlib.Path, meta: dict, idx: list[int], size: tuple[int, int], key: str,
             progress: bool) -> np.ndarray:
    """A reordered / resized copy of a store in the cache (memory-mapped, written once)."""
    out = cache_dir() / "prepared" / f"{meta['name']}-{key}"
    shape = (len(meta["photos"]), 1 + len(idx), size[0], size[1], 3)
    if not (out / "done").exists():
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "versions.u8.tmp"
        mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        fixed = meta["size"] != "full"
        src = open_versions(path, meta) if fixed else None
        bar = _progress(shape[0], 0, f"{meta['name']} at {size[0]}x{size[1]}", progress)
        for p in range(shape[0]):
            photo = src[:, p] if fixed else full_photo(path, p)
            for j, v in enumerate([0] + [1 + i for i in idx]):
                mm[p, j] = fit(np.asarray(photo[v]), *size)[0]
            bar(1)
        bar(None)
        mm.flush()
        del mm
        os.replace(tmp, out / "versions.u8")
        (out / "done").write_text("ok\n")
    mm = np.memmap(out / "versions.u8", dtype=np.uint8, mode="r", shape=shape)
    return mm.transpose(1, 0, 2, 3, 4)
