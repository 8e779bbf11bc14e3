"""ProPhoto RGB -> sRGB against colour-science and against an independent skimage computation."""

from __future__ import annotations

import numpy as np
import pytest

from piebench.data.colour import (
    PROPHOTO_TO_SRGB,
    prophoto_to_srgb,
    rgb_to_xyz_matrix,
    romm_decode,
    srgb_to_prophoto,
)


def _synthetic16(seed: int = 0) -> np.ndarray:
    """16-bit ProPhoto data, mostly inside the sRGB gamut (greys, skin, pastels) plus deep shadows."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.15, 0.75, (24, 32, 1))
    tint = rng.uniform(-0.06, 0.06, (24, 32, 3))
    img = np.clip(base + tint, 0, 1)
    img[:4] *= 0.02  # the ROMM linear toe (encoded < 1/32)
    return np.round(img * 65535).astype(np.uint16)


def test_romm_toe_and_power_segments():
    # Below 16 * Et = 1/32 the decoding is linear (C'/16); above, a 1.8 power.
    assert romm_decode(np.float32(1 / 64)) == pytest.approx(1 / 1024, rel=1e-6)
    assert romm_decode(np.float32(0.5)) == pytest.approx(0.5 ** 1.8, rel=1e-6)
    # The two segments meet (continuity at the threshold).
    assert romm_decode(np.float32(1 / 32 - 1e-7)) == pytest.approx(romm_decode(np.float32(1 / 32)), abs=1e-6)


def test_white_and_grey_stay_neutral():
    out = prophoto_to_srgb(np.full((1, 2, 3), 65535, np.uint16))
    assert np.allclose(out, 1.0, atol=1e-5)
    grey = prophoto_to_srgb(np.full((1, 1, 3), 0.5, np.float32))[0, 0]
    assert np.ptp(grey) < 1e-5  # D50 white adapts to D65 white: no colour cast on greys


def test_matches_colour_science_on_16bit_data():
    colour = pytest.importorskip("colour")
    img = _synthetic16()
    src = colour.RGB_COLOURSPACES["ProPhoto RGB"].copy()
    dst = colour.RGB_COLOURSPACES["sRGB"].copy()
    src.use_derived_matrix_RGB_to_XYZ = src.use_derived_matrix_XYZ_to_RGB = True
    dst.use_derived_matrix_RGB_to_XYZ = dst.use_derived_matrix_XYZ_to_RGB = True
    ref = colour.RGB_to_RGB(img / 65535.0, src, dst, chromatic_adaptation_transform="Bradford",
                            apply_cctf_decoding=True, apply_cctf_encoding=False)
    ours = prophoto_to_srgb(img, clip=False)
    assert np.abs(ours - ref).max() < 2e-6
    # Encoded output, in gamut: same after the sRGB curve.
    ref_enc = colour.cctf_encoding(np.clip(ref, 0, 1), function="sRGB")
    assert np.abs(prophoto_to_srgb(img) - ref_enc).max() < 2e-5
    # colour's default (the standards' published, rounded matrices) agrees to well under 1/255.
    published = colour.RGB_to_RGB(img / 65535.0, "ProPhoto RGB", "sRGB", chromatic_adaptation_transform="Bradford",
                                  apply_cctf_decoding=True, apply_cctf_encoding=False)
    assert np.abs(ours - published).max() < 1e-3


def test_matches_independent_skimage_chain():
    from skimage.color import xyz2rgb

    img = _synthetic16(1)
    enc = img.astype(np.float64) / 65535
    lin = np.where(enc < 1 / 32, enc / 16, enc ** 1.8)
    # ISO 22028-2's published ROMM -> XYZ(D50) matrix and Lindbloom's Bradford D50 -> D65 matrix.
    romm = np.array([[0.7977, 0.1352, 0.0313], [0.2880, 0.7119, 0.0001], [0.0, 0.0, 0.8249]])
    bradford_d50_d65 = np.array([[0.9555766, -0.0230393, 0.0631636], [-0.0282895, 1.0099416, 0.0210077],
                                 [0.0122982, -0.0204830, 1.3299098]])
    xyz = lin @ (bradford_d50_d65 @ romm).T
    ref = xyz2rgb(xyz)  # skimage: XYZ (D65) -> linear sRGB -> sRGB curve, clipped
    assert np.abs(prophoto_to_srgb(img) - ref).max() < 1.5e-3


def test_matrix_rows_and_round_trip():
    # ProPhoto's own white (1, 1, 1) maps to XYZ of D50 (Y = 1).
    m = rgb_to_xyz_matrix(((0.7347, 0.2653), (0.1596, 0.8404), (0.0366, 0.0001)), (0.3457, 0.3585))
    assert m.sum(1) == pytest.approx([0.3457 / 0.3585, 1.0, (1 - 0.3457 - 0.3585) / 0.3585], rel=1e-9)
    assert PROPHOTO_TO_SRGB.sum(1) == pytest.approx([1, 1, 1], abs=1e-9)
    srgb = np.random.default_rng(2).uniform(0.05, 0.95, (8, 8, 3)).astype(np.float32)
    assert np.abs(prophoto_to_srgb(srgb_to_prophoto(srgb)) - srgb).max() < 1e-4
