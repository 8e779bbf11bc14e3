"""lut3d: the released sRGB 3D-LUT model reproduced, parameter counts, full-res path, conditioning."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
from piebench_plugins.enhancers.lut3d import (
    LUT3D,
    LUT3DConditioned,
    build_lut3d,
    identity_lut,
    load_weights,
    trilinear_lut,
)
from torch import nn

from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Preference

WEIGHTS = pathlib.Path(__file__).resolve().parents[1] / "data" / "3dlut-srgb"


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def astronaut() -> np.ndarray:
    """The real test photo as float32 RGB in [0, 1] (what torchvision's to_tensor gives)."""
    from skimage import data

    return data.astronaut().astype(np.float32) / 255.0


def reference_lookup(img: np.ndarray, lut: np.ndarray, bin_numerator: float = 1.0001) -> np.ndarray:
    """Trilinear lookup written from the README: explicit 8 corners, LUT indexed [c, b, g, r].

    ``img [H, W, 3]`` in [0, 1]; ``lut [3, D, D, D]``; bin size ``bin_numerator / (D - 1)``.
    """
    dim = lut.shape[-1]
    binsize = bin_numerator / (dim - 1)
    img = img.astype(np.float64)
    lut = lut.astype(np.float64)
    pos = img / binsize
    idx = np.floor(pos).astype(np.int64)
    frac = pos - idx
    out = np.zeros_like(img)
    for dr in (0, 1):
        for dg in (0, 1):
            for db in (0, 1):
                w = ((frac[..., 0] if dr else 1 - frac[..., 0]) * (frac[..., 1] if dg else 1 - frac[..., 1])
                     * (frac[..., 2] if db else 1 - frac[..., 2]))
                corner = lut[:, idx[..., 2] + db, idx[..., 1] + dg, idx[..., 0] + dr]  # [3, H, W]
                out += w[..., None] * np.moveaxis(corner, 0, -1)
    return out


def readme_classifier() -> nn.Sequential:
    """The classifier exactly as the README lists it, built independently of the plugin."""
    layers: list[nn.Module] = [nn.Upsample(size=(256, 256), mode="bilinear"),
                               nn.Conv2d(3, 16, 3, 2, 1), nn.LeakyReLU(0.2), nn.InstanceNorm2d(16, affine=True)]
    for cin, cout in ((16, 32), (32, 64), (64, 128)):
        layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(0.2), nn.InstanceNorm2d(cout, affine=True)]
    layers += [nn.Conv2d(128, 128, 3, 2, 1), nn.LeakyReLU(0.2), nn.Dropout(0.5), nn.Conv2d(128, 3, 8)]
    return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def released() -> LUT3D:
    model = LUT3D()
    load_weights(model, str(WEIGHTS))
    return model.eval()


def test_parameter_counts_match_references():
    model = build_lut3d(BuildContext(), conditioned=False)
    assert n_params(model.classifier) == 270_083
    assert n_params(model) == 593_516
    assert tuple(model.luts.shape) == (3, 3, 33, 33, 33)
    assert model.consumes == frozenset()


def test_released_weights_reproduce_the_official_model(released):
    img = astronaut()
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    with torch.no_grad():
        out = released(x)[0].permute(1, 2, 0).numpy()
        ref_net = readme_classifier().eval()
        state = torch.load(WEIGHTS / "classifier.pth", map_location="cpu")
        ref_net.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        w = ref_net(x).flatten().double().numpy()
    tables = torch.load(WEIGHTS / "LUTs.pth", map_location="cpu")
    lut = sum(w[k] * tables[str(k)]["LUT"].double().numpy() for k in range(3))
    expected = reference_lookup(img, lut)
    assert out.shape == img.shape
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    assert np.abs(out - img).mean() > 0.01  # the released model really edits the photo


def test_basis_luts_start_as_identity_and_zeros():
    model = LUT3D()
    np.testing.assert_array_equal(model.luts[0].detach().numpy(), identity_lut(33).numpy())
    assert model.luts[1:].abs().sum() == 0
    x = torch.rand(1, 3, 20, 30)
    with torch.no_grad():
        y = trilinear_lut(identity_lut(33)[None], x)
    # A linear LUT is reproduced exactly; the official bin size scales colours by 1 / 1.0001.
    torch.testing.assert_close(y, x / 1.0001, atol=1e-6, rtol=0)


def test_lut_runs_at_full_resolution_and_classifier_at_256():
    model = LUT3D().eval()
    seen = []
    model.classifier.model[1].register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    x = torch.rand(1, 3, 2160, 3840)
    with torch.no_grad():
        y = model(x)
    assert seen == [(1, 3, 256, 256)]
    assert y.shape == x.shape


def test_single_file_format_and_errors(released, tmp_path):
    both = tmp_path / "lut3d.pth"
    torch.save({"classifier": torch.load(WEIGHTS / "classifier.pth", map_location="cpu"), "LUTs": torch.load(WEIGHTS / "LUTs.pth", map_location="cpu")}, both)
    model = LUT3D()
    load_weights(model, str(both))
    x = torch.rand(2, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), released(x), atol=0, rtol=0)

    with pytest.raises(UsageError, match="classifier.pth"):
        load_weights(LUT3D(), str(tmp_path))  # folder without the files
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "classifier.pth").write_bytes(b"not a checkpoint")
    (bad / "LUTs.pth").write_bytes(b"x")
    with pytest.raises(UsageError, match="classifier.pth"):
        load_weights(LUT3D(), str(bad))
    with pytest.raises(UsageError, match="unconditioned"):
        load_weights(LUT3DConditioned(8), str(WEIGHTS))
    with pytest.raises(UsageError, match="LUTs"):
        load_weights(LUT3D(lut_dim=17), str(WEIGHTS))


def test_conditioned_variant_reacts_to_the_preference():
    model = build_lut3d(BuildContext(), conditioned=True, lut_dim=17, width=8, size=64, pref_dim=16,
                        pref_channels=8).eval()
    assert model.consumes == frozenset({"vector"})
    with torch.no_grad():  # make the LUTs non-trivial so different weights give different images
        model.luts.add_(0.1 * torch.randn_like(model.luts))
    x = torch.rand(2, 3, 48, 64)
    a, b = torch.randn(2, 16), torch.randn(2, 16)
    with torch.no_grad():
        ya, yb, ya2 = model(x, Preference(vector=a)), model(x, Preference(vector=b)), model(x, Preference(vector=a))
    assert ya.shape == x.shape
    torch.testing.assert_close(ya, ya2)
    assert (ya - yb).abs().mean() > 1e-3
    with pytest.raises(UsageError, match="preference vector"):
        model(x)
    with pytest.raises(UsageError, match=r"\[B, 16\]"):
        model(x, Preference(vector=torch.randn(2, 5)))


def test_conditioned_paper_size_takes_encoder_dim_and_trains():
    class Enc(nn.Module):
        dim = 24

    model = build_lut3d(BuildContext(encoder=Enc()), conditioned=True)
    assert model.pref_dim == 24
    assert n_params(model) == 593_516 - (128 * 3 * 64 + 3) + (24 * 32 + 32) + ((128 + 32) * 3 * 64 + 3)
    x = torch.rand(2, 3, 32, 32)
    loss = model(x, Preference(vector=torch.randn(2, 24))).mean()
    loss.backward()
    assert model.luts.grad is not None and model.pref_proj[0].weight.grad.abs().sum() > 0
