"""Lightroom / Adobe Camera Raw ``.xmp`` presets as synthetic users.

:func:`read_preset` reads the ``crs:`` settings of a preset (as attributes of
``rdf:Description`` or as child elements, including the ``ToneCurvePV2012`` point list) and maps
them onto :class:`~piebench.data.retouch.RetouchParams`:

* ``Exposure2012``, ``Contrast2012``, ``Highlights2012``, ``Shadows2012``, ``Whites2012``,
  ``Blacks2012``, ``Parametric{Shadows,Darks,Lights,Highlights}``, ``Saturation``,
  ``Vibrance``, ``{Hue,Saturation,Luminance}Adjustment<Band>``, ``SplitToning*``,
  ``ToneCurvePV2012`` -- as :data:`~piebench.data.retouch.LIGHTROOM` scales them;
* ``IncrementalTemperature`` / ``IncrementalTint`` (JPEG presets) directly; absolute
  ``Temperature`` (kelvin) / ``Tint`` (raw presets) relative to an as-shot white balance of
  5500 K and tint 0: ``temperature = (1e6 / 5500 - 1e6 / T) / 100`` (mired difference / 100,
  warmer when T is higher) and ``tint = Tint / 150``, both clipped to [-1, 1].

Every other setting with an effect (``Clarity2012``, ``Sharpness``, grain, ...) is not emulated:
:func:`synth` lists them all in ONE warning. Descriptive keys (name, version, UUID, ...) are
silently skipped. :func:`synth` writes a ``folder`` dataset: ``out/input/NAME.png`` and
``out/<preset>/NAME.png`` plus ``out/presets.json`` with each user's parameters.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image as PILImage

from .. import jsonio
from ..errors import UsageError
from ..outputs import refuse_overlap
from .images import list_images, quantise, read_image, resize, to_srgb
from .retouch import LIGHTROOM, RetouchParams, retouch

CRS = "http://ns.adobe.com/camera-raw-settings/1.0/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
#: Settings that describe the preset rather than edit the photo.
METADATA = {
    "Version", "ProcessVersion", "PresetType", "Cluster", "UUID", "SupportsAmount", "SupportsAmount2",
    "SupportsColor", "SupportsMonochrome", "SupportsHighDynamicRange", "SupportsNormalDynamicRange",
    "SupportsSceneReferred", "SupportsOutputReferred", "CameraModelRestriction", "Copyright",
    "ContactInfo", "Name", "ShortName", "SortName", "Group", "Description", "HasSettings", "WhiteBalance",
    "ToneCurveName", "ToneCurveName2012", "AlreadyApplied", "RequiresRGBTables", "Amount", "Look",
}
SUPPORTED = {lr for lr, _ in LIGHTROOM.values()} | {"ToneCurvePV2012", "Temperature", "Tint"}
AS_SHOT_KELVIN = 5500.0


@dataclass
class Preset:
    """A preset file read: its name, the mapped parameters, raw settings and what was not emulated."""

    name: str
    path: str
    params: RetouchParams
    settings: dict[str, Any]
    unsupported: list[str] = field(default_factory=list)


def _number(text: str) -> float | str:
    try:
        return float(text.strip())
    except ValueError:
        return text.strip()


def _parse(path: pathlib.Path) -> dict[str, Any]:
    try:
        root = ET.fromstring(path.read_bytes())
    except (OSError, ET.ParseError) as err:
        raise UsageError(f"{path}: not a readable XMP preset ({err}); export the preset again from "
                         f"Lightroom (Export... -> .xmp) or remove it") from None
    settings: dict[str, Any] = {}
    for el in root.iter():
        for key, value in el.attrib.items():
            if key.startswith(f"{{{CRS}}}"):
                settings[key[len(CRS) + 2:]] = _number(value)
        if el.tag.startswith(f"{{{CRS}}}"):
            name = el.tag[len(CRS) + 2:]
            items = [li.text or "" for li in el.iter(f"{{{RDF}}}li")]
            if items:
                settings[name] = items if el.find(f"{{{RDF}}}Seq") is not None else items[0]
            elif el.text and el.text.strip():
                settings[name] = _number(el.text)
    if not settings:
        raise UsageError(f"{path}: no crs: (Camera Raw) settings found; is it a Lightroom/ACR .xmp preset?")
    return settings


def _curve(path: pathlib.Path, items: Any) -> list[tuple[float, float]]:
    points = []
    for item in items if isinstance(items, list) else [items]:
        nums = re.findall(r"-?\d+(?:\.\d+)?", str(item))
        if len(nums) != 2:
            raise UsageError(f"{path}: ToneCurvePV2012 point {item!r} is not 'x, y'; fix or remove the curve")
        points.append((float(nums[0]), float(nums[1])))
    if len(points) < 2 or any(b[0] <= a[0] for a, b in zip(points, points[1:], strict=False)):
        raise UsageError(f"{path}: ToneCurvePV2012 needs at least two points with increasing x")
    return points


def read_preset(path: str | pathlib.Path) -> Preset:
    """Read one ``.xmp`` preset (see the module doc for the mapping)."""
    path = pathlib.Path(path)
    settings = _parse(path)
    mapped: dict[str, Any] = {}
    for key, value in settings.items():
        if key in SUPPORTED and key not in ("ToneCurvePV2012", "Temperature", "Tint"):
            if not isinstance(value, float) or not np.isfinite(value):
                raise UsageError(f"{path}: crs:{key}={value!r} is not a finite number; fix the preset")
            mapped[key] = value
    if "ToneCurvePV2012" in settings:
        mapped["ToneCurvePV2012"] = _curve(path, settings["ToneCurvePV2012"])
    for key in ("Temperature", "Tint"):
        if isinstance(settings.get(key), float) and not np.isfinite(settings[key]):
            raise UsageError(f"{path}: crs:{key}={settings[key]!r} is not a finite number; fix the preset")
    if "IncrementalTemperature" not in mapped and isinstance(settings.get("Temperature"), float):
        kelvin = settings["Temperature"]
        if kelvin <= 0:
            raise UsageError(f"{path}: crs:Temperature={kelvin} is not a colour temperature in kelvin")
        mired = 1e6 / AS_SHOT_KELVIN - 1e6 / kelvin
        mapped["IncrementalTemperature"] = float(np.clip(mired / 100.0, -1, 1)) * 100.0
    if "IncrementalTint" not in mapped and isinstance(settings.get("Tint"), float):
        mapped["IncrementalTint"] = float(np.clip(settings["Tint"] / 150.0, -1, 1)) * 100.0
    params = RetouchParams.from_lightroom(mapped)
    unsupported = sorted(k for k, v in settings.items()
                         if k not in SUPPORTED and k not in METADATA and v not in (0.0, "", "False", "false"))
    name = pathlib.Path(path).stem
    return Preset(name=name, path=str(path), params=params, settings=settings, unsupported=unsupported)


def read_presets(folder: str | pathlib.Path) -> list[Preset]:
    """Every ``*.xmp`` preset in ``folder`` (sorted by name)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--presets {folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xmp" and not p.name.startswith("."))
    if not files:
        raise UsageError(f"--presets {folder}: no .xmp presets in it (Lightroom: Presets > Export...; "
                         f".lrtemplate files must be re-exported as .xmp)")
    return [read_preset(f) for f in files]


def _user_name(stem: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "preset"
    if base == "input":
        base = "preset_input"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _resize_long(image: np.ndarray, max_size: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max_size <= 0 or max(h, w) <= max_size:
        return image
    s = max_size / max(h, w)
    return resize(image, max(1, round(h * s)), max(1, round(w * s))).astype(np.float32) / 255.0


def synth(presets: str | pathlib.Path, photos: str | pathlib.Path, out: str | pathlib.Path, *,
          max_size: int = 1024, warn: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Apply every preset to every photo and write a ``folder`` dataset at ``out``.

    Every preset is read and validated first (a bad one names its file; nothing is written).
    ``out`` must lie outside ``presets`` and ``photos`` (and must not hold them). The dataset is
    built in a hidden folder beside ``out`` and renamed into place, so an interrupted synth leaves
    no half dataset. An existing, non-empty ``out`` is refused unless ``overwrite`` -- and then
    only when it is an earlier synth output (it has ``presets.json``); it is replaced as a whole,
    so its old preset folders do not linger as users.

    Returns ``{"users": [...], "photos": [...], "unsupported": {setting: [preset files]},
    "replaced": [files]}``; with ``warn`` the unsupported settings are also reported in one
    ``UserWarning``.
    """
    photos = pathlib.Path(photos)
    out = pathlib.Path(out)
    refuse_overlap(out, "--out", [("--photos", photos), ("--presets", presets)])
    read = read_presets(presets)
    stems = _photo_stems(photos)
    replaced = _replaceable(out, overwrite)
    taken: set[str] = set()
    users = [_user_name(p.name, taken) for p in read]
    _write_dataset(out, stems, users, read, max_size, replace=bool(replaced))
    unsupported: dict[str, list[str]] = {}
    for p in read:
        for key in p.unsupported:
            unsupported.setdefault(key, []).append(pathlib.Path(p.path).name)
    if unsupported and warn:
        warnings.warn(unsupported_message(unsupported), UserWarning, stacklevel=2)
    return {"users": users, "photos": sorted(stems), "unsupported": unsupported, "replaced": replaced}


def _photo_stems(photos: pathlib.Path) -> dict[str, pathlib.Path]:
    """The photos in ``photos`` by file stem (two photos with one stem are refused)."""
    if not photos.is_dir():
        raise UsageError(f"--photos {photos}: folder not found")
    files = list_images(photos)
    if not files:
        raise UsageError(f"--photos {photos}: no images (png, jpg, tif, webp, bmp) in it")
    stems: dict[str, pathlib.Path] = {}
    for f in files:
        if f.stem in stems:
            raise UsageError(f"{f}: two photos named {f.stem}.* in {photos} ({stems[f.stem].name}); rename one")
        stems[f.stem] = f
    return stems


def _replaceable(out: pathlib.Path, overwrite: bool) -> list[pathlib.Path]:
    """The files an earlier synth output at ``out`` holds (to be replaced); [] when ``out`` is new or empty."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return []
    if not out.is_dir():
        raise UsageError(f"--out {out} is a file; choose a folder")
    if not overwrite:
        raise UsageError(f"--out {out} is not empty; add --overwrite to replace an earlier `data synth` output "
                         f"there, or choose a new folder")
    if not (out / "presets.json").is_file():
        raise UsageError(f"--out {out} is not a `data synth` output (no presets.json); piebench replaces only "
                         f"its own datasets -- choose a new folder")
    return sorted(p for p in out.rglob("*") if p.is_file())


def _write_dataset(out: pathlib.Path, stems: dict[str, pathlib.Path], users: list[str], read: list[Preset],
                   max_size: int, *, replace: bool) -> None:
    """Retouch every photo with every preset in a hidden folder beside ``out``, then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    build = out.with_name(f".{out.name}.synth-{os.getpid()}")
    if build.exists():
        shutil.rmtree(build)
    try:
        for d in ["input", *users]:
            (build / d).mkdir(parents=True)
        for stem, f in sorted(stems.items()):
            image = _resize_long(to_srgb(read_image(f)), max_size)
            PILImage.fromarray(quantise(image)).save(build / "input" / f"{stem}.png")
            for user, preset in zip(users, read, strict=True):
                edited = retouch(image, preset.params)
                PILImage.fromarray(quantise(edited)).save(build / user / f"{stem}.png", format="PNG")
        (build / "presets.json").write_text(jsonio.dumps(
            {u: {"file": p.path, "params": p.params.to_dict(), "unsupported": p.unsupported}
             for u, p in zip(users, read, strict=True)}, non_finite="refuse", indent=1))
        if replace:
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(build, out)
            shutil.rmtree(old)
        else:
            if out.exists():
                out.rmdir()  # empty
            os.replace(build, out)
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)


def unsupported_message(unsupported: dict[str, list[str]]) -> str:
    """One line listing the settings that were not emulated and which presets use them."""
    parts = [f"{k} ({', '.join(v)})" for k, v in sorted(unsupported.items())]
    return f"preset settings not emulated (ignored): {'; '.join(parts)}"
