"""Tiny fake FiveK trees in every layout, for tests and for trying ``piebench data prepare``.

:func:`make_fake_fivek` writes generated photos (smooth colour fields with shapes) and five
"experts" who each apply a different global retouch, in the folder structure of a layout. The
official layout gets 16-bit ProPhoto RGB TIFFs for the experts (with an ICC-like tag naming
ProPhoto) and real raw DNGs for the inputs (:func:`write_dng`: the photo's linear sRGB light
mosaicked into a 16-bit RGGB Bayer pattern with the DNG tags LibRaw needs), which ``rawpy``
demosaics like a camera's.
"""

from __future__ import annotations

import pathlib

import numpy as np
import tifffile
from PIL import Image

from ..colour import srgb_decode, srgb_to_prophoto
from .retouch import RetouchParams, retouch

#: Photo ids of a 12-photo tree: 8 in the UPE train range, 4 in its test range.
FAKE_IDS = [f"a{i:04d}" for i in range(1, 9)] + [f"a{i:04d}" for i in range(4501, 4505)]
EXPERT_EDITS = {
    "A": RetouchParams(exposure=0.4, contrast=0.2),
    "B": RetouchParams(exposure=-0.3, saturation=0.3),
    "C": RetouchParams(temperature=0.4, shadows=0.3),
    "D": RetouchParams(temperature=-0.4, contrast=-0.2),
    "E": RetouchParams(exposure=0.2, vibrance=0.5, tint=0.2),
}


def fake_photo(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth random sRGB photo-like image, float32 ``[height, width, 3]`` in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / max(height - 1, 1), xx / max(width - 1, 1)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, d = rng.uniform(-0.5, 0.5, 3)
        img[..., c] = 0.45 + a * xx + b * yy + d * xx * yy
    for _ in range(3):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        img[mask] = img[mask] * 0.5 + rng.uniform(0, 1, 3).astype(np.float32) * 0.5
    return np.clip(img, 0.02, 0.98)


#: XYZ (D65) -> linear sRGB: the fake camera's colour matrix, so its raw channels are sRGB's.
_XYZ_TO_SRGB = (3.2404542, -1.5371385, -0.4985314, -0.9692660, 1.8760108, 0.0415560,
                0.0556434, -0.2040259, 1.0572252)


def write_dng(path: str | pathlib.Path, image: np.ndarray, white: int = 60000) -> None:
    """Write sRGB ``image`` (float ``[H, W, 3]`` in [0, 1], even H and W) as a raw DNG.

    The linear light of each pixel is sampled through an RGGB colour filter array into one
    16-bit plane (``white`` = linear 1.0), with DNG 1.4 tags: CFA pattern, black 0, white
    65535, ColorMatrix1 = XYZ -> linear sRGB under D65 and a neutral (1, 1, 1) as-shot white
    balance, so a raw converter's sRGB rendering recovers the photo up to its brightness.
    """
    h, w, _ = image.shape
    if h % 2 or w % 2:
        raise ValueError(f"write_dng needs even sizes for the 2x2 Bayer pattern, got {h}x{w}")
    lin = np.round(np.clip(srgb_decode(np.clip(image, 0, 1)), 0, 1) * white).astype(np.uint16)
    bayer = np.empty((h, w), np.uint16)
    bayer[0::2, 0::2] = lin[0::2, 0::2, 0]
    bayer[0::2, 1::2] = lin[0::2, 1::2, 1]
    bayer[1::2, 0::2] = lin[1::2, 0::2, 1]
    bayer[1::2, 1::2] = lin[1::2, 1::2, 2]
    matrix: list[int] = []
    for v in _XYZ_TO_SRGB:
        matrix += [round(v * 10000), 10000]
    tags = [(33421, "H", 2, (2, 2), False),  # CFARepeatPatternDim
            (33422, "B", 4, (0, 1, 1, 2), False),  # CFAPattern: R G / G B
            (50706, "B", 4, (1, 4, 0, 0), False),  # DNGVersion
            (50708, "s", 0, "piebench fake camera", False),  # UniqueCameraModel
            (50714, "I", 1, (0,), False), (50717, "I", 1, (65535,), False),  # BlackLevel, WhiteLevel
            (50721, "2i", 9, tuple(matrix), False),  # ColorMatrix1
            (50728, "2I", 3, (1, 1, 1, 1, 1, 1), False),  # AsShotNeutral
            (50778, "H", 1, (21,), False)]  # CalibrationIlluminant1 = D65
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, bayer, photometric=32803, extratags=tags, subfiletype=0)


def _save(path: pathlib.Path, image: np.ndarray, bits: int = 8, prophoto: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff", ".dng"):
        data = srgb_to_prophoto(image) if prophoto else image
        arr = (np.round(np.clip(data, 0, 1) * 65535).astype(np.uint16) if bits == 16
               else np.round(np.clip(data, 0, 1) * 255).astype(np.uint8))
        extratags = [(34675, "B", 0, b"fake ICC profile: ProPhoto RGB (ROMM)", True)] if prophoto else []
        tifffile.imwrite(path, arr, photometric="rgb", extratags=extratags)
    else:
        Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(
            path, **({"quality": 100} if path.suffix.lower() in (".jpg", ".jpeg") else {}))


def make_fake_fivek(root: str | pathlib.Path, layout: str, ids: list[str] | None = None, height: int = 48,
                    width: int = 72, experts: str = "ABCDE", portrait: tuple[str, ...] = ("a0003",)) -> pathlib.Path:
    """Write a fake FiveK tree of ``layout`` under ``root`` (returns the ``--root`` to give prepare)."""
    root = pathlib.Path(root)
    ids = ids or FAKE_IDS
    for n, pid in enumerate(ids):
        h, w = (width, height) if pid in portrait else (height, width)
        src = fake_photo(n, h, w)
        edits = {e: retouch(src, EXPERT_EDITS[e]) for e in experts}
        test = int(pid[1:]) > 4500
        if layout == "official":
            write_dng(root / "img" / "dng" / f"{pid}-fake_DSC{n:04d}.dng", src)
            for e, im in edits.items():
                _save(root / "img" / f"tiff16_{e.lower()}" / f"{pid}-fake_DSC{n:04d}.tif", im, bits=16, prophoto=True)
        elif layout == "starenhancer":
            split = "test" if test else "train"
            _save(root / "data" / split / "06-Input-Zeroed" / f"{pid}.jpg", src)
            for i, (e, im) in enumerate(edits.items()):
                _save(root / "data" / split / f"{i + 1:02d}-Experts-{e}" / f"{pid}.jpg", im)
        elif layout == "adaint":
            _save(root / "FiveK" / "input" / "JPG" / "480p" / f"{pid}.jpg", src)
            for e, im in edits.items():
                _save(root / "FiveK" / f"expert{e}" / "JPG" / "480p" / f"{pid}.jpg", im)
        elif layout == "msm":
            for e, im in edits.items():
                split = "test" if test else "test_ref"
                _save(root / split / f"Expert{e}_input" / f"{pid}.jpg", src)
                _save(root / split / f"Expert{e}" / f"{pid}.jpg", im)
        elif layout == "folder":
            _save(root / "input" / f"{pid}.png", src)
            for e, im in edits.items():
                _save(root / f"expert{e}" / f"{pid}.png", im)
        else:
            raise ValueError(f"unknown layout {layout!r}")
    if layout == "adaint":
        base = root / "FiveK"
        (base / "train.txt").write_text("\n".join(p for p in ids if int(p[1:]) <= 4500) + "\n")
        (base / "test.txt").write_text("\n".join(p for p in ids if int(p[1:]) > 4500) + "\n")
    return root
