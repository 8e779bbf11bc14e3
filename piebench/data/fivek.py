"""MIT-Adobe FiveK: the layouts in use, the standard splits, and `prepare` into an image store.

Layouts (``--layout``), all read by photo id (``aNNNN``, the leading part of the file name):

* ``official`` -- the MIT release: ``img/dng/<name>.dng`` (or ``raw_photos/*/photos/*.dng``)
  and the experts' 16-bit ProPhoto RGB TIFFs ``img/tiff16_{a..e}/<name>.tif``. The TIFFs are
  converted to sRGB exactly (:mod:`piebench.colour`). The input is rendered from the DNG
  by rawpy (``pip install 'piebench[raw]'``) with the camera white balance, sRGB primaries
  and curve and libraw's auto-brightness: this is NOT the Lightroom "InputZeroed" rendering the
  papers exported, so the input differs from theirs (targets are the same).
* ``starenhancer`` -- ``data/{train,test}/NN-Style/aNNNN.jpg`` (``01-Experts-A`` ...; the
  style folder whose name contains "input" is the input). StarEnhancer's generate script
  squashes train images to 448x448, so train photos are not at their true aspect ratio.
* ``adaint`` -- ``FiveK/input/JPG/480p``, ``FiveK/expert{A..E}/JPG/480p`` and the lists
  ``FiveK/train.txt`` / ``test.txt`` (3D-LUT and AdaInt's 480p sRGB data).
* ``msm`` -- Masked Style Modeling: ``{train,test_ref,test}/<Style>/`` with
  ``<Style>_input/``; ``test`` photos are test, the rest train (references).
* ``folder`` -- ``input/<name>.<ext>`` plus ``<user>/<name>.<ext>`` (see :mod:`.folder`).

Splits (``--split``): ``upe`` (a0001-a4500 train, a4501-a5000 test: DeepUPE, StarEnhancer),
``480p`` (3D-LUT / AdaInt: 4,500 train, 498 test; a0160 and a2952 are in neither list),
``layout`` (the layout's own folders or lists), or a file (JSON ``{"train": [...], "test":
[...]}``). Photos in no split are left out and counted in the store's info.

Sizes (``--size``): ``N`` stores every photo at N x 1.5N (480 -> 480 x 720, FiveK's 3:2),
portrait photos rotated 90 degrees clockwise into landscape, other aspect ratios scaled to cover
and centre-cropped (recorded per photo in the manifest); per-pixel metrics are unchanged by the
rotation. ``full`` keeps every photo at its own size (a run then needs a resolution).
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
from dataclasses import dataclass

from ..errors import UsageError
from ..hashing import canonical_hash
from .folder import scan_folder
from .images import is_image, list_images
from .prepared import PhotoSource, write_store

LAYOUTS = ("official", "starenhancer", "adaint", "msm", "folder")
EXPERTS = ("A", "B", "C", "D", "E")
DEFAULT_SPLIT = {"official": "upe", "starenhancer": "layout", "adaint": "layout", "msm": "layout",
                 "folder": "upe"}

# The 4,500 training photos of the 480p split (3D-LUT / AdaInt annfiles/FiveK/train.txt) as a
# bitmap over a0001..a5000 (bit i-1 of byte (i-1)//8 set = a{i:04d} is in the list).
_480P_TRAIN_BITS = "9//95/9/vv/9///ffv9///3+93/v2//P///3v//8///2/uff+j73/33//3+/7v/////3v//7///v//633v+9///9v/9f+b/3//////3//9l/z+//+z/f2//+37//7r+//7/3vPf//P1///l3+/////9+9/++r7/f//3t//v7//v//v3v/////7///+O//+/+///+7v/+/////////+///7ff//7d//f///7+/+v/+/99v//+/7//f//3/9/n///7b+////dv/++/23fv//X/vf///+/v/v9/3/9///7//7/9////+/3////+jf5/3/+/f8f/+/2fv/////9/v//+8/2v//7fv73///ufv//////v/3v//7/v77f9/Le//78/f//////ff9/+//v//3///3/5X/++9/99ff/7/////9/+/3/9+b////////7////+597//v//+/f/f33//+3ff////9/9/vJ/f//9/f//t/tn///9/9v7v+/////9///+79/7/7///3/v/P/f///z3/P/v//+7e5/3/f/f//+/9v9b//3/9//3//9//1vfvf7+/1/N/////////9/8//e//9z9+/7////+zf7/3/f/////3ff///v7vfvu/3//f//+/33///63++v/////f//29v3///6//////19///b////fvz3/97/v+l/+9/7/5z/+/3/e///3z+t3/3/+f//2+3e/970/ff3//79/99f///Mtz+/r9f7fP/f/+////r///9f////t////3vz/a////v/97////7/f3//e+////+//////3/57//3///7v//7/Q=="
#: In neither 480p list (the 498-image test set leaves them out).
_480P_LEFT_OUT = ("a0160", "a2952")
_ID = re.compile(r"^(a\d{4})", re.IGNORECASE)


def photo_id(stem: str) -> str:
    """``a0001`` from ``a0001-jmac_DSC1459``; other names are kept as they are."""
    m = _ID.match(stem)
    return m.group(1).lower() if m else stem


def upe_split(pid: str) -> str | None:
    """UPE split: a0001-a4500 train, a4501-a5000 test; None for names outside a0001-a5000."""
    m = _ID.match(pid)
    if not m:
        return None
    n = int(m.group(1)[1:])
    return "train" if 1 <= n <= 4500 else "test" if 4501 <= n <= 5000 else None


def split_480p() -> dict[str, str]:
    """The 480p split: photo id -> "train" (4,500) or "test" (498)."""
    bits = base64.b64decode(_480P_TRAIN_BITS)
    out = {}
    for i in range(5000):
        pid = f"a{i + 1:04d}"
        if bits[i // 8] >> (i % 8) & 1:
            out[pid] = "train"
        elif pid not in _480P_LEFT_OUT:
            out[pid] = "test"
    return out


def read_split_file(path: pathlib.Path) -> dict[str, str]:
    """A split file: JSON ``{"train": [ids], "test": [ids]}`` or ``{id: split}``."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"split file {path} is unreadable ({err}); give JSON like "
                         '{"train": ["a0001", ...], "test": [...]}') from None
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        return {photo_id(str(n)): split for split, names in data.items() for n in names}
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {photo_id(str(k)): v for k, v in data.items()}
    raise UsageError(f"split file {path}: expected {{\"train\": [...], \"test\": [...]}} or {{name: split}}")


@dataclass
class Scan:
    """What a layout holds: user names and, per photo id, the sources and the layout's own split."""

    users: list[str]
    photos: dict[str, PhotoSource]
    require_all: bool
    notes: list[str]


def _dirs(root: pathlib.Path, *candidates: str) -> pathlib.Path | None:
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    return None


def _by_id(files: list[pathlib.Path]) -> dict[str, pathlib.Path]:
    return {photo_id(f.stem): f for f in files}


def scan_official(root: pathlib.Path) -> Scan:
    """``img/dng`` + ``img/tiff16_{a..e}`` (the MIT release)."""
    dng = _dirs(root, "img/dng", "dng")
    inputs = list_images(dng) if dng else sorted(p for p in root.glob("raw_photos/*/photos/*") if is_image(p))
    if not inputs:
        raise UsageError(f"official layout: no DNG inputs in {root}/img/dng (or raw_photos/*/photos); "
                         f"check --root, or choose another --layout")
    experts = {e: _dirs(root, f"img/tiff16_{e.lower()}", f"tiff16_{e.lower()}") for e in EXPERTS}
    experts = {e: d for e, d in experts.items() if d is not None}
    if not experts:
        raise UsageError(f"official layout: no expert folders {root}/img/tiff16_a..e; check --root")
    files = {e: _by_id(list_images(d)) for e, d in experts.items()}
    photos = {}
    for pid, src in _by_id(inputs).items():
        expected = [files[e].get(pid) or (experts[e] / f"{src.stem}.tif") for e in experts]
        photos[pid] = PhotoSource(pid, pid, "", [src, *expected], [None] + ["prophoto"] * len(experts))
    return Scan([f"expert{e}" for e in experts], photos, True, [])


def scan_starenhancer(root: pathlib.Path) -> Scan:
    """``{train,test}/NN-Style/aNNNN.jpg`` (StarEnhancer's generated data)."""
    base = root / "data" if (root / "data" / "train").is_dir() or (root / "data" / "test").is_dir() else root
    splits = {s: base / s for s in ("train", "test") if (base / s).is_dir()}
    if not splits:
        raise UsageError(f"starenhancer layout: no train/ or test/ folder in {root} (or {root}/data); check --root")
    styles = sorted({d.name for s in splits.values() for d in s.iterdir() if d.is_dir() and "-" in d.name})
    inputs = [s for s in styles if "input" in s.lower()]
    if len(inputs) != 1:
        raise UsageError(f"starenhancer layout: expected one style folder named like NN-Input in "
                         f"{base}/train, found {inputs or 'none'} among {styles}")
    others = [s for s in styles if s != inputs[0]]

    def user_name(style: str) -> str:
        m = re.search(r"experts?-?_?([A-E])$", style, re.IGNORECASE)
        return f"expert{m.group(1).upper()}" if m else re.sub(r"^\d+-", "", style)

    photos = {}
    for split, d in splits.items():
        for src in list_images(d / inputs[0]) if (d / inputs[0]).is_dir() else []:
            pid = photo_id(src.stem)
            found = [_find(d / s, src.stem) for s in others]
            expected = [f or (d / s / src.name) for f, s in zip(found, others, strict=True)]
            photos[pid] = PhotoSource(pid, pid, split, [src, *expected])
    notes = ["valid/ ignored (StarEnhancer's valid set is its test set)"] if (base / "valid").is_dir() else []
    return Scan([user_name(s) for s in others], photos, True, notes)


def _find(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
    if not folder.is_dir():
        return None
    for ext in (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".JPG", ".PNG", ".TIF"):
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    return None


def scan_adaint(root: pathlib.Path) -> Scan:
    """``FiveK/input/JPG/480p`` + ``FiveK/expert{A..E}/JPG/480p`` + ``train.txt`` / ``test.txt``."""
    base = _dirs(root, "FiveK", "fiveK", "data/FiveK") or root
    inp = _dirs(base, "input/JPG/480p")
    if inp is None:
        raise UsageError(f"adaint layout: no {base}/input/JPG/480p (the sRGB 480p inputs); check --root")
    experts = {e: _dirs(base, f"expert{e}/JPG/480p") for e in EXPERTS}
    experts = {e: d for e, d in experts.items() if d is not None}
    if not experts:
        raise UsageError(f"adaint layout: no {base}/expertC/JPG/480p (nor expert A-E); check --root")
    lists = {}
    for split in ("train", "test"):
        f = base / f"{split}.txt"
        if f.is_file():
            lists.update({photo_id(n): split for n in f.read_text().split()})
    photos = {}
    for src in list_images(inp):
        pid = photo_id(src.stem)
        expected = [_find(d, src.stem) or (d / src.name) for d in experts.values()]
        photos[pid] = PhotoSource(pid, pid, lists.get(pid, ""), [src, *expected])
    notes = [] if lists else ["no train.txt/test.txt in the layout: the built-in 480p lists are used"]
    return Scan([f"expert{e}" for e in experts], photos, True, notes)


def scan_msm(root: pathlib.Path) -> Scan:
    """``{train,test_ref,test}/<Style>`` with ``<Style>_input`` (Masked Style Modeling)."""
    base = root / "data" if (root / "data" / "test").is_dir() else root
    dirs = {d: ("test" if d == "test" else "train") for d in ("train", "valid", "valid_ref", "test_ref", "test")
            if (base / d).is_dir()}
    if not dirs:
        raise UsageError(f"msm layout: no test/, test_ref/ or train/ folder in {root}; check --root")
    users: list[str] = []
    photos: dict[str, PhotoSource] = {}
    entries: list[tuple[str, str, pathlib.Path, pathlib.Path]] = []  # user, split, input, target
    for d, split in dirs.items():
        for style in sorted(p for p in (base / d).iterdir() if p.is_dir() and not p.name.endswith("_input")):
            inp = base / d / f"{style.name}_input"
            if not inp.is_dir():
                raise UsageError(f"msm layout: {style} has no {inp.name} folder next to it; add the inputs")
            if style.name not in users:
                users.append(style.name)
            for tgt in list_images(style):
                src = _find(inp, tgt.stem)
                if src is None:
                    raise UsageError(f"{tgt}: no input {inp}/{tgt.stem}.* for it; add it or remove {tgt.name}")
                entries.append((style.name, split, src, tgt))
    sizes: dict[str, int] = {}
    conflicts = 0
    for user, split, src, tgt in entries:
        key = src.stem
        if key in sizes and sizes[key] != src.stat().st_size:
            key = f"{user}/{src.stem}"  # a different photo with the same name
        sizes.setdefault(key, src.stat().st_size)
        photo = photos.get(key)
        if photo is None:
            photo = photos[key] = PhotoSource(key, key, split, [src] + [None] * 0)
        elif photo.split != split:
            conflicts += 1
            photo.split = "test"  # never a reference for anyone while it is someone's test photo
        photo.sources.extend([None] * (1 + len(users) - len(photo.sources)))
        photo.sources[1 + users.index(user)] = tgt
    for photo in photos.values():
        photo.sources.extend([None] * (1 + len(users) - len(photo.sources)))
    notes = ([f"{conflicts} photos are test photos of one style and references of another: kept as test"]
             if conflicts else [])
    names = [f"expert{m.group(1).upper()}" if (m := re.fullmatch(r"experts?_?([A-E])", u, re.IGNORECASE)) else u
             for u in users]
    return Scan(names, photos, False, notes)


def scan_folder_layout(root: pathlib.Path) -> Scan:
    """``input/`` + ``<user>/`` named by FiveK id; splits by id."""
    users, photos = scan_folder(root)
    out = {}
    for stem, srcs in photos.items():
        pid = photo_id(stem)
        out[pid] = PhotoSource(pid, pid, "", list(srcs))
    return Scan(users, out, False, [])


SCANNERS = {"official": scan_official, "starenhancer": scan_starenhancer, "adaint": scan_adaint,
            "msm": scan_msm, "folder": scan_folder_layout}


def parse_size(size: str | int) -> tuple[int, int] | None:
    """``"480"`` -> (480, 720); ``"full"`` -> None."""
    if str(size).lower() == "full":
        return None
    try:
        n = int(size)
    except ValueError:
        raise UsageError(f"--size must be a short-edge length in pixels (e.g. 480) or 'full', got {size!r}") from None
    if n < 16:
        raise UsageError(f"--size must be at least 16 pixels, got {n}")
    return n, int(round(n * 1.5))


def canonical_split(assign: dict[str, str | None], name: str) -> str:
    """``upe`` or ``480p`` when ``assign`` is that standard split on these photos, else ``name``."""
    kept = {pid: s for pid, s in assign.items() if s in ("train", "test")}
    if kept and all(upe_split(pid) == s for pid, s in kept.items()):
        return "upe"
    table = split_480p()
    if kept and all(table.get(pid) == s for pid, s in kept.items()):
        return "480p"
    return name


def default_store(root: str | pathlib.Path, layout: str, size: str | int, split: str | None) -> str:
    """The store name prepare uses without ``--out``: ``fivek-<split>-<size>`` (where protocols look)."""
    name = split or DEFAULT_SPLIT.get(layout, "upe")
    if name == "layout":
        name = {"starenhancer": "upe", "adaint": "480p"}.get(layout, layout)
    elif name not in ("upe", "480p"):
        name = pathlib.Path(name).stem
    return f"fivek-{name}-{size}"


def prepare_fivek(root: str | pathlib.Path, layout: str, out: str | pathlib.Path, *, size: str | int = 480,
                  split: str | None = None, users: list[str] | None = None, skip_bad: bool = False,
                  progress: bool = True) -> pathlib.Path:
    """Read FiveK in ``layout`` under ``root`` and write the store ``out`` (see the module doc)."""
    root = pathlib.Path(root)
    if layout not in SCANNERS:
        raise UsageError(f"unknown --layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise UsageError(f"--root {root}: folder not found")
    dims = parse_size(size)
    scan = SCANNERS[layout](root)
    split = split or DEFAULT_SPLIT[layout]
    if split == "upe":
        assign = {pid: upe_split(pid) for pid in scan.photos}
    elif split == "480p":
        table = split_480p()
        assign = {pid: table.get(pid) for pid in scan.photos}
    elif split == "layout":
        assign = {pid: p.split or None for pid, p in scan.photos.items()}
        if layout == "adaint" and not any(assign.values()):
            table = split_480p()
            assign = {pid: table.get(pid) for pid in scan.photos}
        if layout in ("official", "folder"):
            raise UsageError(f"--split layout: the {layout} layout has no split of its own; use upe, 480p or a file")
    else:
        table = read_split_file(pathlib.Path(split))
        assign = {pid: table.get(pid) for pid in scan.photos}
    split = canonical_split(assign, split)
    keep = list(range(len(scan.users)))
    if users:
        wanted = [u if u in scan.users else f"expert{u.upper()}" for u in users]
        bad = [u for u, w in zip(users, wanted, strict=True) if w not in scan.users]
        if bad:
            raise UsageError(f"--users: no user {', '.join(bad)} in this layout; it has {', '.join(scan.users)}")
        keep = [scan.users.index(w) for w in wanted]
    photos = []
    for pid in sorted(scan.photos):
        if assign.get(pid) not in ("train", "test"):
            continue
        p = scan.photos[pid]
        spaces = p.colourspace or [None] * len(p.sources)
        photos.append(PhotoSource(p.name, p.scene, assign[pid], [p.sources[0]] + [p.sources[1 + k] for k in keep],
                                  [spaces[0]] + [spaces[1 + k] for k in keep]))
    left_out = len(scan.photos) - len(photos)
    names = [scan.users[k] for k in keep]
    recipe = {"dataset": "fivek", "layout": layout, "split": split, "size": list(dims) if dims else "full",
              "users": names, "root": str(root.resolve())}
    recipe_hash = canonical_hash({**recipe, "photos": [[p.name, p.split, [str(s) for s in p.sources]] for p in photos]})
    if not photos:
        raise UsageError(f"no photos of {root} fall in the {split} split (found {len(scan.photos)} photos); "
                         f"check --split")
    info = {"layout": layout, "split": split, "left_out_by_split": left_out, "notes": scan.notes}
    return write_store(out, name="fivek", recipe=recipe, recipe_hash=recipe_hash, users=names, photos=photos,
                       size=dims, skip_bad=skip_bad, require_all=scan.require_all,
                       half_size_raw=dims is not None, progress=progress, info=info)
