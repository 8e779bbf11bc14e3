"""The retouch engine: interpretable, Lightroom-like global edits plus content-dependent terms.

:func:`retouch` applies a :class:`RetouchParams` to sRGB float images ``[..., H, W, 3]`` in
[0, 1]. Every scalar parameter may also be an array over the leading (batch) dimensions, so one
call retouches many crops with per-image values (jitter) at numpy speed.

Order of operations (``lin`` = linear light, ``enc`` = sRGB-encoded):

1. decode sRGB -> lin
2. white balance (``temperature``, ``tint``): von Kries gains in lin, luminance kept
3. exposure (``exposure`` EV, plus the content-dependent pull of the image's mean brightness
   toward ``target_brightness`` with strength ``brightness_pull``)
4. ``highlights`` / ``shadows``: luminance-masked gains in lin (EV)
5. encode lin -> enc (clips at 1)
6. ``whites`` / ``blacks``, ``contrast``, parametric tone curve (``curve_*``), explicit point
   curve (``curve_points``), ``fade``: per-channel tone functions in enc
7. colour in enc: ``saturation`` (times the content-dependent ``saturation_adapt`` gain toward
   ``target_saturation``), ``vibrance``, then per-hue HSL shifts (8 Lightroom bands)
8. split toning (highlight / shadow hue and saturation, balance); clip to [0, 1]

Units: Lightroom sliders that run -100..100 are divided by 100 (so -1..1); ``exposure`` is in
EV like ``Exposure2012``; hues are in degrees. :data:`LIGHTROOM` maps each parameter to its
Lightroom/XMP name and scale. Defaults are the identity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..errors import UsageError
from .retouch_ops import (
    CURVE_X,
    HSL_BANDS,
    HSL_CENTRES,
    LUMA,
    active,
    apply_lut,
    col,
    full_correction,
    hsl_shift,
    hue_angle,
    hue_tint,
    linear_to_srgb,
    luminance,
    smoothstep,
    srgb_to_linear,
    tone_lut,
)

__all__ = ["CURVE_X", "HSL_BANDS", "HSL_CENTRES", "LIGHTROOM", "PARAM_NAMES", "RetouchParams", "hue_angle",
           "linear_to_srgb", "luminance", "retouch", "srgb_to_linear"]


@dataclass
class RetouchParams:
    """One retoucher's settings; all defaults leave the image unchanged.

    exposure: EV (``Exposure2012``), linear-light gain 2**exposure.
    contrast, highlights, shadows, whites, blacks: -1..1 (``*2012`` / 100). highlights and
        shadows are gains of up to 1 EV / 1.5 EV on the bright / dark tones.
    curve_shadows, curve_darks, curve_lights, curve_highlights: -1..1 (``Parametric*`` / 100),
        moving the tone curve at x = 0.125 / 0.375 / 0.625 / 0.875 by up to 0.15 (monotone
        cubic interpolation).
    temperature, tint: -1..1 (``IncrementalTemperature`` / ``IncrementalTint`` / 100); +1
        temperature multiplies linear R by 2**0.4 and B by 2**-0.4 (warmer), +1 tint multiplies
        G by 2**-0.3 (magenta); gains are normalised to keep luminance.
    saturation, vibrance: -1..1; saturation scales chroma by 1 + saturation (-1 = grey);
        vibrance scales it by 1 + vibrance * (1 - s / 0.5) for pixels of saturation s < 0.5.
    hue_<band>, sat_<band>, lum_<band>: -1..1 per HSL band (``HueAdjustmentRed`` / 100 ...):
        hue shift up to 30 degrees, saturation x (1 + v), value x 2**(0.7 v s).
    fade: 0..1, lifts the black point to 0.25 * fade.
    split_highlight_hue, split_shadow_hue: degrees; split_highlight_sat, split_shadow_sat:
        0..1 (/100); split_balance: -1..1 (positive favours the highlight tint).
    target_brightness: mean sRGB-encoded luminance (0..1) the user pulls each image toward;
    brightness_pull: 0..1 strength of that pull: the fraction of the exposure correction (in
        EV, within +-3) that would bring the image's mean (after white balance) exactly to the
        target. Content-dependent: a dark and a bright photo get different exposures.
    target_saturation: mean per-pixel saturation (max - min of RGB) the user likes;
    saturation_adapt: 0..1 strength of the chroma gain 2**(adapt * log2(target / mean_sat)),
        clipped at +-2 stops.
    curve_points: optional explicit point curve ((x, y), ...) in [0, 1] applied after the
        parametric curve (``ToneCurvePV2012`` / 255); not part of :data:`PARAM_NAMES`.
    """

    exposure: Any = 0.0
    contrast: Any = 0.0
    highlights: Any = 0.0
    shadows: Any = 0.0
    whites: Any = 0.0
    blacks: Any = 0.0
    curve_shadows: Any = 0.0
    curve_darks: Any = 0.0
    curve_lights: Any = 0.0
    curve_highlights: Any = 0.0
    temperature: Any = 0.0
    tint: Any = 0.0
    saturation: Any = 0.0
    vibrance: Any = 0.0
    hue_red: Any = 0.0
    hue_orange: Any = 0.0
    hue_yellow: Any = 0.0
    hue_green: Any = 0.0
    hue_aqua: Any = 0.0
    hue_blue: Any = 0.0
    hue_purple: Any = 0.0
    hue_magenta: Any = 0.0
    sat_red: Any = 0.0
    sat_orange: Any = 0.0
    sat_yellow: Any = 0.0
    sat_green: Any = 0.0
    sat_aqua: Any = 0.0
    sat_blue: Any = 0.0
    sat_purple: Any = 0.0
    sat_magenta: Any = 0.0
    lum_red: Any = 0.0
    lum_orange: Any = 0.0
    lum_yellow: Any = 0.0
    lum_green: Any = 0.0
    lum_aqua: Any = 0.0
    lum_blue: Any = 0.0
    lum_purple: Any = 0.0
    lum_magenta: Any = 0.0
    fade: Any = 0.0
    split_highlight_hue: Any = 0.0
    split_highlight_sat: Any = 0.0
    split_shadow_hue: Any = 0.0
    split_shadow_sat: Any = 0.0
    split_balance: Any = 0.0
    target_brightness: Any = 0.45
    brightness_pull: Any = 0.0
    target_saturation: Any = 0.25
    saturation_adapt: Any = 0.0
    curve_points: tuple = ()

    def to_vector(self) -> np.ndarray:
        """The scalar parameters in :data:`PARAM_NAMES` order, float32 ``[A]``."""
        return np.array([float(getattr(self, n)) for n in PARAM_NAMES], np.float32)

    @classmethod
    def from_vector(cls, vector: Any) -> RetouchParams:
        """Inverse of :meth:`to_vector`."""
        vector = np.asarray(vector, np.float64).reshape(-1)
        if vector.shape[0] != len(PARAM_NAMES):
            raise UsageError(f"a parameter vector has {len(PARAM_NAMES)} entries, got {vector.shape[0]}")
        return cls(**{n: float(v) for n, v in zip(PARAM_NAMES, vector, strict=True)})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RetouchParams:
        """Parameters from ``{name: value}``; an unknown name is a UsageError."""
        unknown = sorted(set(values) - _FIELD_NAMES)
        if unknown:
            raise UsageError(f"unknown retouch parameter(s) {', '.join(unknown)}; "
                             f"valid names: {', '.join(PARAM_NAMES)}, curve_points")
        return cls(**values)

    @classmethod
    def from_lightroom(cls, settings: dict[str, Any]) -> RetouchParams:
        """Parameters from Lightroom/XMP settings (``{"Exposure2012": 0.5, ...}``).

        Names without a counterpart are ignored; ``ToneCurvePV2012`` (points 0..255) becomes
        ``curve_points``.
        """
        out: dict[str, Any] = {}
        for name, (lr_name, scale) in LIGHTROOM.items():
            if lr_name in settings:
                out[name] = float(settings[lr_name]) * scale
        curve = settings.get("ToneCurvePV2012")
        if curve:
            points = tuple((float(x) / 255.0, float(y) / 255.0) for x, y in curve)
            if points != ((0.0, 0.0), (1.0, 1.0)):
                out["curve_points"] = points
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able ``{name: value}``."""
        d = asdict(self)
        d["curve_points"] = [list(p) for p in self.curve_points]
        return d


#: The scalar parameters, in the order of :meth:`RetouchParams.to_vector`.
PARAM_NAMES: list[str] = [f.name for f in fields(RetouchParams) if f.name != "curve_points"]
_FIELD_NAMES = {f.name for f in fields(RetouchParams)}

#: parameter -> (Lightroom / XMP name, scale such that parameter = xmp_value * scale).
#: ``fade``, ``target_*``, ``brightness_pull`` and ``saturation_adapt`` have no Lightroom slider.
LIGHTROOM: dict[str, tuple[str, float]] = {
    "exposure": ("Exposure2012", 1.0),
    "contrast": ("Contrast2012", 0.01),
    "highlights": ("Highlights2012", 0.01),
    "shadows": ("Shadows2012", 0.01),
    "whites": ("Whites2012", 0.01),
    "blacks": ("Blacks2012", 0.01),
    "curve_shadows": ("ParametricShadows", 0.01),
    "curve_darks": ("ParametricDarks", 0.01),
    "curve_lights": ("ParametricLights", 0.01),
    "curve_highlights": ("ParametricHighlights", 0.01),
    "temperature": ("IncrementalTemperature", 0.01),
    "tint": ("IncrementalTint", 0.01),
    "saturation": ("Saturation", 0.01),
    "vibrance": ("Vibrance", 0.01),
    **{f"hue_{b}": (f"HueAdjustment{b.capitalize()}", 0.01) for b in HSL_BANDS},
    **{f"sat_{b}": (f"SaturationAdjustment{b.capitalize()}", 0.01) for b in HSL_BANDS},
    **{f"lum_{b}": (f"LuminanceAdjustment{b.capitalize()}", 0.01) for b in HSL_BANDS},
    "split_highlight_hue": ("SplitToningHighlightHue", 1.0),
    "split_highlight_sat": ("SplitToningHighlightSaturation", 0.01),
    "split_shadow_hue": ("SplitToningShadowHue", 1.0),
    "split_shadow_sat": ("SplitToningShadowSaturation", 0.01),
    "split_balance": ("SplitToningBalance", 0.01),
}


# -- the engine -------------------------------------------------------------------------------
def _coerce(params: RetouchParams | dict[str, Any] | None) -> RetouchParams:
    if params is None:
        return RetouchParams()
    if isinstance(params, RetouchParams):
        return params
    if isinstance(params, dict):
        return RetouchParams.from_dict(params)
    raise UsageError(f"retouch params must be RetouchParams or a dict, not {type(params).__name__}")


def _broadcast(p: RetouchParams, lead: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Every scalar parameter as float32 ``[B]`` (B = prod(lead), 1 for a single image)."""
    b = int(np.prod(lead)) if lead else 1
    out = {}
    for name in PARAM_NAMES:
        v = np.asarray(getattr(p, name), np.float32)
        try:
            v = np.broadcast_to(v, lead).reshape(b)
        except ValueError:
            raise UsageError(f"retouch parameter '{name}' has shape {v.shape}, which does not broadcast "
                             f"to the images' leading shape {lead}") from None
        if not np.all(np.isfinite(v)):
            raise UsageError(f"retouch parameter '{name}' is not finite")
        out[name] = v
    return out


def retouch(image: np.ndarray, params: RetouchParams | dict[str, Any] | None = None) -> np.ndarray:
    """Retouch sRGB float image(s) ``[..., H, W, 3]`` in [0, 1]; returns float32, same shape.

    Scalar parameters may be arrays broadcasting to the leading shape ``[...]`` (one value per
    image). Default parameters return the image unchanged. Retouching many crops in one call
    is much faster than one call per crop.
    """
    x = np.asarray(image)
    if x.ndim < 3 or x.shape[-1] != 3:
        raise UsageError(f"retouch expects images [..., H, W, 3], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise UsageError(f"retouch expects float images in [0, 1], got dtype {x.dtype} (divide uint8 by 255)")
    lead, (h, w) = x.shape[:-3], x.shape[-3:-1]
    p = _coerce(params)
    q = _broadcast(p, lead)
    flat = x.reshape(-1, h, w, 3)
    out = np.empty(flat.shape, np.float32)
    step = max(1, _CHUNK_PIXELS // (h * w))  # chunks that stay in cache are ~2x faster
    for i in range(0, flat.shape[0], step):
        planar = np.ascontiguousarray(flat[i:i + step].transpose(0, 3, 1, 2), dtype=np.float32)
        chunk = {k: v[i:i + step] for k, v in q.items()}
        out[i:i + step] = _retouch(planar, chunk, tuple(p.curve_points)).transpose(0, 2, 3, 1)
    return out.reshape(x.shape)


_CHUNK_PIXELS = 1 << 16


def _retouch(x: np.ndarray, q: dict[str, np.ndarray], curve_points: tuple) -> np.ndarray:
    """The pipeline on planar images ``x [B, 3, H, W]``."""
    linear = active(q["temperature"], q["tint"], q["exposure"], q["brightness_pull"],
                    q["highlights"], q["shadows"])
    if linear:
        x = srgb_to_linear(x)
        if active(q["temperature"], q["tint"]):
            t, ti = q["temperature"][:, None], q["tint"][:, None]
            gains = np.concatenate([2.0 ** (0.4 * t), 2.0 ** (-0.3 * ti), 2.0 ** (-0.4 * t)], 1)
            x *= (gains / (gains @ LUMA)[:, None]).reshape(-1, 3, 1, 1).astype(np.float32)
        ev = q["exposure"]
        if active(q["brightness_pull"]):
            ev = ev + q["brightness_pull"] * full_correction(luminance(x, 1), q["target_brightness"])
        if active(ev):
            x *= col(2.0 ** ev)
        if active(q["highlights"], q["shadows"]):
            lum = linear_to_srgb(luminance(x, 1))
            gain_ev = (col(q["highlights"]) * smoothstep(0.45, 1.0, lum)
                       + np.float32(1.5) * col(q["shadows"]) * (1.0 - smoothstep(0.0, 0.55, lum)))
            x *= np.exp2(gain_ev)
    tone = tone_lut(q, curve_points, linear)
    if tone is not None:
        x = apply_lut(np.sqrt(np.maximum(x, 0.0)) if linear else x, tone)
    elif linear:
        x = linear_to_srgb(x)
    if active(q["saturation"], q["vibrance"], q["saturation_adapt"]):
        sat_px = np.maximum(np.maximum(x[:, 0], x[:, 1]), x[:, 2])[:, None]
        sat_px -= np.minimum(np.minimum(x[:, 0], x[:, 1]), x[:, 2])[:, None]
        gain = 1.0 + q["saturation"]
        if active(q["saturation_adapt"]):
            mean_sat = np.maximum(sat_px.mean(axis=(1, 2, 3)), 0.02)
            stops = np.clip(np.log2(np.maximum(q["target_saturation"], 0.01) / mean_sat), -2.0, 2.0)
            gain = gain * 2.0 ** (q["saturation_adapt"] * stops)
        gain = col(np.maximum(gain, 0.0))
        if active(q["vibrance"]):
            gain = gain * np.maximum(1.0 + col(q["vibrance"]) * (1.0 - np.clip(sat_px * 2.0, 0.0, 1.0)), 0.0)
        lum = luminance(x, 1)
        x = np.clip(lum + gain * (x - lum), 0.0, 1.0)
    hsl = [np.stack([q[f"{k}_{b}"] for b in HSL_BANDS], 1) for k in ("hue", "sat", "lum")]
    if active(*hsl):
        x = hsl_shift(x, *hsl)
    if active(q["split_highlight_sat"], q["split_shadow_sat"]):
        lum = luminance(x, 1)
        pivot = col(0.5 - 0.3 * q["split_balance"])
        w_hi = smoothstep(pivot - 0.3, pivot + 0.3, lum)
        x = (x + np.float32(0.3) * col(q["split_highlight_sat"]) * w_hi * hue_tint(q["split_highlight_hue"])
             + np.float32(0.3) * col(q["split_shadow_sat"]) * (1.0 - w_hi) * hue_tint(q["split_shadow_hue"]))
    return np.clip(x, 0.0, 1.0)


