"""Real photo files for the tests: ICC profiles built from colour-science's primaries, tagged files.

:func:`icc_profile` writes an ICC v2 matrix/TRC display profile (header, ``desc``, ``wtpt``,
``rXYZ``/``gXYZ``/``bXYZ`` adapted to D50 with Bradford, ``rTRC``/``gTRC``/``bTRC``), the structure
Adobe RGB (1998) and Display P3 profiles have; littleCMS reads it (the tests check that).
The other helpers write tagged, rotated and 16-bit files, give the independent references
(``cms``: ImageCms) and hash folders to prove the user's files were not touched.
"""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
from PIL import Image, ImageCms

D50 = (0.9642, 1.0, 0.8249)


def _s15(v: float) -> bytes:
    return struct.pack(">i", int(round(v * 65536)))


def _xyz(values) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15(v) for v in values)


def _desc(text: str) -> bytes:
    ascii_ = text.encode() + b"\0"
    return (b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_)) + ascii_
            + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67)


def _gamma(g: float) -> bytes:
    return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, int(round(g * 256))) + b"\0\0"


def _srgb_curve() -> bytes:  # parametric type 3: the sRGB / Display P3 transfer function
    params = [2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045]
    return b"para" + b"\0" * 4 + struct.pack(">HH", 3, 0) + b"".join(_s15(v) for v in params)


def icc_profile(name: str) -> bytes:
    """``"adobe"`` (Adobe RGB (1998), gamma 563/256) or ``"p3"`` (Display P3, sRGB curve) as ICC bytes."""
    import colour

    space = {"adobe": colour.RGB_COLOURSPACES["Adobe RGB (1998)"],
             "p3": colour.RGB_COLOURSPACES["Display P3"]}[name]
    npm = colour.normalised_primary_matrix(space.primaries, space.whitepoint)
    d50 = colour.xy_to_XYZ(colour.XYZ_to_xy(np.array(D50)))
    cat = colour.adaptation.matrix_chromatic_adaptation_VonKries(
        colour.xy_to_XYZ(space.whitepoint), d50, transform="Bradford")
    m = cat @ npm
    trc = _gamma(563 / 256) if name == "adobe" else _srgb_curve()
    tags = [(b"desc", _desc({"adobe": "Test Adobe RGB (1998)", "p3": "Test Display P3"}[name])),
            (b"wtpt", _xyz(D50)), (b"rXYZ", _xyz(m[:, 0])), (b"gXYZ", _xyz(m[:, 1])), (b"bXYZ", _xyz(m[:, 2])),
            (b"rTRC", trc), (b"gTRC", trc), (b"bTRC", trc), (b"cprt", b"text\0\0\0\0test\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += struct.pack(">4sII", sig, offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"APPL" + b"\0" * 4 + b"\0" * 8
              + b"\0" * 8 + struct.pack(">I", 0) + b"".join(_s15(v) for v in D50) + b"lcms" + b"\0" * 16
              + b"\0" * 28)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def gradient(h: int, w: int, seed: int = 0) -> np.ndarray:
    """float [0, 1] RGB test pattern with saturated colours (where profiles differ most)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / max(w - 1, 1), y / max(h - 1, 1), 1 - x / max(w - 1, 1)], axis=-1)
    return np.clip(img * 0.85 + rng.random((h, w, 3)).astype(np.float32) * 0.15, 0, 1)


SRGB = ImageCms.createProfile("sRGB")


def u8(a):
    return np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)


def u16(a):
    return np.clip(np.rint(a * 65535), 0, 65535).astype(np.uint16)


def cms(arr8: np.ndarray, profile: bytes) -> np.ndarray:
    """The independent reference: littleCMS through ImageCms, on 8-bit pixels."""
    im = ImageCms.profileToProfile(Image.fromarray(arr8), ImageCms.ImageCmsProfile(io.BytesIO(profile)), SRGB,
                                   renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB")
    return np.asarray(im)


def png16(path, arr, profile=None):
    """A 16-bit PNG through the same chunk layout any editor writes (libpng via imagecodecs + iCCP)."""
    import zlib

    import imagecodecs

    from piebench.data.write import _png_chunk

    png = imagecodecs.png_encode(np.ascontiguousarray(arr))
    if profile:
        png = png[:33] + _png_chunk(b"iCCP", b"P3\x00\x00" + zlib.compress(profile)) + png[33:]
    path.write_bytes(png)


def with_orientation(upright: Image.Image, orientation: int) -> tuple[Image.Image, bytes]:
    """A stored image and EXIF such that a viewer shows ``upright``."""
    inverse = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}[orientation]
    stored = upright.transpose(inverse) if inverse is not None else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make: must survive the round trip
    return stored, exif.tobytes()


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def exit_code(res) -> int:
    """The exit code `piebench` gives (CliRunner reports a raised PiebenchError as 1)."""
    from piebench.errors import PiebenchError

    return res.exception.exit_code if isinstance(res.exception, PiebenchError) else res.exit_code

