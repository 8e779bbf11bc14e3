"""Reading photos (8/16-bit PNG, JPEG, TIFF, DNG) with one-line errors, and fitting them to a size.

:func:`read_image` returns the decoded pixels in their own type (uint8, uint16 or float) plus
the colour space (``"srgb"`` or ``"prophoto"``) and the sha256 of the file's bytes, read once.
:func:`to_srgb` turns them into float32 sRGB in [0, 1]; :func:`fit` resizes and crops to a fixed
``H x W`` (rotating portrait photos into a landscape store) and quantises to uint8.

Every unreadable file -- missing, truncated, not an image, grayscale, CMYK -- raises
:class:`~piebench.errors.UsageError` naming the file and what to do.
"""

from __future__ import annotations

import hashlib
import io
import pathlib
from dataclasses import dataclass

import numpy as np

from ..colour import prophoto_to_srgb, to_unit
from ..errors import UsageError

#: File extensions read as photos (lower case).
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
RAW_EXTS = (".dng",)


@dataclass
class Image:
    """Decoded pixels ``[H, W, 3]`` (native dtype), colour space, bits, source sha256 and byte size."""

    pixels: np.ndarray
    colourspace: str
    bits: int
    sha256: str
    nbytes: int
    path: str

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


def read_image(path: str | pathlib.Path, colourspace: str | None = None, half_size: bool = False) -> Image:
    """Decode ``path``; ``colourspace`` forces ``"srgb"`` / ``"prophoto"`` (TIFFs otherwise tell
    by their embedded ICC profile); ``half_size`` demosaics raw files at half resolution."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: file not found; check the path (or the layout with --layout)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    ext = path.suffix.lower()
    if ext in RAW_EXTS:
        pixels, space = _read_raw(path, data, half_size), "srgb"
    elif ext in (".tif", ".tiff"):
        pixels, space = _read_tiff(path, data)
    else:
        pixels, space = _read_pil(path, data), "srgb"
    if pixels.size == 0:
        raise _bad(path, "the image is empty (0 pixels)")
    bits = 8 if pixels.dtype == np.uint8 else 16 if pixels.dtype == np.uint16 else 32
    return Image(pixels, colourspace or space, bits, digest, len(data), str(path))


def _read_pil(path: pathlib.Path, data: bytes) -> np.ndarray:
    from PIL import Image as PILImage

    try:
        im = PILImage.open(io.BytesIO(data))
        im.load()
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
        raise _bad(path, f"not a readable image or truncated ({type(err).__name__}: {err})") from None
    mode = im.mode
    if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
        raise _bad(path, f"grayscale image (mode {mode}); piebench needs RGB",
                   "export it as RGB (or remove it)")
    if mode == "CMYK":
        raise _bad(path, "CMYK image; piebench needs RGB", "export it as sRGB (or remove it)")
    if mode != "RGB":
        im = im.convert("RGB")  # palette, RGBA (alpha dropped), YCbCr
    return np.asarray(im)


def _read_tiff(path: pathlib.Path, data: bytes) -> tuple[np.ndarray, str]:
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            photometric = int(page.photometric)
            icc = page.tags.get(34675)
            icc_bytes = bytes(icc.value) if icc is not None else b""
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
    space = "prophoto" if (b"ProPhoto" in icc_bytes or b"ROMM" in icc_bytes) else "srgb"
    return pixels[..., :3], space


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


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear resize of ``[H, W, 3]`` (uint8 or float) to uint8 ``[height, width, 3]``."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(to_unit(pixels))).permute(2, 0, 1)[None]
    y = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return quantise(y[0].permute(1, 2, 0).numpy())


def same_shape(a: Image, b: Image, tolerance: float = 0.01) -> bool:
    """True when ``b`` has ``a``'s orientation and aspect ratio within ``tolerance`` (relative)."""
    (ha, wa), (hb, wb) = a.size, b.size
    if (ha, wa) == (hb, wb):
        return True
    return abs((wa / ha) / (wb / hb) - 1.0) <= tolerance


def list_images(folder: pathlib.Path) -> list[pathlib.Path]:
    """Photos directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image(p))
