"""Reading photos (8/16-bit PNG, JPEG, TIFF, float TIFF, DNG) as a viewer shows them, with one-line errors.

The one reader of every photo piebench opens (``enhance`` inputs and references, folder
datasets, ``data synth``, ``data prepare``). :func:`read_image` applies the EXIF (or TIFF)
orientation, converts an embedded ICC profile to sRGB through littleCMS (:mod:`.icc`), keeps
16-bit and float precision, carries the alpha channel alongside, and returns the sha256 of the
file's bytes (read once). :func:`to_srgb` turns the pixels into float32 sRGB in [0, 1]; :func:`fit`
resizes and crops to a fixed ``H x W`` (rotating portrait photos into a landscape store) and
quantises to uint8.

Every unreadable file -- missing, empty, truncated, not an image, grayscale, CMYK, non-finite
float samples -- raises :class:`~piebench.errors.UsageError` naming the file and what to do.
"""

from __future__ import annotations

import hashlib
import io
import pathlib
import sys
from dataclasses import dataclass

import imagecodecs
import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image as PILImage

from ..colour import prophoto_to_srgb, to_unit
from ..errors import UsageError
from . import icc as icc_mod

#: File extensions read as photos (lower case).
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
RAW_EXTS = (".dng",)


@dataclass
class Image:
    """A photo as a viewer shows it: upright (EXIF orientation applied), RGB ``[H, W, 3]`` in the
    working colour space, and what is needed to write it back at full fidelity.

    ``pixels``: native dtype (uint8, uint16, float) when the file is sRGB (or untagged) or
    ProPhoto (``colourspace``); float32 sRGB [0, 1] after an ICC conversion of a 16-bit or float
    file, uint8 after one of an 8-bit file. ``bits``: the file's bit depth (8, 16, 32);
    ``alpha``: its alpha channel ``[H, W]`` (native dtype, oriented) or None; ``icc``/``exif``:
    the embedded profile and EXIF bytes; ``format``: PNG, JPEG, TIFF, WEBP, BMP or DNG.
    """

    pixels: np.ndarray
    colourspace: str
    bits: int
    sha256: str
    nbytes: int
    path: str
    alpha: np.ndarray | None = None
    icc: bytes | None = None
    exif: bytes | None = None
    format: str = "PNG"
    orientation: int = 1

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


def is_image(path: pathlib.Path) -> bool:
    """True for a regular, non-hidden file with a photo extension (raw files included)."""
    return (path.is_file() and not path.name.startswith(".")
            and path.suffix.lower() in IMAGE_EXTS + RAW_EXTS)


def _bad(path: pathlib.Path, what: str, fix: str = "re-export it, or remove it") -> UsageError:
    return UsageError(f"{path}: {what}; {fix}")


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels [H, W, ...]`` turned upright for an EXIF/TIFF orientation 1-8 (as ``ImageOps.exif_transpose``)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, k=1),
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(pixels)) if op else pixels


def _warn(line: str) -> None:
    print(f"piebench: warning: {line}", file=sys.stderr)


def read_image(path: str | pathlib.Path, colourspace: str | None = None, half_size: bool = False,
               warn: bool = True) -> Image:
    """Decode ``path`` as a viewer shows it (see :class:`Image`).

    ``colourspace`` forces ``"srgb"`` / ``"prophoto"`` (no ICC conversion then); otherwise the
    embedded ICC profile decides: ProPhoto stays ``"prophoto"`` (:func:`to_srgb` converts it),
    any other profile is converted to sRGB by :func:`piebench.data.icc.convert_to_srgb` (a
    profile it cannot convert is one warning line naming the file). ``half_size`` demosaics raw
    files at half resolution. ``warn=False`` keeps the conversion warning to itself (a file read
    a second time, whose warning was already printed).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: file not found; check the path (or the layout with --layout)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    ext = path.suffix.lower()
    if not data:
        raise _bad(path, "empty file (0 bytes)")
    alpha, profile, exif, orientation = None, None, None, 1
    if ext in RAW_EXTS:
        pixels, space, fmt = _read_raw(path, data, half_size), "srgb", "DNG"
    elif ext in (".tif", ".tiff"):
        pixels, alpha, profile, orientation = _read_tiff(path, data)
        fmt = "TIFF"
    else:
        pixels, alpha, profile, exif, orientation, fmt = _read_pil(path, data)
    profile_kind = icc_mod.kind(profile)  # parsed once: it may read the profile with littleCMS
    space = "prophoto" if profile_kind == "prophoto" else "srgb"
    if pixels.size == 0:
        raise _bad(path, "the image is empty (0 pixels)")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise _bad(path, "float image with NaN or infinite samples", "re-export it with finite values")
    bits = 8 if pixels.dtype == np.uint8 else 16 if pixels.dtype == np.uint16 else 32
    pixels = orient(pixels, orientation)
    if alpha is not None:
        alpha = orient(alpha, orientation)
    if colourspace is None and profile_kind == "other":
        pixels, warning = icc_mod.convert_to_srgb(pixels, profile, str(path))
        if warning and warn:
            _warn(warning)
    return Image(pixels, colourspace or space, bits, digest, len(data), str(path), alpha=alpha, icc=profile,
                 exif=exif, format=fmt, orientation=orientation)


def _png_16bit(data: bytes) -> bool:
    """A PNG whose IHDR says 16 bits per sample, RGB or RGBA (Pillow would read it as 8-bit)."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 26 and data[24] == 16 and data[25] in (2, 6)


def _read_pil(path: pathlib.Path, data: bytes):
    try:
        im = PILImage.open(io.BytesIO(data))
        im.load()
        exif_table = im.getexif()
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
        raise _bad(path, f"not a readable image or truncated ({type(err).__name__}: {err})") from None
    orientation = int(exif_table.get(0x0112, 1) or 1)
    profile = im.info.get("icc_profile") or None
    exif = exif_table.tobytes() if len(exif_table) else None
    mode = im.mode
    if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        raise _bad(path, f"grayscale image (mode {mode}); piebench needs RGB",
                   "export it as RGB (or remove it)")
    if mode == "CMYK":
        raise _bad(path, "CMYK image; piebench needs RGB", "export it as sRGB (or remove it)")
    alpha = None
    if _png_16bit(data):
        try:
            arr = imagecodecs.png_decode(data)
        except Exception as err:  # noqa: BLE001
            raise _bad(path, f"not a readable 16-bit PNG or truncated ({type(err).__name__}: {err})") from None
        rgb, alpha = arr[..., :3], (arr[..., 3] if arr.shape[-1] == 4 else None)
    else:
        if mode in ("RGBA", "PA") or (mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            alpha = np.asarray(im)[..., 3]
        rgb = np.asarray(im.convert("RGB") if im.mode != "RGB" else im)  # palette, YCbCr
    return np.ascontiguousarray(rgb), alpha, profile, exif, orientation, im.format or "PNG"


def _read_tiff(path: pathlib.Path, data: bytes):
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            photometric = int(page.photometric)
            icc = page.tags.get(34675)
            icc_bytes = bytes(icc.value) if icc is not None else b""
            tag = page.tags.get(274)
            orientation = int(tag.value) if tag is not None else 1
            pixels = page.asarray()
    except Exception as err:  # noqa: BLE001
        raise _bad(path, f"not a readable TIFF or truncated ({type(err).__name__}: {err})") from None
    if photometric == 5:  # SEPARATED
        raise _bad(path, "CMYK TIFF; piebench needs RGB", "export it as RGB (or remove it)")
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] in (1, 2)):
        raise _bad(path, "grayscale TIFF; piebench needs RGB", "export it as RGB (or remove it)")
    if pixels.ndim == 3 and pixels.shape[0] in (3, 4) and pixels.shape[-1] not in (3, 4):
        pixels = np.moveaxis(pixels, 0, -1)  # planar configuration
    if pixels.ndim != 3 or pixels.shape[-1] not in (3, 4):
        raise _bad(path, f"unsupported TIFF layout {pixels.shape}; expected H x W x 3")
    if pixels.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise _bad(path, f"unsupported TIFF sample type {pixels.dtype}", "export it as 8- or 16-bit RGB")
    if pixels.dtype == np.float64:
        pixels = pixels.astype(np.float32)
    alpha = pixels[..., 3] if pixels.shape[-1] == 4 else None
    return np.ascontiguousarray(pixels[..., :3]), alpha, icc_bytes or None, orientation


def _read_raw(path: pathlib.Path, data: bytes, half_size: bool) -> np.ndarray:
    try:
        import rawpy
    except ImportError:
        raise UsageError(f"{path}: reading DNG raw files needs rawpy: pip install 'piebench[raw]' "
                         "(or prepare from rendered inputs: --layout adaint, starenhancer, msm or folder)") from None
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            # Camera white balance, sRGB primaries and curve, libraw's default auto-brightness.
            # NOT the Lightroom "zeroed" rendering the papers used as input (see piebench.data.fivek).
            return raw.postprocess(use_camera_wb=True, half_size=half_size, output_bps=16,
                                   output_color=rawpy.ColorSpace.sRGB, gamma=(2.4, 12.92))
    except Exception as err:  # noqa: BLE001
        raise _bad(path, f"not a readable raw file or truncated ({type(err).__name__}: {err})") from None


def to_srgb(image: Image) -> np.ndarray:
    """float32 sRGB ``[H, W, 3]`` in [0, 1] (ProPhoto sources converted, see :mod:`piebench.colour`)."""
    if image.colourspace == "prophoto":
        return prophoto_to_srgb(image.pixels)
    return np.clip(to_unit(image.pixels), 0.0, 1.0)


def quantise(image: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 with rounding."""
    return np.clip(np.rint(np.asarray(image, np.float32) * 255.0), 0, 255).astype(np.uint8)


def fit(image: Image | np.ndarray, height: int, width: int, rotate: bool = True) -> tuple[np.ndarray, dict]:
    """uint8 ``[height, width, 3]`` from ``image``: rotated 90 degrees when its orientation differs
    from the target's (``rotate`` and a non-square target), scaled to cover the target with an
    antialiased bilinear filter in sRGB-encoded values, centre-cropped. Returns the pixels and
    ``{"rotated": bool, "crop": [top, left, h, w] in the scaled image, "scale": float}``."""
    pixels = to_srgb(image) if isinstance(image, Image) else np.asarray(image)
    h, w = pixels.shape[:2]
    rotated = bool(rotate and height != width and (h > w) != (height > width) and h != w)
    if rotated:
        pixels = np.rot90(pixels, k=-1)  # clockwise
        h, w = w, h
    scale = max(height / h, width / w)
    if (h, w) == (height, width):
        out = pixels if pixels.dtype == np.uint8 else quantise(pixels)
        return np.ascontiguousarray(out), {"rotated": rotated, "crop": [0, 0, h, w], "scale": 1.0}
    sh, sw = max(height, round(h * scale)), max(width, round(w * scale))
    resized = resize(pixels, sh, sw)
    top, left = (sh - height) // 2, (sw - width) // 2
    out = resized[top:top + height, left:left + width]
    return np.ascontiguousarray(out), {"rotated": rotated, "crop": [top, left, height, width],
                                       "scale": round(scale, 6)}


def resize_unit(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear resize of ``[H, W, 3]`` (any bit depth) to float32 ``[height, width, 3]``
    in [0, 1], at float precision (a 16-bit or float photo keeps its depth)."""
    x = torch.from_numpy(np.ascontiguousarray(to_unit(pixels))).permute(2, 0, 1)[None]
    y = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0).clamp(0, 1).numpy()


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """:func:`resize_unit` quantised to uint8 ``[height, width, 3]``."""
    return quantise(resize_unit(pixels, height, width))


def same_shape(a: Image, b: Image, tolerance: float = 0.01) -> bool:
    """True when ``b`` has ``a``'s orientation and aspect ratio within ``tolerance`` (relative)."""
    (ha, wa), (hb, wb) = a.size, b.size
    if (ha, wa) == (hb, wb):
        return True
    return abs((wa / ha) / (wb / hb) - 1.0) <= tolerance


def list_images(folder: pathlib.Path) -> list[pathlib.Path]:
    """Photos directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image(p))
