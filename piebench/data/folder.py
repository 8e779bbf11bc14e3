"""A user's own photos as a dataset: ``root/input/NAME.ext`` plus ``root/<user>/NAME.ext``.

Pairs are matched by file stem (any of png / jpg / tif / webp / bmp, 8 or 16 bit). An image of
a user with no input of the same stem is *reference-only*: it can describe the user's taste
(a reference) but is never a training pair or a test photo (its photo has split ``"ref"``;
:meth:`PieDataset.references` lists it, :meth:`PieDataset.support` -- training photos -- does not).
``root/split.json`` (``{"train": [stems], "test": [stems]}`` or ``{stem: split}``) fixes the
split; otherwise a photo is ``test`` when the first 8 hex digits of sha256(stem) / 2**32 fall
below ``test_fraction`` -- deterministic, independent of which other files exist.

The store is built once at ``resolution x resolution`` (scaled to cover, centre-cropped) into
``$PIEBENCH_CACHE/prepared``, keyed by the recipe: the files' names, sizes and modification times.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

from ..errors import UsageError
from ..hashing import canonical_hash
from . import PieDataset
from .images import list_images
from .prepared import PhotoSource, cache_dir, load_store, write_store

INPUT_DIR = "input"
#: The photo reader's behaviour, part of the cache key: stores built before EXIF orientation and
#: ICC conversion were applied are rebuilt, not reused.
READER = "oriented+icc/1"


def scan_folder(root: pathlib.Path) -> tuple[list[str], dict[str, list[pathlib.Path | None]]]:
    """User names (sorted folder names) and, per stem, ``[input or None, user files or None...]``."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise UsageError(f"folder dataset: {root} is not a folder; expected {root}/input/ and {root}/<user>/")
    if not (root / INPUT_DIR).is_dir():
        raise UsageError(f"folder dataset: no {root}/{INPUT_DIR}/ folder; put the unedited photos there and "
                         f"each user's edits in {root}/<user>/ with the same file names")
    users = sorted(d.name for d in root.iterdir()
                   if d.is_dir() and d.name != INPUT_DIR and not d.name.startswith((".", "_")))
    if not users:
        raise UsageError(f"folder dataset: no user folders next to {root}/{INPUT_DIR}/; add {root}/<user>/ "
                         f"with that user's edited photos")
    photos: dict[str, list[pathlib.Path | None]] = {}

    def add(folder: pathlib.Path, slot: int) -> int:
        files = list_images(folder)
        stems: dict[str, pathlib.Path] = {}
        for f in files:
            if f.stem in stems:
                raise UsageError(f"{f}: two files named {f.stem}.* in {folder} ({stems[f.stem].name}); keep one")
            stems[f.stem] = f
            photos.setdefault(f.stem, [None] * (1 + len(users)))[slot] = f
        return len(files)

    if add(root / INPUT_DIR, 0) == 0:
        raise UsageError(f"folder dataset: {root}/{INPUT_DIR}/ holds no images (png, jpg, tif, webp, bmp)")
    for u, name in enumerate(users):
        if add(root / name, 1 + u) == 0:
            raise UsageError(f"folder dataset: {root}/{name}/ holds no images; add that user's edits or remove it")
    return users, photos


def hash_split(stem: str, test_fraction: float) -> str:
    """``test`` for a deterministic ``test_fraction`` of names (by sha256 of the stem), else ``train``."""
    h = int(hashlib.sha256(stem.encode()).hexdigest()[:8], 16) / 2**32
    return "test" if h < test_fraction else "train"


def _split_file(root: pathlib.Path) -> dict[str, str] | None:
    path = root / "split.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"{path} is not valid JSON ({err}); write {{\"train\": [names], \"test\": [names]}}") from None
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        table = {pathlib.Path(str(n)).stem: s for s, names in data.items() for n in names}
    elif isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        table = {pathlib.Path(k).stem: v for k, v in data.items()}
    else:
        raise UsageError(f"{path}: expected {{\"train\": [names], \"test\": [names]}} or {{name: split}}")
    bad = sorted({s for s in table.values()} - {"train", "test"})
    if bad:
        raise UsageError(f"{path}: unknown split(s) {', '.join(bad)}; use train and test")
    return table


def build_folder(root: str | pathlib.Path, resolution: int = 256, test_fraction: float = 0.2,
                 unseen_users: list[str] | None = None, min_refs: int = 1, progress: bool = False) -> PieDataset:
    """The folder dataset at ``root`` (see the module doc), built once into the cache."""
    root = pathlib.Path(root).resolve()
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 16:
        raise UsageError(f"folder dataset: resolution must be an integer >= 16, got {resolution!r}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise UsageError(f"folder dataset: test_fraction must be in [0, 1), got {test_fraction!r}")
    users, found = scan_folder(root)
    table = _split_file(root)
    photos = []
    for stem in sorted(found):
        srcs = found[stem]
        if srcs[0] is None:
            split = "ref"
        elif table is not None:
            if stem not in table:
                raise UsageError(f"{root}/split.json does not list {stem}; add it to train or test")
            split = table[stem]
        else:
            split = hash_split(stem, float(test_fraction))
        photos.append(PhotoSource(stem, stem, split, list(srcs)))
    for u, name in enumerate(users):
        refs = sum(1 for p in photos if p.split in ("train", "ref") and p.sources[1 + u] is not None)
        if refs < min_refs:
            raise UsageError(f"folder dataset: user '{name}' has {refs} reference photos outside the test split, "
                             f"fewer than the {min_refs} references per preference this run needs; add edited "
                             f"photos to {root}/{name}/ or lower --refs")
    stamp = [[str(s.relative_to(root)), s.stat().st_size, s.stat().st_mtime_ns] if s else None
             for p in photos for s in p.sources]
    recipe = {"dataset": "folder", "root": str(root), "resolution": resolution, "users": users,
              "split": "split.json" if table is not None else f"hash:{test_fraction}",
              "reader": READER}
    recipe_hash = canonical_hash({**recipe, "files": stamp, "splits": [p.split for p in photos]})
    out = cache_dir() / "prepared" / f"folder-{recipe_hash}"
    write_store(out, name="folder", recipe=recipe, recipe_hash=recipe_hash, users=users, photos=photos,
                size=(resolution, resolution), require_all=False, progress=progress,
                info={"root": str(root)}, skip_flag=None)
    unseen = list(unseen_users or [])
    return load_store(out, unseen=unseen, name="folder")
