"""ProPhoto RGB (ROMM RGB) to sRGB, as the FiveK experts' 16-bit TIFFs need.

The chain, every step explicit and each constant derived from its definition:

1. ROMM RGB decoding (ISO 22028-2): ``C = C' / 16`` for ``C' < 16 * Et`` with ``Et = 1 / 512``
   (the linear toe), otherwise ``C = C' ** 1.8``.
2. Linear ProPhoto -> CIE XYZ under D50: the matrix built from the ProPhoto primaries
   R (0.7347, 0.2653), G (0.1596, 0.8404), B (0.0366, 0.0001) and white D50 (0.3457, 0.3585).
3. Chromatic adaptation D50 -> D65 with the Bradford cone response matrix (von Kries scaling
   in the Bradford space), as ICC colour management does.
4. XYZ (D65) -> linear sRGB: the inverse of the matrix built from the Rec.709 primaries and D65
   (0.3127, 0.3290).
5. Out-of-gamut values (ProPhoto is far wider than sRGB) are clipped to [0, 1] in linear light
   (``clip=False`` keeps them), then the sRGB transfer curve (IEC 61966-2-1) encodes them.
"""

from __future__ import annotations

import numpy as np

#: ROMM RGB's linear-segment threshold E_t (ISO 22028-2).
ROMM_ET = 1.0 / 512.0
PROPHOTO_PRIMARIES = ((0.7347, 0.2653), (0.1596, 0.8404), (0.0366, 0.0001))
SRGB_PRIMARIES = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
D50_XY = (0.3457, 0.3585)
D65_XY = (0.3127, 0.3290)
#: Bradford cone response matrix (Lam 1985, as used by the ICC).
BRADFORD = np.array([[0.8951, 0.2664, -0.1614],
                     [-0.7502, 1.7135, 0.0367],
                     [0.0389, -0.0685, 1.0296]])


def xy_to_xyz(xy: tuple[float, float]) -> np.ndarray:
    """XYZ with Y = 1 of a chromaticity ``(x, y)``."""
    x, y = xy
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


def rgb_to_xyz_matrix(primaries: tuple, white: tuple[float, float]) -> np.ndarray:
    """The 3x3 matrix taking linear RGB of a space with these primaries and white to XYZ."""
    p = np.stack([xy_to_xyz(c) for c in primaries], axis=1)  # columns: XYZ of R, G, B at Y = 1
    scale = np.linalg.solve(p, xy_to_xyz(white))
    return p * scale[None, :]


def bradford_matrix(src_white: tuple[float, float], dst_white: tuple[float, float]) -> np.ndarray:
    """Bradford chromatic adaptation matrix from ``src_white`` to ``dst_white`` (XYZ -> XYZ)."""
    src = BRADFORD @ xy_to_xyz(src_white)
    dst = BRADFORD @ xy_to_xyz(dst_white)
    return np.linalg.inv(BRADFORD) @ np.diag(dst / src) @ BRADFORD


#: Linear ProPhoto (D50) -> linear sRGB (D65), the whole matrix part of the chain.
PROPHOTO_TO_SRGB = (np.linalg.inv(rgb_to_xyz_matrix(SRGB_PRIMARIES, D65_XY))
                    @ bradford_matrix(D50_XY, D65_XY)
                    @ rgb_to_xyz_matrix(PROPHOTO_PRIMARIES, D50_XY))


def romm_decode(encoded: np.ndarray) -> np.ndarray:
    """ROMM RGB transfer function inverse: encoded [0, 1] -> linear [0, 1] (with the linear toe)."""
    e = np.clip(np.asarray(encoded, np.float32), 0.0, 1.0)
    return np.where(e < np.float32(16 * ROMM_ET), e / np.float32(16.0), e ** np.float32(1.8))


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """sRGB transfer curve (IEC 61966-2-1): linear [0, 1] -> encoded [0, 1]."""
    y = np.clip(np.asarray(linear, np.float32), 0.0, 1.0)
    return np.where(y <= np.float32(0.0031308), y * np.float32(12.92),
                    np.float32(1.055) * y ** np.float32(1 / 2.4) - np.float32(0.055))


def to_unit(image: np.ndarray) -> np.ndarray:
    """Integer images scaled by their type's maximum to float32 [0, 1]; floats pass through."""
    image = np.asarray(image)
    if image.dtype.kind in "ui":
        return image.astype(np.float32) / np.float32(np.iinfo(image.dtype).max)
    return image.astype(np.float32, copy=False)


def prophoto_to_srgb(image: np.ndarray, clip: bool = True, rows: int = 512) -> np.ndarray:
    """ProPhoto RGB (encoded; uint8/uint16 or float in [0, 1]) ``[H, W, 3]`` -> sRGB float32 [0, 1].

    Processed ``rows`` rows at a time so a 16-bit 24-megapixel TIFF needs no more than a few
    hundred MB. With ``clip=False`` the linear sRGB values outside [0, 1] are returned instead
    of encoded ones (for tests against a reference implementation).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    matrix = PROPHOTO_TO_SRGB.astype(np.float32).T
    out = np.empty(image.shape, np.float32)
    for r0 in range(0, image.shape[0], rows):
        lin = romm_decode(to_unit(image[r0:r0 + rows])) @ matrix
        out[r0:r0 + rows] = srgb_encode(lin) if clip else lin
    return out


def romm_encode(linear: np.ndarray) -> np.ndarray:
    """ROMM RGB transfer function: linear [0, 1] -> encoded [0, 1] (16x below E_t)."""
    y = np.clip(np.asarray(linear, np.float32), 0.0, 1.0)
    return np.where(y < np.float32(ROMM_ET), y * np.float32(16.0), y ** np.float32(1 / 1.8))


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer curve: encoded [0, 1] -> linear [0, 1]."""
    e = np.clip(np.asarray(encoded, np.float32), 0.0, 1.0)
    return np.where(e <= np.float32(0.04045), e / np.float32(12.92), ((e + np.float32(0.055)) / np.float32(1.055))
                    ** np.float32(2.4))


def srgb_to_prophoto(image: np.ndarray) -> np.ndarray:
    """sRGB float [0, 1] ``[..., 3]`` -> encoded ProPhoto RGB float [0, 1] (the inverse chain)."""
    lin = srgb_decode(image) @ np.linalg.inv(PROPHOTO_TO_SRGB).astype(np.float32).T
    return romm_encode(lin)
