"""The style-attention U-Net ``sa`` and its weight-tied :class:`StyleAttention` block."""

from __future__ import annotations

import pytest
import torch
from piebench_plugins.enhancers.sa import SAUNet, StyleAttention, build_sa

from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Encoder, Preference

D, C = 128, 64  # the small metric encoder's embedding size and map channels


class _MapEncoder(Encoder):
    provides = frozenset({"vector", "maps"})
    dim = D
    map_channels = (C,)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_sa(BuildContext(encoder=_MapEncoder()), widths=[16, 24, 48, 64]).eval()


def _pref(b: int, n: int, size=(8, 8), seed: int = 0, mask=None) -> Preference:
    g = torch.Generator().manual_seed(seed)
    return Preference(vector=torch.nn.functional.normalize(torch.randn(b, D, generator=g), dim=1),
                      maps=(torch.rand(b, n, C, *size, generator=g),), mask=mask)


def _x(b: int = 2, h: int = 64, w: int = 64) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(7))


def test_small_parameter_count(registry):
    from piebench_plugins.encoders.metric import MetricEncoder

    enc = MetricEncoder("angular")  # small defaults: 128-d, 64-channel maps
    sa = registry.get("enhancer", "sa").create(BuildContext(encoder=enc), "small")
    count = sum(p.numel() for p in sa.parameters())
    assert 150_000 <= count <= 350_000  # docs/models.md: "about 0.23 M parameters" (sa small)
    assert count == 227_628  # as documented in the module


def test_reference_order_does_not_matter(model):
    x, pref = _x(), _pref(2, 5)
    perm = torch.tensor([3, 0, 4, 2, 1])
    shuffled = pref.replace(maps=(pref.maps[0][:, perm],))
    with torch.no_grad():
        torch.testing.assert_close(model(x, pref), model(x, shuffled), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [1, 3, 7])
def test_any_number_of_references(model, n):
    with torch.no_grad():
        out = model(_x(), _pref(2, n))
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()


def test_references_change_the_output(model):
    x = _x()
    with torch.no_grad():
        a, b = model(x, _pref(2, 3, seed=0)), model(x, _pref(2, 3, seed=1))
    assert (a - b).abs().max() > 1e-4


def test_padded_reference_is_ignored(model):
    x, pref = _x(), _pref(2, 2)
    garbage = torch.full((2, 1, C, 8, 8), 1e3)
    padded = pref.replace(maps=(torch.cat([pref.maps[0], garbage], dim=1),),
                          mask=torch.tensor([[True, True, False], [True, True, False]]))
    with torch.no_grad():
        torch.testing.assert_close(model(x, pref), model(x, padded), atol=1e-6, rtol=0)
        # and a mask that drops a real reference is not the same as keeping it
        dropped = pref.replace(mask=torch.tensor([[True, False], [True, True]]))
        assert (model(x, pref)[0] - model(x, dropped)[0]).abs().max() > 1e-5


@pytest.mark.parametrize("hw", [(64, 64), (48, 80), (37, 53), (16, 16)])
def test_any_image_size(model, hw):
    with torch.no_grad():
        out = model(_x(1, *hw), _pref(1, 3))
    assert out.shape == (1, 3, *hw) and torch.isfinite(out).all()


def test_reference_maps_of_another_size_are_resized():
    block = StyleAttention(32, 16)
    x = torch.rand(2, 32, 6, 10)
    out = block(x, torch.rand(2, 3, 16, 12, 12))
    assert out.shape == x.shape
    # weight-tied: the parameter count does not depend on N
    assert sum(p.numel() for p in block.parameters()) == sum(
        p.numel() for p in StyleAttention(32, 16).parameters())
    assert isinstance(block.temperature, torch.nn.Parameter)


def test_output_is_input_plus_residual(model):
    x, pref = _x(), _pref(2, 3)
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.zero_()
        torch.testing.assert_close(model(x, pref), x)


def test_needs_an_encoder_with_maps():
    class VectorOnly(Encoder):
        dim = 8

    with pytest.raises(UsageError, match="maps"):
        build_sa(BuildContext(encoder=VectorOnly()))
    with pytest.raises(UsageError, match="maps"):
        SAUNet(D, C)(_x(), Preference(vector=torch.zeros(2, D)))


def test_paper_parameter_count(registry):
    enc = registry.get("encoder", "angular").create(BuildContext(), "paper")
    sa = registry.get("enhancer", "sa").create(BuildContext(encoder=enc), "paper")
    assert sum(p.numel() for p in sa.parameters()) == 10_954_963
    assert sum(p.numel() for p in enc.parameters()) == 11_439_168  # ResNet-18 trunk + 512x512 head
