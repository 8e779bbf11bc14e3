"""Fidelity metrics against reference libraries (skimage) on real photos with a real edit.

Settings compared (docs/metrics.md):
- psnr      == skimage.metrics.peak_signal_noise_ratio(data_range=1)
- ssim      == skimage.metrics.structural_similarity(channel_axis=-1, gaussian_weights=True,
               sigma=1.5, use_sample_covariance=False, data_range=1)
- ssim_down == the same skimage call on both images average-pooled by max(1, round(min(H,W)/256))
- delta_e   == mean of skimage.color.deltaE_cie76(rgb2lab(output), rgb2lab(target))
"""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from skimage.color import deltaE_cie76, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from piebench.errors import PiebenchError, UsageError
from piebench.metrics import METRICS, delta_e, psnr, psnr_q8, ssim, ssim_down
from piebench.metrics import fidelity as fid

PHOTOS = ("astronaut", "coffee", "chelsea")
SK_SSIM = dict(channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)


def _pair(name: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, target) [1,3,H,W] float64: target = the 8-bit photo, output = gamma 0.8 +
    a white-balance shift + Gaussian noise (std 0.02), clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    target = getattr(skimage.data, name)().astype(np.float64) / 255.0
    output = np.clip(target ** 0.8 * np.array([1.05, 1.0, 0.93]) + rng.normal(0, 0.02, target.shape), 0, 1)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]  # noqa: E731
    return as_t(output), as_t(target)


def _np(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).double().numpy()


@pytest.fixture(scope="module", params=PHOTOS)
def pair(request):
    return _pair(request.param)


def test_psnr_matches_skimage(pair):
    out, tgt = pair
    ref = peak_signal_noise_ratio(_np(tgt), _np(out), data_range=1)
    assert abs(psnr(out, tgt).item() - ref) < 1e-4
    # float32 inputs are computed in float64 too
    ref32 = peak_signal_noise_ratio(_np(tgt.float()), _np(out.float()), data_range=1)
    assert abs(psnr(out.float(), tgt.float()).item() - ref32) < 1e-4


def test_ssim_matches_skimage_gaussian(pair):
    out, tgt = pair
    ref = structural_similarity(_np(tgt), _np(out), **SK_SSIM)
    assert abs(ssim(out.float(), tgt.float()).item() - ref) < 1e-4


def test_ssim_down_matches_skimage_on_pooled(pair):
    out, tgt = pair
    f = max(1, round(min(out.shape[-2:]) / 256))
    assert f == 2 if min(out.shape[-2:]) >= 384 else f >= 1
    ref = structural_similarity(_np(F.avg_pool2d(tgt, f)), _np(F.avg_pool2d(out, f)), **SK_SSIM)
    got = ssim_down(out.float(), tgt.float()).item()
    assert abs(got - ref) < 1e-4
    if f > 1:  # a different variant, not the same number
        assert abs(got - ssim(out.float(), tgt.float()).item()) > 1e-3


def test_delta_e_matches_skimage_cie76(pair):
    out, tgt = pair
    ref = deltaE_cie76(rgb2lab(_np(out)), rgb2lab(_np(tgt))).mean()
    assert ref > 1.0
    assert abs(delta_e(out, tgt).item() - ref) < 1e-4


def test_rgb_to_lab_matches_skimage_including_dark_values():
    rgb = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) ** 4  # many below 0.04045
    ref = rgb2lab(_np(rgb))
    assert np.abs(fid.rgb_to_lab(rgb)[0].permute(1, 2, 0).numpy() - ref).max() < 1e-8


def test_psnr_q8_quantises_output_only():
    out, tgt = _pair("astronaut")
    assert abs(psnr_q8(out, tgt).item() - psnr(out, tgt).item()) > 1e-4  # non-8-bit output
    out8 = torch.round(out * 255) / 255
    assert psnr_q8(out8, tgt).item() == pytest.approx(psnr(out8, tgt).item(), abs=1e-9)
    # equal to skimage on the 8-bit image
    ref = peak_signal_noise_ratio(_np(tgt), np.round(_np(out) * 255) / 255, data_range=1)
    assert abs(psnr_q8(out, tgt).item() - ref) < 1e-4


@pytest.mark.parametrize("name", ["psnr", "psnr_q8", "ssim", "ssim_down", "delta_e"])
def test_batch_equals_per_image(name):
    fn = METRICS[name][0]
    gen = torch.Generator().manual_seed(1)
    tgt = torch.rand(3, 3, 40, 48, generator=gen)
    out = (tgt + 0.1 * torch.randn(3, 3, 40, 48, generator=gen)).clamp(0, 1)
    batch = fn(out, tgt)
    assert batch.shape == (3,)
    single = torch.cat([fn(out[i:i + 1], tgt[i:i + 1]) for i in range(3)])
    assert torch.allclose(batch.double(), single.double(), atol=1e-6)
    assert len(set(batch.tolist())) == 3  # really per image, not a batch mean


def test_metric_table_directions():
    assert {k: v[1] for k, v in METRICS.items()} == {
        "psnr": True, "psnr_q8": True, "ssim": True, "ssim_down": True, "delta_e": False, "lpips": False}
    assert all(isinstance(v[2], str) and v[2] for v in METRICS.values())


def test_bad_shapes_raise_usage_error():
    with pytest.raises(UsageError, match="differ in shape"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(UsageError, match=r"\[B,3,H,W\]"):
        delta_e(torch.rand(3, 8, 8), torch.rand(3, 8, 8))


# --------------------------------------------------------------------------------------- LPIPS
@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fid._LPIPS_CACHE.clear()
    yield tmp_path
    fid._LPIPS_CACHE.clear()


def test_lpips_unavailable_names_file_folder_and_url(empty_torch_home):
    reason = fid.lpips_unavailable_reason()  # PIEBENCH_OFFLINE=1 (tests/conftest.py)
    folder = str(empty_torch_home / "hub" / "checkpoints")
    assert reason is not None and "alexnet-owt-7be5be79.pth" in reason and folder in reason
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in reason and "\n" not in reason
    with pytest.raises(PiebenchError, match="alexnet-owt-7be5be79.pth"):
        fid.LPIPS()
    with pytest.raises(PiebenchError, match="alexnet-owt-7be5be79.pth"):
        fid.lpips(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert not any(empty_torch_home.rglob("*.pth"))  # nothing was fetched


def test_lpips_loads_the_staged_file(empty_torch_home, capsys):
    import torchvision

    ckpt = empty_torch_home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(3)
    state = torchvision.models.alexnet().state_dict()
    torch.save(state, ckpt / "alexnet-owt-7be5be79.pth")
    assert fid.lpips_unavailable_reason() is None

    metric = fid.LPIPS()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=gen)
    y = (x + 0.2 * torch.randn(2, 3, 64, 64, generator=gen)).clamp(0, 1)
    d = metric(x, y)
    assert d.shape == (2,) and torch.all(d > 0)
    assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-7)
    assert capsys.readouterr().out == ""  # the lpips package's prints are silenced

    trunk = metric.load().net
    loaded = trunk.state_dict()
    assert len(loaded) == 10  # five conv layers, weight + bias
    for key, value in loaded.items():  # slice<k>.<index>.<param> holds features.<index>.<param>
        assert torch.equal(value, state["features." + key.split(".", 1)[1]]), key
    # linear layers come from the package (not random): same as the package's file
    import os

    import lpips as lpips_pkg
    lin_file = os.path.join(os.path.dirname(lpips_pkg.__file__), "weights", "v0.1", "alex.pth")
    lins = torch.load(lin_file, map_location="cpu", weights_only=True)
    assert torch.equal(metric.load().lin0.model[1].weight, lins["lin0.model.1.weight"])
    # the module-level function agrees with the class
    assert torch.allclose(fid.lpips(x, y), d)


# ------------------------------------------------------------------------------------- plugin
def test_plugin_registers_every_metric(registry):
    for name, (fn, higher, variant) in METRICS.items():
        spec = registry.get("metric", name)
        assert spec.higher_is_better is higher and spec.variant == variant
        if name != "lpips":
            built = spec.create()
            out, tgt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
            assert torch.equal(built(out, tgt), fn(out, tgt))


def test_plugin_lpips_build_raises_reason_when_missing(registry, empty_torch_home):
    with pytest.raises(PiebenchError, match="alexnet-owt-7be5be79.pth"):
        registry.get("metric", "lpips").create()
