"""CSRNet and HDRNet: parameter counts, official layouts, full-resolution paths, conditioning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from piebench_plugins.enhancers.csrnet import CSRNet, CSRNetConditioned, build_csrnet
from piebench_plugins.enhancers.csrnet import load_weights as load_csrnet
from piebench_plugins.enhancers.hdrnet import HDRNet, HDRNetConditioned, build_hdrnet, slice_apply
from torch import nn

from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Preference

#: Keys of the official csrnet.pth (hejingwenhejingwen/CSRNet, experiments/pretrain_models).
CSRNET_KEYS = {f"cond_net.conv{i}.{t}" for i in (1, 2, 3) for t in ("weight", "bias")} | {
    f"{n}{i}.{t}" for n in ("cond_scale", "cond_shift", "conv") for i in (1, 2, 3) for t in ("weight", "bias")}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def shape_hook(module: nn.Module, seen: list) -> None:
    module.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))


# -- CSRNet -----------------------------------------------------------------------------------

def test_csrnet_paper_matches_official_count_and_keys():
    model = build_csrnet(BuildContext(), condition="image")
    assert n_params(model) == 36_489
    assert set(model.state_dict()) == CSRNET_KEYS
    assert model.consumes == frozenset()


def test_csrnet_forward_is_the_official_gfm():
    torch.manual_seed(0)
    model = CSRNet().eval()
    x = torch.rand(2, 3, 37, 45)
    with torch.no_grad():
        c = x
        for conv in (model.cond_net.conv1, model.cond_net.conv2, model.cond_net.conv3):
            c = F.relu(conv(F.pad(c, (1, 1, 1, 1))))
        cond = c.mean(dim=(2, 3))
        out = x
        for i in (1, 2, 3):
            out = getattr(model, f"conv{i}")(out)
            s = getattr(model, f"cond_scale{i}")(cond)[:, :, None, None]
            b = getattr(model, f"cond_shift{i}")(cond)[:, :, None, None]
            out = out * s + b + out
            out = F.relu(out) if i < 3 else out
        torch.testing.assert_close(model(x), out)


def test_csrnet_condition_sees_480p_as_is_and_a_downsampled_copy_above():
    model = CSRNet().eval()
    seen: list = []
    shape_hook(model.cond_net.conv1, seen)
    with torch.no_grad():
        y = model(torch.rand(1, 3, 200, 300))
        y2 = model(torch.rand(1, 3, 540, 960))
    assert seen[0][2:] == (202, 302)  # zero padding 1 around the untouched image
    assert seen[1][2:] == (482, 855)  # 480 x 853 copy: the conv stack never runs at full size
    assert y.shape == (1, 3, 200, 300) and y2.shape == (1, 3, 540, 960)
    x = torch.rand(1, 3, 480, 720)  # 480p (the training resolution) is left as it is
    assert model.condition_input(x) is x
    assert model.condition_input(torch.zeros(1, 3, 2160, 3840)).shape[2:] == (480, 853)
    assert model.condition_input(torch.zeros(1, 3, 3840, 2160)).shape[2:] == (853, 480)


@pytest.mark.slow
def test_csrnet_4k():
    model = build_csrnet(BuildContext(), condition="concat", base_nf=16, cond_nf=16, pref_dim=8).eval()
    seen: list = []
    shape_hook(model.cond_net.conv1, seen)
    with torch.no_grad():
        y = model(torch.rand(1, 3, 2160, 3840), Preference(vector=torch.randn(1, 8)))
    assert seen == [(1, 3, 482, 855)] and y.shape == (1, 3, 2160, 3840)


def test_csrnet_conditioned_variants_react_to_the_preference():
    x = torch.rand(2, 3, 40, 52)
    p, q = Preference(vector=torch.randn(2, 16)), Preference(vector=torch.randn(2, 16))
    for condition, extra in (("concat", 32), ("preference", 0)):
        model = build_csrnet(BuildContext(), condition=condition, pref_dim=16).eval()
        assert model.consumes == frozenset({"vector"})
        assert model.cond_scale1.in_features == 16 + extra
        assert (model.cond_net is None) == (condition == "preference")
        with torch.no_grad():
            a, a2, b = model(x, p), model(x, p), model(x, q)
        torch.testing.assert_close(a, a2)
        assert (a - b).abs().mean() > 1e-3
        with pytest.raises(UsageError, match=r"preference vector \[B, 16\]"):
            model(x)
    with pytest.raises(UsageError, match="condition must be one of"):
        build_csrnet(BuildContext(), condition="film")


def test_csrnet_weights_round_trip(tmp_path):
    src = CSRNet()
    torch.save(src.state_dict(), tmp_path / "csrnet.pth")
    dst = CSRNet()
    load_csrnet(dst, str(tmp_path / "csrnet.pth"))
    x = torch.rand(1, 3, 30, 30)
    with torch.no_grad():
        torch.testing.assert_close(src.eval()(x), dst.eval()(x), rtol=0, atol=0)
    with pytest.raises(UsageError, match="unconditioned"):
        load_csrnet(CSRNetConditioned(8), str(tmp_path / "csrnet.pth"))


# -- HDRNet -----------------------------------------------------------------------------------

def test_hdrnet_paper_parameter_count_is_exactly_the_reference():
    model = build_hdrnet(BuildContext(), conditioned=False)
    assert n_params(model) == 482_080  # HDRNetCurves, cm 1, 8 luma bins, spatial bin 16, no BN
    assert n_params(model.guide) == 9 + 3 + 48 + 48 + 4
    assert model.consumes == frozenset()


def official_slice_apply(grid: np.ndarray, guide: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A direct port of the official BilateralSlice kernel loop (clamped borders, centres at +0.5).

    ``grid [B, 12, D, gh, gw]`` (coefficient ``out * 4 + in``), ``guide [B, H, W]``, ``x [B, 3, H, W]``.
    """
    bsz, _, depth, gh, gw = grid.shape
    h, w = guide.shape[1:]
    out = np.zeros((bsz, 3, h, w))
    for b in range(bsz):
        for y in range(h):
            for xx in range(w):
                gxf, gyf, gzf = (xx + 0.5) * gw / w, (y + 0.5) * gh / h, guide[b, y, xx] * depth
                coeff = np.zeros(12)
                for gy in range(math.floor(gyf - 0.5), math.floor(gyf - 0.5) + 2):
                    wy = max(1 - abs(gy + 0.5 - gyf), 0)
                    for gx in range(math.floor(gxf - 0.5), math.floor(gxf - 0.5) + 2):
                        wx = max(1 - abs(gx + 0.5 - gxf), 0)
                        for gz in range(math.floor(gzf - 0.5), math.floor(gzf - 0.5) + 2):
                            wz = max(1 - abs(gz + 0.5 - gzf), 0)
                            coeff += wx * wy * wz * grid[b, :, min(max(gz, 0), depth - 1),
                                                         min(max(gy, 0), gh - 1), min(max(gx, 0), gw - 1)]
                a = coeff.reshape(3, 4)
                out[b, :, y, xx] = a[:, :3] @ x[b, :, y, xx] + a[:, 3]
    return out


def test_hdrnet_slicing_matches_the_official_kernel():
    g = torch.Generator().manual_seed(1)
    grid = torch.randn(2, 12, 4, 3, 5, generator=g, dtype=torch.float64)
    guide = torch.rand(2, 6, 9, generator=g, dtype=torch.float64)
    guide[0, 0, :3] = torch.tensor([0.0, 1.0, 0.02])  # the clamped depth borders
    x = torch.rand(2, 3, 6, 9, generator=g, dtype=torch.float64)
    ours = slice_apply(grid, guide, x).numpy()
    np.testing.assert_allclose(ours, official_slice_apply(grid.numpy(), guide.numpy(), x.numpy()), atol=1e-10)


def test_hdrnet_identity_grid_returns_the_input():
    grid = torch.zeros(1, 12, 8, 16, 16)
    for c in range(3):
        grid[:, c * 4 + c] = 1.0
    x = torch.rand(1, 3, 50, 70)
    torch.testing.assert_close(slice_apply(grid, torch.rand(1, 50, 70), x), x)


def test_hdrnet_grid_unrolls_channels_like_the_tensorflow_model():
    model = HDRNet(net_input_size=64, spatial_bin=8, luma_bins=4)
    with torch.no_grad():
        model.coefficients.prediction.weight.zero_()
        model.coefficients.prediction.bias.copy_(torch.arange(48.0))
        grid = model.coefficients(torch.rand(1, 3, 64, 64))
    assert grid.shape == (1, 12, 4, 8, 8)
    for out_c in range(3):
        for in_c in range(4):
            for z in range(4):  # TF: channel (in * n_out + out) * depth + z
                assert grid[0, out_c * 4 + in_c, z, 0, 0] == (in_c * 3 + out_c) * 4 + z


def test_hdrnet_guide_starts_as_the_channel_mean():
    model = HDRNet()
    x = torch.rand(2, 3, 20, 30)
    with torch.no_grad():
        torch.testing.assert_close(model.guide(x), x.mean(1), atol=1e-3, rtol=0)


def test_hdrnet_coefficients_at_256_and_output_at_full_resolution():
    model = HDRNet().eval()
    seen: list = []
    shape_hook(model.coefficients.splat[0], seen)
    with torch.no_grad():
        y = model(torch.rand(1, 3, 600, 800))
    assert seen == [(1, 3, 256, 256)] and y.shape == (1, 3, 600, 800)


@pytest.mark.slow
def test_hdrnet_4k():
    model = HDRNet().eval()
    seen: list = []
    shape_hook(model.coefficients.splat[0], seen)
    with torch.no_grad():
        y = model(torch.rand(1, 3, 2160, 3840))
    assert seen == [(1, 3, 256, 256)] and y.shape == (1, 3, 2160, 3840)


def test_hdrnet_conditioned_reacts_to_the_preference_and_trains():
    model = build_hdrnet(BuildContext(), conditioned=True, net_input_size=64, spatial_bin=8, luma_bins=4,
                         pref_dim=16)
    assert isinstance(model, HDRNetConditioned) and model.consumes == frozenset({"vector"})
    x = torch.rand(2, 3, 48, 64)
    p, q = Preference(vector=torch.randn(2, 16)), Preference(vector=torch.randn(2, 16))
    with torch.no_grad():
        a, a2, b = model(x, p), model(x, p), model(x, q)
    torch.testing.assert_close(a, a2)
    assert (a - b).abs().mean() > 1e-3
    model(x, p).mean().backward()
    assert model.coefficients.global_fc[0].weight.grad[:, -16:].abs().sum() > 0
    with pytest.raises(UsageError, match=r"preference vector \[B, 16\]"):
        model(x, Preference(vector=torch.randn(2, 3)))
    paper = build_hdrnet(BuildContext(), conditioned=True, pref_dim=512)
    assert n_params(paper) == 482_080 + 512 * 256


def test_csrnet_folded_inference_equals_the_modulated_layers(monkeypatch):
    """Without gradients GFM is folded into per-sample 1x1 weights and run over pixel chunks; the result
    equals the layer-by-layer modulation (the training path) up to float rounding, per sample."""
    import piebench_plugins.enhancers.csrnet as csr

    monkeypatch.setattr(csr, "PIXEL_CHUNK", 100)  # many chunks, the last one partial
    torch.manual_seed(3)
    model = CSRNet().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    x = torch.rand(3, 3, 23, 29)
    gfm = model.prepare_full_resolution(x)
    with torch.no_grad():
        folded = model.apply_full_resolution(x, gfm)
    layered = model.apply_full_resolution(x, gfm)  # gradients on: the modulated layers
    assert layered.requires_grad and not folded.requires_grad
    torch.testing.assert_close(folded, layered.detach(), rtol=1e-5, atol=1e-6)
    assert (folded[0] - folded[1]).abs().max() > 1e-3  # each sample its own modulation


def test_hdrnet_banded_inference_equals_the_whole_image(monkeypatch):
    """Without gradients the guide, slicing and apply run over bands of rows; the bits are the same."""
    import piebench_plugins.enhancers.hdrnet as hd

    monkeypatch.setattr(hd, "PIXEL_CHUNK", 5 * 31)  # bands of 5 rows, the last one partial
    torch.manual_seed(4)
    model = HDRNet(net_input_size=64, spatial_bin=8, luma_bins=4).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape))
        x = torch.rand(2, 3, 23, 31)
        grid = model.prepare_full_resolution(x)
        banded = model.apply_full_resolution(x, grid)
        whole = slice_apply(grid, model.guide(x), x)
    assert torch.equal(banded, whole) and (whole - x).abs().max() > 1e-3
