"""The retouch engine's building blocks: sRGB transfer, luminance and hue, lookup tables, and
the stages that are more than a line (content-dependent exposure, tone LUT, HSL bands).

Images here are planar float32 ``[B, C, H, W]``; per-image parameters are ``[B]`` arrays.
:mod:`piebench.data.retouch` is the public entry point.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import UsageError

#: Lightroom's eight HSL hue bands and their centre hues in degrees (HSV hue).
HSL_BANDS = ("red", "orange", "yellow", "green", "aqua", "blue", "purple", "magenta")
HSL_CENTRES = (0.0, 30.0, 60.0, 120.0, 180.0, 240.0, 270.0, 300.0)
#: x positions of the parametric tone curve's control points: centres of Lightroom's four
#: regions (shadows, darks, lights, highlights) with the default splits 25 / 50 / 75.
CURVE_X = (0.125, 0.375, 0.625, 0.875)

LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec.709 / sRGB luminance weights


# -- colour helpers ---------------------------------------------------------------------------
_T_ENC, _T_LIN = np.float32(0.04045), np.float32(0.0031308)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB EOTF (IEC 61966-2-1) on values in [0, 1] (branch-free form)."""
    x = np.asarray(x, np.float32)
    power = ((np.maximum(x, _T_ENC) + np.float32(0.055)) * np.float32(1 / 1.055)) ** np.float32(2.4)
    return power + np.minimum(x * np.float32(1 / 12.92) - _T_LIN, np.float32(0.0))


def linear_to_srgb(y: np.ndarray) -> np.ndarray:
    """Inverse sRGB EOTF; clips to [0, 1] first (branch-free form)."""
    y = np.clip(np.asarray(y, np.float32), np.float32(0.0), np.float32(1.0))
    power = np.float32(1.055) * np.maximum(y, _T_LIN) ** np.float32(1 / 2.4) - np.float32(0.055)
    return power + np.minimum(y * np.float32(12.92) - _T_ENC, np.float32(0.0))


def luminance(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rec.709 luminance of RGB along ``axis`` (kept, size 1); relative luminance on linear input."""
    x = np.moveaxis(np.asarray(x), axis, 0)
    y = LUMA[0] * x[0] + LUMA[1] * x[1] + LUMA[2] * x[2]
    return np.expand_dims(y, axis)


def hue_angle(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Hue in degrees [0, 360) of RGB along ``axis``: the angle in the opponent plane
    (r - (g + b) / 2, sqrt(3) / 2 (g - b)), which puts the primaries and secondaries at the
    HSV hues (red 0, yellow 60, green 120, cyan 180, blue 240, magenta 300)."""
    x = np.moveaxis(np.asarray(x, np.float32), axis, 0)
    a, b = opponent(x[0], x[1], x[2])
    return np.degrees(np.arctan2(b, a)) % np.float32(360.0)


def opponent(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return r - np.float32(0.5) * (g + b), np.float32(math.sqrt(3) / 2) * (g - b)


def col(v: np.ndarray) -> np.ndarray:
    """``[B]`` -> ``[B, 1, 1, 1]`` float32, to scale planar images per image."""
    return np.asarray(v, np.float32).reshape(-1, 1, 1, 1)


def active(*values: np.ndarray) -> bool:
    """True when any value differs from 0 (a stage at 0 is skipped, keeping the identity exact)."""
    return any(bool(np.any(v != 0)) for v in values)


def smoothstep(lo: Any, hi: Any, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


def hue_tint(hue: np.ndarray) -> np.ndarray:
    """Zero-luminance RGB offset of a fully saturated hue (degrees), ``[B, 3, 1, 1]``."""
    k = (np.array([5.0, 3.0, 1.0])[None, :] + (hue[:, None] % 360.0) / 60.0) % 6.0
    rgb = 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    rgb = rgb - (rgb @ LUMA.astype(np.float64))[:, None]
    return rgb.astype(np.float32).reshape(-1, 3, 1, 1)


def apply_lut(x: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Lookup with linear interpolation: ``x [B, ...]`` in [0, 1] through ``lut [B, L]`` (or ``[L]``)."""
    n = lut.shape[-1]
    pos = np.clip(x, 0.0, 1.0)
    pos *= np.float32(n - 1)
    idx = pos.astype(np.intp)
    np.minimum(idx, n - 2, out=idx)
    pos -= idx
    per_image = lut.ndim == 2 and lut.shape[0] > 1 and not np.all(lut == lut[:1])
    if per_image:
        idx += (np.arange(lut.shape[0], dtype=np.intp) * n).reshape((-1,) + (1,) * (x.ndim - 1))
    flat = np.ascontiguousarray(lut.reshape(-1) if per_image else lut.reshape(-1, n)[0])
    lo = flat.take(idx)
    hi = flat.take(idx + 1)
    hi -= lo
    hi *= pos
    hi += lo
    return hi


def pchip(xk: np.ndarray, yk: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Monotone cubic (PCHIP) curves through ``(xk, yk [B, K])``, evaluated at ``at [n]`` -> ``[B, n]``."""
    from scipy.interpolate import PchipInterpolator  # 0.3 s to import; only retouching needs it

    yk = np.clip(np.maximum.accumulate(yk, axis=1), 0.0, 1.0)
    return np.clip(PchipInterpolator(xk, yk, axis=1)(at), 0.0, 1.0)


def per_image_curve(lut: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Evaluate per-image curves ``lut [B, L]`` (on a uniform [0, 1] grid) at ``v [B, n]``."""
    n = lut.shape[1]
    pos = np.clip(v, 0.0, 1.0) * (n - 1)
    i = np.minimum(pos.astype(np.int64), n - 2)
    f = pos - i
    lo, hi = np.take_along_axis(lut, i, 1), np.take_along_axis(lut, i + 1, 1)
    return lo + (hi - lo) * f


def full_correction(lum: np.ndarray, target: np.ndarray, iterations: int = 2) -> np.ndarray:
    """EV (within +-3) that brings each image's mean sRGB-encoded luminance to ``target``."""
    target = np.clip(target, 0.02, 1.0)
    ev = np.zeros(lum.shape[0], np.float32)
    for _ in range(iterations):  # fixed point of ev += 2.2 log2(target / mean), gamma ~ 2.2
        mean = linear_to_srgb(lum * col(2.0 ** ev)).mean(axis=(1, 2, 3))
        ev = np.clip(ev + 2.2 * np.log2(target / np.maximum(mean, 0.02)), -3.0, 3.0).astype(np.float32)
    return ev


def tone_lut(q: dict[str, np.ndarray], curve_points: tuple, linear: bool) -> np.ndarray | None:
    """Every per-channel tone function (whites, blacks, contrast, curves, fade) as one LUT ``[B, L]``.

    On linear input (``linear``) the LUT also holds the sRGB encoding and is indexed by
    sqrt(linear), where the encoding is smooth; 256 entries with linear interpolation keep the
    error below 1e-4 (a fortieth of an 8-bit step).
    """
    names = ("whites", "blacks", "contrast", "fade", "curve_shadows", "curve_darks", "curve_lights",
             "curve_highlights")
    if not (active(*(q[k] for k in names)) or curve_points):
        return None
    rows = 1 if all(bool(np.all(q[k] == q[k][:1])) for k in names) else len(q["whites"])
    col = {k: q[k][:rows, None] for k in names}
    grid = np.linspace(0.0, 1.0, LUT_SIZE, dtype=np.float32)
    v = np.broadcast_to(linear_to_srgb(grid * grid) if linear else grid, (rows, LUT_SIZE))
    v = np.clip(v + np.float32(0.25) * col["whites"] * v ** 4, 0.0, 1.0)
    v = np.clip(v + np.float32(0.25) * col["blacks"] * (1.0 - v) ** 4, 0.0, 1.0)
    v = v - np.float32(0.8 / (2 * math.pi)) * col["contrast"] * np.sin(np.float32(2 * math.pi) * v)
    curve = [col[k][:, 0] for k in names[4:]]
    if active(*curve):
        xk = np.array((0.0, *CURVE_X, 1.0))
        zero = np.zeros_like(curve[0])
        yk = xk[None, :] + 0.15 * np.stack([zero, *curve, zero], 1)
        if np.all(yk == yk[:1]):  # one curve for every image
            v = pchip(xk, yk[:1], v.reshape(-1)).reshape(v.shape)
        else:
            v = per_image_curve(pchip(xk, yk, np.linspace(0.0, 1.0, 1024)), v)
    if curve_points:
        pts = np.array(sorted(curve_points), np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2 or pts.min() < 0 or pts.max() > 1:
            raise UsageError("curve_points must be at least two (x, y) pairs in [0, 1]")
        v = pchip(pts[:, 0], pts[None, :, 1], v.reshape(-1)).reshape(v.shape)
    lift = np.float32(0.25) * np.clip(col["fade"], 0.0, 1.0)
    return (lift + (1.0 - lift) * v).astype(np.float32)


LUT_SIZE = 256


def hsl_shift(x: np.ndarray, dh: np.ndarray, ds: np.ndarray, dl: np.ndarray) -> np.ndarray:
    """Per-hue-band hue / saturation / luminance shifts (band values interpolate around the hue circle).

    Hue is the opponent-plane angle (:func:`hue_angle`); a hue shift of v rotates chroma by
    30 v degrees, saturation scales chroma by 1 + v, luminance scales the pixel by 2**(0.7 v s)
    with s = max - min of RGB (greys are untouched).
    """
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    mean = (r + g + b) * np.float32(1 / 3)
    a, o = opponent(r, g, b)
    s = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    hue = np.degrees(np.arctan2(o, a)) % np.float32(360.0)
    # per-image tables of each band value over hue at 0.5 degree steps
    grid = np.arange(720) * 0.5
    centres = np.array((*HSL_CENTRES, 360.0))
    shared = all(bool(np.all(t == t[:1])) for t in (dh, ds, dl))
    rows = 1 if shared else dh.shape[0]

    def table(vals: np.ndarray) -> np.ndarray:
        ext = np.concatenate([vals[:rows], vals[:rows, :1]], 1)
        return np.stack([np.interp(grid, centres, e) for e in ext]).astype(np.float32).reshape(-1)

    idx = (hue * np.float32(2.0)).astype(np.intp)
    np.minimum(idx, 719, out=idx)
    if not shared:
        idx += (np.arange(rows, dtype=np.intp) * 720).reshape(-1, 1, 1)
    shift = np.radians(np.float32(30.0) * table(dh).take(idx))
    scale = 1.0 + table(ds).take(idx)
    cos, sin = np.cos(shift) * scale, np.sin(shift) * scale
    a, o = a * cos - o * sin, a * sin + o * cos
    lum_gain = np.exp2(np.float32(0.7) * table(dl).take(idx) * s)
    k = np.float32(1 / math.sqrt(3))
    out = np.stack([mean + np.float32(2 / 3) * a, mean - a / 3 + k * o, mean - a / 3 - k * o], 1)
    return np.clip(out * lum_gain[:, None], 0.0, 1.0)
