"""Writing a photo back at full fidelity: the source's format and bit depth, sRGB profile, EXIF, alpha.

:func:`encode_photo` turns float32 sRGB ``[H, W, 3]`` into the bytes of a file shaped like the
photo it came from (an :class:`~piebench.data.images.Image`):

* format: the source's (PNG, JPEG, TIFF, WEBP, BMP; a DNG becomes a 16-bit TIFF), or ``fmt``;
* bit depth: 16-bit in, 16-bit out (PNG through imagecodecs' libpng, TIFF through tifffile);
  float TIFF in, float32 TIFF out; a float source written as PNG is 16-bit; JPEG/WEBP/BMP are 8-bit;
* the sRGB ICC profile embedded (the pixels are sRGB after reading; BMP carries none);
* the source's EXIF kept with its orientation reset to 1 (the pixels are upright now) in PNG,
  JPEG and WEBP (TIFF output carries no EXIF);
* the source's alpha channel restored unchanged (scaled to the output's bit depth); JPEG has none.
"""

from __future__ import annotations

import io
import pathlib
import struct
import zlib

import imagecodecs
import numpy as np
import tifffile
from PIL import Image as PILImage

from ..colour import to_unit
from .icc import srgb_profile
from .images import Image

#: --format choices -> Pillow / tifffile format names, and the extension written.
FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "tiff": "TIFF", "tif": "TIFF", "webp": "WEBP", "bmp": "BMP"}
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}
_BY_EXT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP",
           ".bmp": "BMP", ".dng": "TIFF"}


def output_name(source: pathlib.Path, fmt: str | None) -> tuple[str, str]:
    """(file name, format) of the output of ``source``: the same name unless ``fmt`` or a raw source."""
    if fmt:
        kind = FORMATS[fmt.lower()]
        same = _BY_EXT.get(source.suffix.lower()) == kind
        return (source.name if same else source.stem + EXTENSIONS[kind]), kind
    kind = _BY_EXT.get(source.suffix.lower(), "PNG")
    return (source.name if source.suffix.lower() != ".dng" else source.stem + ".tif"), kind


def _exif_upright(exif: bytes | None) -> bytes | None:
    if not exif:
        return None

    table = PILImage.Exif()
    try:
        table.load(exif)
    except Exception:  # noqa: BLE001 - unreadable EXIF is dropped, not fatal
        return None
    table[0x0112] = 1
    return table.tobytes()


def _to_dtype(unit: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return unit.astype(np.float32)
    top = np.iinfo(dtype).max
    return np.clip(np.rint(np.clip(unit, 0, 1) * top), 0, top).astype(dtype)


def _alpha(alpha: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if alpha.dtype == dtype:
        return alpha
    return _to_dtype(to_unit(alpha), dtype)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png16(arr: np.ndarray, icc: bytes, exif: bytes | None) -> bytes:
    png = imagecodecs.png_encode(np.ascontiguousarray(arr))
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length + type, IHDR data, CRC
    extra = _png_chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(icc))
    if exif:
        extra += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    return png[:ihdr_end] + extra + png[ihdr_end:]


def encode_photo(rgb: np.ndarray, like: Image, fmt: str, quality: int | None = None) -> bytes:
    """The bytes of ``rgb`` (float32 sRGB [0, 1], ``like``'s size) as a ``fmt`` file like ``like``."""
    icc = srgb_profile()
    exif = _exif_upright(like.exif)
    alpha = like.alpha
    if fmt == "TIFF":
        dtype = np.float32 if like.bits == 32 else np.uint16 if like.bits == 16 else np.uint8
        arr = _to_dtype(rgb, dtype)
        extras = None
        if alpha is not None:
            arr = np.concatenate([arr, _alpha(alpha, arr.dtype)[..., None]], axis=-1)
            extras = ["unassalpha"]
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="rgb", iccprofile=icc, extrasamples=extras,
                         compression="zlib" if dtype != np.float32 else None)
        return buf.getvalue()
    if fmt == "PNG" and like.bits > 8:
        arr = _to_dtype(rgb, np.uint16)
        if alpha is not None:
            arr = np.concatenate([arr, _alpha(alpha, np.uint16)[..., None]], axis=-1)
        return _png16(arr, icc, exif)
    arr = _to_dtype(rgb, np.uint8)
    if alpha is not None and fmt in ("PNG", "WEBP"):
        arr = np.concatenate([arr, _alpha(alpha, np.uint8)[..., None]], axis=-1)
    im = PILImage.fromarray(np.ascontiguousarray(arr))
    kwargs: dict = {}
    if fmt != "BMP":
        kwargs["icc_profile"] = icc
        if exif:
            kwargs["exif"] = exif
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality or 95
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()
