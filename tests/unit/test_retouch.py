"""The retouch engine: identity, the direction of every edit, content-dependent terms, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from piebench.data.retouch import (
    LIGHTROOM,
    PARAM_NAMES,
    RetouchParams,
    hue_angle,
    linear_to_srgb,
    luminance,
    retouch,
    srgb_to_linear,
)
from piebench.errors import UsageError


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real 96x96 photo (astronaut, shrunk), float32 in [0, 1]."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((96, 96)), np.float32) / 255.0


def lum(x: np.ndarray) -> np.ndarray:
    return luminance(x)[..., 0]


def chroma(x: np.ndarray) -> np.ndarray:
    return x.max(-1) - x.min(-1)


def patch(rgb, size: int = 8) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.float32), (size, size, 3)).copy()


def test_defaults_are_the_identity(photo):
    rng = np.random.default_rng(0)
    noise = rng.random((3, 20, 24, 3)).astype(np.float32)
    assert np.abs(retouch(photo, RetouchParams()) - photo).max() < 1e-6
    assert np.abs(retouch(noise, {}) - noise).max() < 1e-6
    assert np.abs(retouch(noise, None) - noise).max() < 1e-6


def test_srgb_round_trip_and_reference_values():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    assert np.abs(linear_to_srgb(srgb_to_linear(x)) - x).max() < 2e-6
    # IEC 61966-2-1 values: 0.5 encoded is 0.21404 linear; 0.04045 is the branch point
    assert srgb_to_linear(np.float32(0.5)) == pytest.approx(0.214041, abs=1e-5)
    assert srgb_to_linear(np.float32(0.04045)) == pytest.approx(0.04045 / 12.92, abs=1e-6)


@pytest.mark.parametrize("name,value,stat,direction", [
    ("exposure", 0.5, lambda x, y: lum(y).mean() - lum(x).mean(), +1),
    ("exposure", -0.5, lambda x, y: lum(y).mean() - lum(x).mean(), -1),
    ("contrast", 0.5, lambda x, y: lum(y).std() - lum(x).std(), +1),
    ("contrast", -0.5, lambda x, y: lum(y).std() - lum(x).std(), -1),
    ("highlights", -0.7, lambda x, y: lum(y)[lum(x) > 0.7].mean() - lum(x)[lum(x) > 0.7].mean(), -1),
    ("highlights", 0.7, lambda x, y: lum(y)[lum(x) > 0.6].mean() - lum(x)[lum(x) > 0.6].mean(), +1),
    ("shadows", 0.7, lambda x, y: lum(y)[lum(x) < 0.3].mean() - lum(x)[lum(x) < 0.3].mean(), +1),
    ("shadows", -0.7, lambda x, y: lum(y)[lum(x) < 0.3].mean() - lum(x)[lum(x) < 0.3].mean(), -1),
    ("whites", 0.8, lambda x, y: np.percentile(lum(y), 95) - np.percentile(lum(x), 95), +1),
    ("blacks", 0.8, lambda x, y: lum(y)[lum(x) < 0.2].mean() - lum(x)[lum(x) < 0.2].mean(), +1),
    ("blacks", -0.8, lambda x, y: lum(y)[lum(x) < 0.2].mean() - lum(x)[lum(x) < 0.2].mean(), -1),
    ("temperature", 0.5, lambda x, y: (y[..., 0].mean() / y[..., 2].mean()) - (x[..., 0].mean() / x[..., 2].mean()), +1),
    ("temperature", -0.5, lambda x, y: (y[..., 0].mean() / y[..., 2].mean()) - (x[..., 0].mean() / x[..., 2].mean()), -1),
    ("tint", 0.5, lambda x, y: y[..., 1].mean() / y.mean() - x[..., 1].mean() / x.mean(), -1),
    ("saturation", 0.5, lambda x, y: chroma(y).mean() - chroma(x).mean(), +1),
    ("saturation", -0.5, lambda x, y: chroma(y).mean() - chroma(x).mean(), -1),
    ("vibrance", 0.7, lambda x, y: chroma(y).mean() - chroma(x).mean(), +1),
    ("fade", 0.8, lambda x, y: y.min() - x.min(), +1),
])
def test_each_edit_moves_its_statistic(photo, name, value, stat, direction):
    out = retouch(photo, {name: value})
    assert np.sign(stat(photo, out)) == direction
    assert abs(stat(photo, out)) > 1e-3


def test_temperature_keeps_luminance_roughly(photo):
    out = retouch(photo, {"temperature": 0.5})
    assert abs(lum(out).mean() - lum(photo).mean()) < 0.03


@pytest.mark.parametrize("name,x0", [("curve_shadows", 0.125), ("curve_darks", 0.375),
                                     ("curve_lights", 0.625), ("curve_highlights", 0.875)])
def test_parametric_curve_moves_its_region(name, x0):
    ramp = np.linspace(0, 1, 256, dtype=np.float32)[None, :, None].repeat(3, 2)
    up, down = retouch(ramp, {name: 1.0})[0, :, 0], retouch(ramp, {name: -1.0})[0, :, 0]
    i = int(round(x0 * 255))
    assert up[i] == pytest.approx(min(ramp[0, i, 0] + 0.15, 1.0), abs=0.01)  # control point moved by 0.15
    assert down[i] == pytest.approx(max(ramp[0, i, 0] - 0.15, 0.0), abs=0.01)
    far = int(round(((x0 + 0.5) % 1.0) * 255))  # half the range away: barely moved
    assert abs(up[far] - ramp[0, far, 0]) < 0.05


@pytest.mark.parametrize("edit", [{"contrast": 1.0}, {"contrast": -1.0}, {"whites": 1.0}, {"whites": -1.0},
                                  {"blacks": 1.0}, {"blacks": -1.0}, {"curve_darks": -1.0, "curve_lights": 1.0},
                                  {"curve_points": ((0, 0), (0.3, 0.1), (0.7, 0.9), (1, 1))}, {"fade": 1.0}])
def test_tone_functions_are_monotone(edit):
    ramp = np.linspace(0, 1, 512, dtype=np.float32)[None, :, None].repeat(3, 2)
    out = retouch(ramp, edit)[0, :, 0]
    assert np.all(np.diff(out) >= -1e-5)
    assert np.abs(out - ramp[0, :, 0]).max() > 0.02


def test_hsl_bands_act_on_their_hue_only():
    red, blue = patch([0.8, 0.1, 0.1]), patch([0.1, 0.2, 0.8])
    both = np.stack([red, blue])
    shifted = retouch(both, {"hue_red": 1.0})
    assert hue_angle(shifted[0]).mean() > hue_angle(red).mean() + 15  # red moves toward orange
    assert np.abs(shifted[1] - blue).max() < 1e-6
    desat = retouch(both, {"sat_red": -1.0})
    assert chroma(desat[0]).mean() < 0.1 * chroma(red).mean()
    assert np.abs(desat[1] - blue).max() < 1e-6
    darker = retouch(both, {"lum_blue": -1.0})
    assert lum(darker[1]).mean() < lum(blue).mean() - 0.01
    assert np.abs(darker[0] - red).max() < 1e-6
    grey = patch([0.5, 0.5, 0.5])
    assert np.abs(retouch(grey, {"hue_red": 1, "sat_blue": 1, "lum_green": 1}) - grey).max() < 1e-6


def test_split_toning_tints_shadows_and_highlights_apart():
    ramp = np.linspace(0.02, 0.98, 64, dtype=np.float32)[None, :, None].repeat(3, 2)
    out = retouch(ramp, {"split_shadow_hue": 240.0, "split_shadow_sat": 1.0,
                         "split_highlight_hue": 30.0, "split_highlight_sat": 1.0})[0]
    blue_minus_red = out[:, 2] - out[:, 0]
    assert blue_minus_red[:10].mean() > 0.05  # blue shadows
    assert blue_minus_red[-10:].mean() < -0.05  # warm highlights
    lo = retouch(ramp, {"split_highlight_hue": 30.0, "split_highlight_sat": 1.0, "split_balance": -1.0})[0]
    hi = retouch(ramp, {"split_highlight_hue": 30.0, "split_highlight_sat": 1.0, "split_balance": 1.0})[0]
    mid = slice(24, 40)  # positive balance lets the highlight tint reach the midtones
    assert (hi[mid, 0] - hi[mid, 2]).mean() > (lo[mid, 0] - lo[mid, 2]).mean() + 0.02


def test_brightness_pull_beats_any_global_exposure(photo):
    dark = np.clip(photo * 0.5, 0, 1)
    bright = np.clip(0.45 + photo * 0.55, 0, 1)
    both = np.stack([dark, bright])
    target = 0.5

    def brightness(im):  # the documented statistic: mean sRGB-encoded relative luminance
        return linear_to_srgb(luminance(srgb_to_linear(im))).mean()

    before = [abs(brightness(im) - target) for im in both]

    def worst(out):
        return max(abs(brightness(out[i]) - target) for i in range(2))

    pulled = retouch(both, {"target_brightness": target, "brightness_pull": 1.0})
    best_global = min(worst(retouch(both, {"exposure": ev})) for ev in np.linspace(-3, 3, 61))
    assert worst(pulled) < 0.02
    assert worst(pulled) < best_global - 0.05
    half = retouch(both, {"target_brightness": target, "brightness_pull": 0.5})
    for i in range(2):  # half the pull gets part of the way
        assert abs(brightness(pulled[i]) - target) < abs(brightness(half[i]) - target) < before[i]


def test_saturation_adapt_depends_on_the_photo(photo):
    dull = np.clip(lum(photo)[..., None] + 0.25 * (photo - lum(photo)[..., None]), 0, 1)
    both = np.stack([dull, photo])
    out = retouch(both, {"target_saturation": 0.3, "saturation_adapt": 1.0})
    gain = [chroma(out[i]).mean() / chroma(both[i]).mean() for i in range(2)]
    assert gain[0] > 1.5 * gain[1]  # the dull photo gets a bigger boost
    for i in range(2):
        assert abs(chroma(out[i]).mean() - 0.3) < abs(chroma(both[i]).mean() - 0.3)


def test_per_image_parameters_match_separate_calls(photo):
    batch = np.stack([photo, photo[::-1], photo[:, ::-1]])
    ev = np.array([-0.5, 0.0, 0.7], np.float32)
    contrast = np.array([0.3, -0.2, 0.0], np.float32)
    together = retouch(batch, {"exposure": ev, "contrast": contrast, "saturation": 0.2})
    for i in range(3):
        alone = retouch(batch[i], {"exposure": float(ev[i]), "contrast": float(contrast[i]), "saturation": 0.2})
        # photo 1 alone skips linear light (no exposure): only the tone LUT's 1e-4 error differs
        assert np.abs(together[i] - alone).max() < 2e-4


def test_vector_and_lightroom_names():
    assert len(PARAM_NAMES) == len(set(PARAM_NAMES)) == len(RetouchParams().to_vector())
    assert set(LIGHTROOM) <= set(PARAM_NAMES)
    p = RetouchParams(exposure=0.4, hue_blue=-0.2, split_shadow_hue=200.0)
    assert np.array_equal(RetouchParams.from_vector(p.to_vector()).to_vector(), p.to_vector())
    assert p.to_vector()[PARAM_NAMES.index("hue_blue")] == pytest.approx(-0.2)
    lr = RetouchParams.from_lightroom({"Exposure2012": 1.5, "Contrast2012": 40, "IncrementalTemperature": -20,
                                       "HueAdjustmentOrange": 10, "SplitToningShadowHue": 220,
                                       "ToneCurvePV2012": [[0, 20], [255, 255]]})
    assert (lr.exposure, lr.contrast, lr.temperature, lr.hue_orange, lr.split_shadow_hue) == \
        pytest.approx((1.5, 0.4, -0.2, 0.1, 220.0))
    assert lr.curve_points == ((0.0, 20 / 255), (1.0, 1.0))


def test_bad_input_is_a_usage_error(photo):
    with pytest.raises(UsageError, match="float"):
        retouch((photo * 255).astype(np.uint8), {})
    with pytest.raises(UsageError, match="unknown retouch parameter"):
        retouch(photo, {"exposur": 1.0})
    with pytest.raises(UsageError, match=r"\[\.\.\., H, W, 3\]"):
        retouch(photo[..., :2], {})
    with pytest.raises(UsageError, match="broadcast"):
        retouch(np.stack([photo, photo]), {"exposure": np.zeros(3)})


_ranges = {n: st.floats(-1, 1) for n in PARAM_NAMES}
_ranges.update(exposure=st.floats(-3, 3), split_highlight_hue=st.floats(0, 360), split_shadow_hue=st.floats(0, 360),
               target_brightness=st.floats(0, 1), target_saturation=st.floats(0, 1), fade=st.floats(0, 1),
               brightness_pull=st.floats(0, 1), saturation_adapt=st.floats(0, 1))


@settings(max_examples=40, deadline=None)
@given(st.fixed_dictionaries({}, optional=_ranges), st.integers(0, 2**16))
def test_any_parameters_give_a_valid_image(values, seed):
    x = np.random.default_rng(seed).random((2, 12, 10, 3)).astype(np.float32)
    out = retouch(x, values)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1


@pytest.mark.slow
def test_six_thousand_crops_take_seconds():
    crops = np.random.default_rng(0).random((6000, 64, 64, 3)).astype(np.float32)
    params = RetouchParams(exposure=0.3, contrast=0.3, highlights=-0.3, shadows=0.3, curve_darks=0.3,
                           temperature=0.3, saturation=0.2, vibrance=0.3, hue_red=0.2, sat_blue=0.3, fade=0.2,
                           split_shadow_hue=200, split_shadow_sat=0.3, brightness_pull=0.5, saturation_adapt=0.5)
    start = time.process_time()
    for i in range(0, 6000, 500):
        retouch(crops[i:i + 500], params)
    assert time.process_time() - start < 8.0
