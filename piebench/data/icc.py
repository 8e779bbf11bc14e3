"""Embedded ICC profiles to sRGB, through littleCMS (Pillow's ImageCms).

* 8-bit photos are converted by ImageCms itself (``profileToProfile``, relative colorimetric:
  for the matrix/TRC profiles cameras and editors embed -- Adobe RGB, Display P3 -- every intent
  uses the profile's colorant matrix).
* 16-bit and float photos keep their precision: for a matrix/TRC profile (``rXYZ``/``gXYZ``/
  ``bXYZ`` and ``rTRC``/``gTRC``/``bTRC``, the curves ``curv`` or ``para``) the same chain littleCMS
  evaluates -- profile curves, colorant matrix to the D50 connection space, the inverse of
  littleCMS's own sRGB profile matrix, the sRGB curve -- is computed in float32. Tests compare it
  with ImageCms on the same pixels. A LUT-based profile at 16 bits goes through ImageCms at 8 bits
  (with a warning saying so).
* A profile that cannot be read or converted leaves the pixels as they are (treated as sRGB)
  and :func:`convert_to_srgb` returns a one-line warning naming the file.

Profiles described as sRGB are taken as sRGB without a conversion (the differences between sRGB
profile builds are below one 8-bit level); ProPhoto/ROMM profiles are left to
:func:`piebench.colour.prophoto_to_srgb`, as the FiveK TIFFs always were.
"""

from __future__ import annotations

import functools
import io
import struct

import numpy as np
from PIL import Image, ImageCms

from ..colour import srgb_encode, to_unit


@functools.cache
def srgb_profile() -> bytes:
    """littleCMS's built-in sRGB profile, as bytes to embed in written photos."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def description(icc: bytes) -> str:
    """The profile's description (``desc`` tag), or '' when it has none readable."""
    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except Exception:  # noqa: BLE001 - an unreadable profile has no description
        return ""


def kind(icc: bytes | None) -> str:
    """``"none"``, ``"srgb"``, ``"prophoto"`` or ``"other"`` for an embedded profile."""
    if not icc:
        return "none"
    if b"ProPhoto" in icc or b"ROMM" in icc:
        return "prophoto"
    desc = description(icc).lower()
    if desc.startswith("srgb") or "iec61966-2" in desc.replace(" ", ""):
        return "srgb"
    return "other"


def _tags(icc: bytes) -> dict[bytes, bytes]:
    (count,) = struct.unpack(">I", icc[128:132])
    out = {}
    for i in range(count):
        sig, off, size = struct.unpack(">4sII", icc[132 + 12 * i:144 + 12 * i])
        out[sig] = icc[off:off + size]
    return out


def _s15(raw: bytes) -> list[float]:
    return [v / 65536.0 for v in struct.unpack(f">{len(raw) // 4}i", raw)]


def _curve(tag: bytes):
    """The TRC of a ``curv`` or ``para`` tag as a float32 function on [0, 1]."""
    kind_ = tag[:4]
    if kind_ == b"curv":
        (n,) = struct.unpack(">I", tag[8:12])
        if n == 0:
            return lambda x: x
        if n == 1:
            gamma = struct.unpack(">H", tag[12:14])[0] / 256.0
            return lambda x: np.power(x, np.float32(gamma))
        table = np.array(struct.unpack(f">{n}H", tag[12:12 + 2 * n]), np.float32) / 65535.0
        grid = np.linspace(0.0, 1.0, n, dtype=np.float32)
        return lambda x: np.interp(x, grid, table).astype(np.float32)
    if kind_ == b"para":
        (ftype,) = struct.unpack(">H", tag[8:10])
        nparams = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}[ftype]
        p = _s15(tag[12:12 + 4 * nparams]) + [0.0] * (7 - nparams)
        g, a, b, c, d, e, f = p
        if ftype == 0:
            return lambda x: np.power(x, np.float32(g))
        if ftype in (1, 2):
            c2 = c if ftype == 2 else 0.0
            return lambda x: np.where(x >= -b / a, np.power(np.maximum(a * x + b, 0), g) + c2, c2).astype(np.float32)
        if ftype == 3:
            return lambda x: np.where(x >= d, np.power(np.maximum(a * x + b, 0), g), c * x).astype(np.float32)
        return lambda x: np.where(x >= d, np.power(np.maximum(a * x + b, 0), g) + e, c * x + f).astype(np.float32)
    raise ValueError(f"curve type {kind_!r}")


def matrix_trc(icc: bytes) -> tuple[np.ndarray, list] | None:
    """(RGB -> XYZ D50 matrix, [r, g, b] curves) of a matrix/TRC RGB profile; None for other profiles."""
    tags = _tags(icc)
    if icc[16:20] != b"RGB " or b"A2B0" in tags or b"A2B1" in tags:
        return None
    try:
        cols = [_s15(tags[s][8:20]) for s in (b"rXYZ", b"gXYZ", b"bXYZ")]
        curves = [_curve(tags[s]) for s in (b"rTRC", b"gTRC", b"bTRC")]
    except (KeyError, ValueError, struct.error):
        return None
    return np.array(cols, np.float64).T, curves


@functools.cache
def _xyz_to_srgb() -> np.ndarray:
    m, _ = matrix_trc(srgb_profile())
    return np.linalg.inv(m)


def _float_convert(pixels: np.ndarray, icc: bytes) -> np.ndarray | None:
    found = matrix_trc(icc)
    if found is None:
        return None
    matrix, curves = found
    full = (_xyz_to_srgb() @ matrix).astype(np.float32).T
    unit = np.clip(to_unit(pixels), 0.0, 1.0)
    out = np.empty(unit.shape, np.float32)
    for r0 in range(0, unit.shape[0], 512):
        block = unit[r0:r0 + 512]
        lin = np.stack([curves[c](block[..., c]) for c in range(3)], axis=-1)
        out[r0:r0 + 512] = srgb_encode(lin @ full)
    return out


def _cms_convert(rgb8: np.ndarray, icc: bytes) -> np.ndarray:
    src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    dst = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    im = ImageCms.profileToProfile(Image.fromarray(np.ascontiguousarray(rgb8)), src, dst,
                                   renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB")
    return np.asarray(im)


def convert_to_srgb(pixels: np.ndarray, icc: bytes, path: str) -> tuple[np.ndarray, str | None]:
    """``pixels`` (RGB, native type) in the profile ``icc`` -> sRGB, and a warning line or None.

    uint8 in, uint8 out (ImageCms); 16-bit or float in, float32 [0, 1] out.
    """
    name = description(icc) or "unnamed"
    try:
        if pixels.dtype == np.uint8:
            return _cms_convert(pixels, icc), None
        out = _float_convert(pixels, icc)
        if out is not None:
            return out, None
        rgb8 = np.clip(np.rint(np.clip(to_unit(pixels), 0, 1) * 255), 0, 255).astype(np.uint8)
        return (_cms_convert(rgb8, icc).astype(np.float32) / 255.0,
                f"{path}: its ICC profile '{name}' is LUT-based; converted to sRGB at 8-bit precision")
    except Exception as err:  # noqa: BLE001 - littleCMS refuses many ways; the photo still reads
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return pixels, (f"{path}: its ICC profile '{name}' cannot be converted to sRGB ({first}); read as sRGB "
                        f"-- re-export the photo in sRGB for exact colours")
