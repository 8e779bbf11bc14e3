"""Model-specific behaviour of the conditioned enhancers pienet, sa-seed, adain and sa-adain.

The generic contract (shapes, gradients, loss decreases) is in test_zoo_contract.py; here:
PieNet's published size and torchvision trunk, the AdaIN statistics, the fixed-N and
order-dependence of the grouped ``sa-seed`` against the order invariance of ``sa-adain``,
and that every enhancer's output depends on each Preference field it consumes.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torchvision
from piebench_plugins.enhancers.adain import AdaIN, build_adain
from piebench_plugins.enhancers.pienet import RESNET18_FILE, build_pienet
from piebench_plugins.enhancers.sa_adain import build_sa_adain

from piebench.errors import PiebenchError, UsageError
from piebench.interfaces import BuildContext, Preference

NAMES = ["pienet", "sa-seed", "adain", "sa-adain"]
SMALL_ENC = SimpleNamespace(dim=128, map_channels=(64,), provides=frozenset({"vector", "maps"}))
PAPER_ENC = SimpleNamespace(dim=512, map_channels=(128,), provides=frozenset({"vector", "maps"}))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(registry, name: str, configuration: str = "small", num_refs: int = 3, enc=SMALL_ENC):
    torch.manual_seed(0)
    spec = registry.get("enhancer", name)
    return spec.create(BuildContext(num_refs=num_refs, encoder=enc), configuration).eval()


def make_pref(b: int = 2, n: int = 3, enc=SMALL_ENC, seed: int = 1, size: int = 8) -> Preference:
    g = torch.Generator().manual_seed(seed)
    return Preference(vector=torch.nn.functional.normalize(torch.randn(b, enc.dim, generator=g), dim=1),
                      maps=(torch.randn(b, n, enc.map_channels[0], size, size, generator=g),))


# ---------------------------------------------------------------- registration and sizes

@pytest.mark.parametrize("name", NAMES)
def test_registered_with_small_and_paper(registry, name):
    spec = registry.get("enhancer", name)
    assert {"small", "paper"} <= set(spec.configurations)
    assert spec.description and spec.paper
    model = build(registry, name)
    assert set(spec.consumes) == set(model.consumes)


@pytest.mark.parametrize("name", NAMES)
def test_small_configuration_size(registry, name):
    assert 100_000 <= n_params(build(registry, name)) <= 500_000


def test_pienet_paper_matches_published_count():
    """The public re-implementation's enhancer has 16.39 M parameters (512-d preference)."""
    model = build_pienet(BuildContext(encoder=PAPER_ENC), width=64)
    n = n_params(model)
    assert abs(n - 16.39e6) / 16.39e6 < 0.05
    assert round(n / 1e6, 2) == 16.39, n


def test_pienet_trunk_is_torchvision_resnet18():
    """The encoder is torchvision's ResNet-18 (same names and shapes), so ImageNet weights load."""
    model = build_pienet(BuildContext(encoder=PAPER_ENC), width=64)
    state = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    model.encoder.load_state_dict(state, strict=True)
    assert n_params(model.encoder) == 11_176_512


def test_pienet_pretrained_reads_only_staged_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    with pytest.raises(PiebenchError, match=RESNET18_FILE):
        build_pienet(BuildContext(encoder=PAPER_ENC, pretrained=True), width=64)
    with pytest.raises(UsageError, match="width 64"):
        build_pienet(BuildContext(encoder=SMALL_ENC, pretrained=True), width=8)
    torch.manual_seed(3)
    staged = torchvision.models.resnet18().state_dict()
    (tmp_path / "checkpoints").mkdir()
    torch.save(staged, tmp_path / "checkpoints" / RESNET18_FILE)
    model = build_pienet(BuildContext(encoder=PAPER_ENC, pretrained=True), width=64)
    assert torch.equal(model.encoder.layer3[1].conv2.weight, staged["layer3.1.conv2.weight"])
    assert RESNET18_FILE in model.pretrained_from


# ---------------------------------------------------------------- AdaIN

def test_adain_block_output_statistics_equal_targets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 9, 13, generator=g) * 3.0 + 2.0
    sigma = torch.rand(3, 6, generator=g) * 2 + 0.1
    mu = torch.randn(3, 6, generator=g)
    out = AdaIN()(x, sigma, mu)
    torch.testing.assert_close(out.mean(dim=(2, 3)), mu, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), sigma, atol=1e-4, rtol=0)


def test_adain_block_uses_eps_1e_5():
    """sigma(x) = sqrt(var + 1e-5): a constant-free tiny-variance input is not blown up."""
    x = torch.randn(1, 2, 8, 8) * 1e-3  # var 1e-6 << eps
    out = AdaIN()(x, torch.ones(1, 2), torch.zeros(1, 2))
    expected = x.std(dim=(2, 3), unbiased=False) / torch.sqrt(x.var(dim=(2, 3), unbiased=False) + 1e-5)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), expected, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("builder", [build_adain, build_sa_adain])
def test_decoder_features_get_the_predicted_statistics(builder):
    """Inside the model, every AdaIN output has the (mu, sigma) the mapping network predicts."""
    torch.manual_seed(0)
    model = builder(BuildContext(encoder=SMALL_ENC)).eval()
    outs = []
    layers = [model.mid_adain] + [up.adain for up in model.ups]
    for layer in layers:
        layer.register_forward_hook(lambda mod, inp, out: outs.append((inp[0], out.clone())))
    pref = make_pref()
    model(torch.rand(2, 3, 64, 64), pref)
    styles = model.mapping(pref.vector)
    assert len(outs) == len(styles) == len(layers)
    for (inp, out), (sigma, mu) in zip(outs, styles, strict=True):
        var = inp.var(dim=(2, 3), unbiased=False)
        torch.testing.assert_close(out.mean(dim=(2, 3)), mu, atol=1e-4, rtol=0)
        torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False),
                                   sigma * torch.sqrt(var / (var + 1e-5)), atol=1e-4, rtol=1e-4)
        assert (sigma > 0).all()


# ---------------------------------------------------------------- sa-seed vs sa-adain

def test_sa_seed_refuses_a_different_number_of_references(registry):
    model = build(registry, "sa-seed", num_refs=3)
    with pytest.raises(UsageError, match=r"built for N=3 .* got N=4; rebuild it with --refs 4"):
        model(torch.rand(2, 3, 64, 64), make_pref(n=4))


def test_sa_seed_needs_maps(registry):
    with pytest.raises(UsageError, match="provides maps"):
        registry.get("enhancer", "sa-seed").create(BuildContext(num_refs=3), "small")
    model = build(registry, "sa-seed")
    with pytest.raises(UsageError, match="needs Preference.maps"):
        model(torch.rand(1, 3, 64, 64), Preference(vector=torch.randn(1, SMALL_ENC.dim)))


def permuted(pref: Preference, order: list[int]) -> Preference:
    idx = torch.as_tensor(order)
    mask = None if pref.mask is None else pref.mask[:, idx]
    return Preference(vector=pref.vector, maps=tuple(m[:, idx] for m in pref.maps), mask=mask)


@torch.no_grad()
def test_sa_seed_depends_on_reference_order(registry):
    """Grouped heads are tied to reference positions: permuting the references changes the output."""
    model = build(registry, "sa-seed")
    x, pref = torch.rand(2, 3, 64, 64), make_pref()
    diff = (model(x, pref) - model(x, permuted(pref, [2, 0, 1]))).abs().max().item()
    assert diff > 1e-4, diff


@torch.no_grad()
def test_sa_adain_is_invariant_to_reference_order(registry):
    model = build(registry, "sa-adain")
    x, pref = torch.rand(2, 3, 64, 64), make_pref()
    pref.mask = torch.tensor([[True, True, True], [True, False, True]])
    torch.testing.assert_close(model(x, permuted(pref, [2, 0, 1])), model(x, pref), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["sa-seed", "sa-adain"])
@torch.no_grad()
def test_padded_references_are_ignored(registry, name):
    model = build(registry, name)
    x, pref = torch.rand(2, 3, 64, 64), make_pref()
    pref.mask = torch.tensor([[True, True, True], [True, True, False]])
    other = Preference(vector=pref.vector, maps=(pref.maps[0].clone(),), mask=pref.mask)
    other.maps[0][1, 2] = torch.randn_like(other.maps[0][1, 2]) * 5
    torch.testing.assert_close(model(x, other), model(x, pref), atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- conditioning and sizes

@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_output_depends_on_every_consumed_field(registry, name):
    model = build(registry, name)
    x, pref, other = torch.rand(2, 3, 64, 64), make_pref(seed=1), make_pref(seed=2)
    y = model(x, pref)
    assert y.shape == x.shape
    changed = {"vector": Preference(vector=other.vector, maps=pref.maps),
               "maps": Preference(vector=pref.vector, maps=other.maps)}
    for field in model.consumes:
        diff = (model(x, changed[field]) - y).abs().max().item()
        assert diff > 1e-4, f"{name}: output ignores Preference.{field} (max change {diff:.2e})"
    for field in {"vector", "maps"} - set(model.consumes):
        torch.testing.assert_close(model(x, changed[field]), y)


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_any_size_and_reference_map_size(registry, name):
    """48x80 inputs (not a multiple of 32) and reference maps of another size than the feature."""
    model = build(registry, name)
    x = torch.rand(2, 3, 48, 80)
    y = model(x, make_pref(size=5))
    assert y.shape == x.shape and torch.isfinite(y).all()
