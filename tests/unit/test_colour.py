"""piebench.colour: sRGB <-> XYZ <-> CIELAB in torch against scikit-image on real photos (values,
round trips, gradients), and ProPhoto RGB -> sRGB against colour-science and an independent
skimage computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import color, data

from piebench import colour as pc
from piebench.colour import (
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


# ------------------------------------------------------------------------------ torch CIELAB
def _photo(name: str) -> np.ndarray:
    """A real photo from skimage.data as float64 [H, W, 3] in [0, 1], plus its darkest corner."""
    img = getattr(data, name)()[::2, ::2].astype(np.float64) / 255
    img[:8, :8] *= 0.05  # deep shadows: sRGB's and CIELAB's linear segments
    return img


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_rgb_to_lab_equals_skimage_on_photos(name):
    img = _photo(name)
    ref = color.rgb2lab(img)
    assert (ref[..., 0] < 8).any()  # the linear segment of f(t) is exercised
    ours = _hwc(pc.rgb_to_lab(_chw(img)))
    assert ours.dtype == np.float64 and np.abs(ours - ref).max() < 1e-9
    # float32 input at float64 precision: the metric's path; float32 throughout: the loss's.
    img32 = torch.from_numpy(img.astype(np.float32))
    ref32 = color.rgb2lab(img32.double().numpy())
    assert np.abs(_hwc(pc.rgb_to_lab(_chw(img32.numpy()), torch.float64)) - ref32).max() < 1e-9
    assert np.abs(_hwc(pc.rgb_to_lab(_chw(img32.numpy()))) - ref32).max() < 5e-4


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_lab_to_rgb_equals_skimage_and_round_trips(name):
    img = _photo(name)
    lab = color.rgb2lab(img)
    ours = _hwc(pc.lab_to_rgb(_chw(lab)))
    assert np.abs(np.clip(ours, 0, 1) - color.lab2rgb(lab)).max() < 1e-6
    assert np.abs(_hwc(pc.lab_to_rgb(pc.rgb_to_lab(_chw(img)))) - img).max() < 1e-12
    lin = pc.srgb_to_linear(_chw(img))
    assert np.abs(_hwc(pc.linear_to_srgb(lin)) - img).max() < 1e-12
    xyz = pc.linear_to_xyz(lin)
    assert np.abs(_hwc(xyz) - color.rgb2xyz(img)).max() < 1e-12
    assert np.abs(_hwc(pc.lab_to_xyz(pc.xyz_to_lab(xyz))) - _hwc(xyz)).max() < 1e-12


def test_delta_e_of_the_metric_equals_skimage_cie76():
    from piebench.metrics import delta_e

    a, b = _photo("astronaut")[:200, :200], _photo("coffee")[:200, :200]
    ref = color.deltaE_cie76(color.rgb2lab(a), color.rgb2lab(b)).mean()
    ours = delta_e(_chw(a.astype(np.float32)), _chw(b.astype(np.float32))).item()
    ref32 = color.deltaE_cie76(color.rgb2lab(a.astype(np.float32).astype(np.float64)),
                               color.rgb2lab(b.astype(np.float32).astype(np.float64))).mean()
    assert ref > 10 and abs(ours - ref32) < 1e-9 and abs(ours - ref) < 1e-5


def test_white_is_neutral_and_black_is_zero():
    lab = pc.rgb_to_lab(torch.tensor([1.0, 0.0]).view(1, 1, 2, 1).expand(1, 3, 2, 1), torch.float64)
    white, black = lab[0, :, 0, 0], lab[0, :, 1, 0]
    assert white[0].item() == pytest.approx(100, abs=1e-3) and white[1:].abs().max() < 0.01
    assert black.abs().max() < 1e-12


def test_any_leading_shape_and_dtype():
    x = torch.rand(2, 4, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    flat = pc.rgb_to_lab(x.view(8, 3, 5, 6))
    assert pc.rgb_to_lab(x).shape == x.shape and torch.equal(pc.rgb_to_lab(x).view(8, 3, 5, 6), flat)
    assert pc.rgb_to_lab(x[0, 0]).shape == (3, 5, 6)
    assert pc.rgb_to_lab(x).dtype == torch.float32 and pc.rgb_to_lab(x, torch.float64).dtype == torch.float64
    assert pc.rgb_to_lab((x * 255).to(torch.uint8)).dtype == torch.float32


# Values on both sides of each switch: sRGB's 0.04045 (encoded) / 0.0031308 (linear) and
# CIELAB's t = 0.008856 (L* = 8, sRGB 0.0922 for a grey); and out of range (< 0, > 1).
_NEAR_SWITCHES = [-0.2, 0.0, 1e-4, 0.0400, 0.0410, 0.0915, 0.0930, 0.5, 1.0, 1.2]


def test_gradients_are_correct_and_finite_across_the_switches():
    v = torch.tensor(_NEAR_SWITCHES, dtype=torch.float64)
    grid = torch.cat([torch.stack([v, v, v]), torch.stack([v, v.roll(3), v.roll(7)])], 1)  # greys, colours
    grid = grid.view(1, 3, 1, -1).requires_grad_()
    t_grey = pc.srgb_to_linear(torch.tensor([0.0915, 0.0930], dtype=torch.float64))
    assert t_grey[0] < pc.LAB_EPSILON < t_grey[1]  # the greys straddle CIELAB's switch
    assert torch.autograd.gradcheck(pc.rgb_to_lab, (grid,), eps=1e-7, atol=1e-6)
    lab = pc.rgb_to_lab(grid.detach()).requires_grad_()
    assert torch.autograd.gradcheck(pc.lab_to_rgb, (lab,), eps=1e-7, atol=1e-6)
    lin = torch.tensor([-0.1, 0.0, 0.003, 0.0032, 0.5, 1.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pc.linear_to_srgb, (lin,), eps=1e-7, atol=1e-6)
    for x in (grid, torch.tensor([[[[-1.0]], [[0.0]], [[2.0]]]], requires_grad=True)):
        x.grad = None
        pc.rgb_to_lab(x).sum().backward()
        assert torch.isfinite(x.grad).all()


def test_every_lab_user_goes_through_the_colour_module():
    """The metric, the lab-l1 loss, the histogram and lab-stats encoders and transfer share it."""
    import piebench_plugins.encoders.histogram as hist
    import piebench_plugins.encoders.lab_stats as stats
    import piebench_plugins.enhancers.transfer as transfer
    import piebench_plugins.losses.pixel as pixel

    for module in (pixel, hist, stats, transfer):
        assert module.rgb_to_lab is pc.rgb_to_lab, module.__name__
    assert transfer.lab_to_rgb is pc.lab_to_rgb
