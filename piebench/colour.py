"""Every colour conversion piebench makes, in one place.

**sRGB <-> linear <-> CIE XYZ <-> CIELAB** in torch, differentiable, on ``[..., 3, H, W]``
tensors (channel dimension third from the end). Metrics (dE_ab), losses (``lab-l1``), the
``histogram`` and ``lab-stats`` encoders and the ``transfer`` enhancer all use these functions.
The constants are those of ``skimage.color`` (so a dE computed here equals one computed with
``skimage.color.rgb2lab``), all for the D65 illuminant and the CIE 1931 2-degree observer:

* sRGB transfer curve (IEC 61966-2-1): decode ``x / 12.92`` for ``x <= 0.04045``, else
  ``((x + 0.055) / 1.055) ** 2.4``; encode ``12.92 y`` for ``y <= 0.0031308``, else
  ``1.055 y ** (1 / 2.4) - 0.055``.
* linear sRGB -> XYZ: :data:`XYZ_FROM_SRGB` (skimage's matrix); XYZ -> linear sRGB its inverse.
* reference white D65: :data:`WHITE_D65` = (0.95047, 1, 1.08883) (CIE 15 tabulated values).
* CIELAB: ``f(t) = t ** (1/3)`` for ``t > 0.008856``, else ``7.787 t + 16 / 116``; these are
  the CIE's 216/24389 and 24389/3132 rounded as skimage rounds them. The inverse switches at
  ``f = 0.008856 ** (1/3)``, so a round trip is exact (skimage's ``lab2rgb`` switches at
  0.2068966, which differs by under 1e-6 for the few colours in between).

Out-of-range values (a network's output below 0 or above 1) are extended along the same
curves and never give NaN values or gradients: each branch of a piecewise function only
sees inputs on its own side of the switch. ``dtype`` selects the computation precision
(``torch.float64`` for metrics; the input's floating dtype by default, for losses).

**ProPhoto RGB (ROMM RGB) -> sRGB** in numpy, as the FiveK experts' 16-bit TIFFs need; the
chain, every step explicit and each constant derived from its definition:

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
import torch

# ------------------------------------------------------------------------------ constants
#: sRGB transfer curve (IEC 61966-2-1): the encoded and the linear value where the segments meet.
SRGB_DECODE_KNEE = 0.04045
SRGB_ENCODE_KNEE = 0.0031308
#: Linear sRGB -> CIE XYZ (D65), skimage's matrix (rows: X, Y, Z).
XYZ_FROM_SRGB = ((0.412453, 0.357580, 0.180423),
                 (0.212671, 0.715160, 0.072169),
                 (0.019334, 0.119193, 0.950227))
#: CIE XYZ -> linear sRGB: the inverse of :data:`XYZ_FROM_SRGB`.
SRGB_FROM_XYZ = tuple(map(tuple, np.linalg.inv(np.array(XYZ_FROM_SRGB)).tolist()))
#: D65 reference white, 2-degree observer (X, Y, Z with Y = 1).
WHITE_D65 = (0.95047, 1.0, 1.08883)
#: CIELAB's switch between the cube root and the linear segment (t, and f on the way back).
LAB_EPSILON = 0.008856
LAB_SLOPE = 7.787
LAB_F_KNEE = LAB_EPSILON ** (1.0 / 3.0)

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
    return np.where(y <= np.float32(SRGB_ENCODE_KNEE), y * np.float32(12.92),
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
    return np.where(e <= np.float32(SRGB_DECODE_KNEE), e / np.float32(12.92), ((e + np.float32(0.055)) / np.float32(1.055))
                    ** np.float32(2.4))


def srgb_to_prophoto(image: np.ndarray) -> np.ndarray:
    """sRGB float [0, 1] ``[..., 3]`` -> encoded ProPhoto RGB float [0, 1] (the inverse chain)."""
    lin = srgb_decode(image) @ np.linalg.inv(PROPHOTO_TO_SRGB).astype(np.float32).T
    return romm_encode(lin)


# ------------------------------------------------------------------ torch: sRGB / XYZ / CIELAB
def _float(x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None:
        return x.to(dtype)
    return x if x.is_floating_point() else x.float()


def _matrix(m: tuple, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(m, dtype=like.dtype, device=like.device)


def _per_channel(values: tuple, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(3, 1, 1)


def _apply(m: tuple, x: torch.Tensor) -> torch.Tensor:
    """The 3x3 matrix ``m`` applied to the channel dimension (-3) of ``x``."""
    return torch.einsum("ij,...jhw->...ihw", _matrix(m, x), x)


def srgb_to_linear(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Decode sRGB-encoded values to linear light (any shape)."""
    x = _float(x, dtype)
    return torch.where(x > SRGB_DECODE_KNEE, ((x.clamp_min(SRGB_DECODE_KNEE) + 0.055) / 1.055).pow(2.4),
                       x / 12.92)


def linear_to_srgb(y: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Encode linear light as sRGB (any shape; not clipped)."""
    y = _float(y, dtype)
    return torch.where(y > SRGB_ENCODE_KNEE, 1.055 * y.clamp_min(SRGB_ENCODE_KNEE).pow(1 / 2.4) - 0.055,
                       12.92 * y)


def linear_to_xyz(lin: torch.Tensor) -> torch.Tensor:
    """Linear sRGB ``[..., 3, H, W]`` -> CIE XYZ (D65)."""
    return _apply(XYZ_FROM_SRGB, lin)


def xyz_to_linear(xyz: torch.Tensor) -> torch.Tensor:
    """CIE XYZ (D65) ``[..., 3, H, W]`` -> linear sRGB (not clipped)."""
    return _apply(SRGB_FROM_XYZ, xyz)


def xyz_to_lab(xyz: torch.Tensor) -> torch.Tensor:
    """CIE XYZ (D65) ``[..., 3, H, W]`` -> CIELAB (L* in [0, 100] for in-gamut colours)."""
    t = xyz / _per_channel(WHITE_D65, xyz)
    f = torch.where(t > LAB_EPSILON, t.clamp_min(LAB_EPSILON).pow(1.0 / 3.0), LAB_SLOPE * t + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-3)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)


def lab_to_xyz(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB ``[..., 3, H, W]`` -> CIE XYZ (D65); the inverse of :func:`xyz_to_lab`."""
    lightness, a, b = lab.unbind(-3)
    fy = (lightness + 16.0) / 116.0
    f = torch.stack((fy + a / 500.0, fy, fy - b / 200.0), dim=-3)
    t = torch.where(f > LAB_F_KNEE, f.pow(3), (f - 16.0 / 116.0) / LAB_SLOPE)
    return t * _per_channel(WHITE_D65, lab)


def rgb_to_lab(rgb: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """sRGB ``[..., 3, H, W]`` (nominally in [0, 1]) -> CIELAB, computed in ``dtype``.

    Equals ``skimage.color.rgb2lab`` (channels last there) on in-range values.
    """
    return xyz_to_lab(linear_to_xyz(srgb_to_linear(rgb, dtype)))


def lab_to_rgb(lab: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """CIELAB ``[..., 3, H, W]`` -> sRGB, computed in ``dtype``; not clipped (skimage's
    ``lab2rgb`` clips to [0, 1] and clips negative Z: clip the result to compare)."""
    return linear_to_srgb(xyz_to_linear(lab_to_xyz(_float(lab, dtype))))
