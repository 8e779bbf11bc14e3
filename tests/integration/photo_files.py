"""Real photo files for the tests: ICC profiles built from colour-science's primaries, tagged files.

:func:`icc_profile` writes an ICC v2 matrix/TRC display profile (header, ``desc``, ``wtpt``,
``rXYZ``/``gXYZ``/``bXYZ`` adapted to D50 with Bradford, ``rTRC``/``gTRC``/``bTRC``), the structure
Adobe RGB (1998) and Display P3 profiles have; littleCMS reads it (the tests check that).
"""

from __future__ import annotations

import struct

import numpy as np

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
