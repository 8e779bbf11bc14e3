"""Losses: registration, reference values (skimage Lab and SSIM), and that each one trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import color, data, metrics, transform

from piebench.errors import UsageError
from piebench.interfaces import Batch, BuildContext, Encoder, RefSet

IMAGE_LOSSES = ["l1", "l2", "lab-l1", "ssim", "gram", "tv", "edge-tv"]
EMBEDDING_LOSSES = ["triplet", "angular", "circle", "npair", "multisim", "normsoftmax", "center"]


class _Dim(Encoder):
    dim = 16


def _ctx(num_users: int = 4) -> BuildContext:
    return BuildContext(num_users=num_users, encoder=_Dim())


def _photo(size: int = 64, name: str = "astronaut") -> torch.Tensor:
    img = transform.resize(getattr(data, name)(), (size, size), anti_aliasing=True)
    return torch.from_numpy(img).permute(2, 0, 1).float().unsqueeze(0)


def _batch(x: torch.Tensor, target: torch.Tensor, refs: torch.Tensor, mask=None) -> Batch:
    b = x.shape[0]
    return Batch(input=x, target=target, refs=RefSet(refs, mask=mask), user=torch.zeros(b, dtype=torch.long),
                 photo=torch.zeros(b, dtype=torch.long))


def test_registered_with_kind_paper_and_weights(registry):
    for name in IMAGE_LOSSES + EMBEDDING_LOSSES:
        spec = registry.get("loss", name)
        loss = spec.create(_ctx())
        kind = "image" if name in IMAGE_LOSSES else "embedding"
        assert spec.loss_kind == kind == loss.kind
        assert spec.description
    for name in ("gram", "tv", "edge-tv", "center"):
        assert registry.get("loss", name).create(_ctx()).default_weight == 0.01
    assert registry.get("loss", "l1").create(_ctx()).default_weight == 1.0
    assert registry.get("loss", "center").create(_ctx()).lr == 0.0005


# -- image losses ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", IMAGE_LOSSES)
def test_image_loss_decreases_under_optimisation(registry, name):
    loss_fn = registry.get("loss", name).create(_ctx())
    target = _photo(32)
    refs = torch.stack([_photo(32, "coffee"), _photo(32, "chelsea")], dim=1)
    x = _photo(32, "rocket")
    param = torch.nn.Parameter(x.clone() * 0.8 + 0.1)
    opt = torch.optim.Adam([param], lr=0.01)
    values = []
    for _ in range(15):
        value = loss_fn(param, target, _batch(x, target, refs))
        opt.zero_grad()
        value.backward()
        opt.step()
        values.append(value.item())
    assert np.isfinite(values).all()
    assert values[-1] < 0.9 * values[0], f"{name}: {values[0]:.5f} -> {values[-1]:.5f}"


def test_lab_l1_is_l1_on_skimage_lab(registry):
    loss_fn = registry.get("loss", "lab-l1").create(_ctx())
    a, b = _photo(40, "coffee"), _photo(40, "astronaut")

    def norm(lab):  # StarEnhancer's scaling
        return np.concatenate([lab[..., :1] / 100, (lab[..., 1:] / 110 + 1) / 2], axis=-1)

    lab = [norm(color.rgb2lab(t[0].permute(1, 2, 0).double().numpy())) for t in (a, b)]
    expected = np.abs(lab[0] - lab[1]).mean()
    assert loss_fn(a, b, None).item() == pytest.approx(expected, rel=1e-4)


def test_lab_l1_gradient_is_finite_out_of_range(registry):
    loss_fn = registry.get("loss", "lab-l1").create(_ctx())
    x = torch.tensor([-0.5, 0.0, 0.02, 0.5, 1.3]).view(1, 1, 1, 5).expand(1, 3, 2, 5).clone().requires_grad_()
    loss_fn(x, torch.full_like(x, 0.5), None).backward()
    assert torch.isfinite(x.grad).all()


def test_ssim_loss_is_one_minus_wang_ssim(registry):
    loss_fn = registry.get("loss", "ssim").create(_ctx())
    a, b = _photo(64), _photo(64)
    b = (b * 0.8 + 0.1 * torch.rand(b.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    expected = metrics.structural_similarity(
        a[0].permute(1, 2, 0).numpy(), b[0].permute(1, 2, 0).numpy(), channel_axis=2, gaussian_weights=True,
        sigma=1.5, use_sample_covariance=False, data_range=1.0)
    assert loss_fn(b, a, None).item() == pytest.approx(1 - expected, abs=1e-4)
    assert loss_fn(a, a, None).item() == pytest.approx(0.0, abs=1e-6)


def test_gram_zero_when_output_equals_every_reference(registry):
    gram = registry.get("loss", "gram").create(_ctx())
    out = _photo(32)
    same = out.unsqueeze(1).expand(1, 3, 3, 32, 32)
    assert gram(out, out, _batch(out, out, same)).item() == pytest.approx(0.0, abs=1e-10)
    # Normalised by H W: the same picture at another resolution is nearer than another picture.
    big = _photo(64).unsqueeze(1)
    assert gram(out, out, _batch(out, out, big)).item() < 0.5 * gram(out, out, _batch(
        out, out, _photo(64, "coffee").unsqueeze(1))).item()
    other = torch.cat([same[:, :2], _photo(32, "coffee").unsqueeze(1)], dim=1)
    assert gram(out, out, _batch(out, out, other)).item() > 0
    # A padded (masked) reference does not count.
    mask = torch.tensor([[True, True, False]])
    assert gram(out, out, _batch(out, out, other, mask=mask)).item() == pytest.approx(0.0, abs=1e-10)


def test_gram_uses_no_trainable_parameters(registry):
    gram = registry.get("loss", "gram").create(_ctx())
    assert not list(gram.parameters())
    again = registry.get("loss", "gram").create(_ctx())
    torch.testing.assert_close(gram.weight, again.weight)  # fixed basis, same every build


def test_tv_and_edge_tv(registry):
    tv = registry.get("loss", "tv").create(_ctx())
    edge = registry.get("loss", "edge-tv").create(_ctx())
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert tv(flat, flat, None).item() == 0.0
    # A vertical step edge: TV = (1 / 15) per the 15 horizontal differences of each row.
    step = torch.zeros(1, 3, 16, 16)
    step[..., 8:] = 1.0
    assert tv(step, step, None).item() == pytest.approx(1 / 15)
    # edge-tv forgives the output's edge where the input has it too (weight exp(-1)) ...
    on_edge = edge(step, step, _batch(step, step, step.unsqueeze(1))).item()
    assert on_edge == pytest.approx(np.exp(-1) / 15, rel=1e-6)
    # ... and not where the input is flat.
    assert edge(step, step, _batch(flat, flat, flat.unsqueeze(1))).item() == pytest.approx(1 / 15)
    with pytest.raises(UsageError, match="batch"):
        edge(step, step, None)


# -- embedding losses ------------------------------------------------------------------------

def _embedding_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(4)
    raw = torch.nn.Parameter(torch.randn(16, 16, generator=g))
    return raw, labels


@pytest.mark.parametrize("name", EMBEDDING_LOSSES)
def test_embedding_loss_decreases_under_optimisation(registry, name):
    loss_fn = registry.get("loss", name).create(_ctx())
    raw, labels = _embedding_problem()
    opt = torch.optim.Adam([raw], lr=0.05)
    own = list(loss_fn.parameters())
    opt_own = torch.optim.Adam(own, lr=loss_fn.lr or 0.01) if own else None
    values = []
    for _ in range(25):
        value = loss_fn(F.normalize(raw, dim=1), labels)
        opt.zero_grad()
        if opt_own:
            opt_own.zero_grad()
        value.backward()
        opt.step()
        if opt_own:
            opt_own.step()
        values.append(value.item())
    assert np.isfinite(values).all()
    assert values[-1] < values[0], f"{name}: {values[0]:.4f} -> {values[-1]:.4f}"


def test_triplet_margin_is_pienets(registry):
    loss = registry.get("loss", "triplet").create(_ctx()).loss
    assert loss.margin == 0.2  # pytorch-metric-learning's default is 0.05


def test_library_settings(registry):
    assert registry.get("loss", "angular").create(_ctx()).loss.alpha.item() == pytest.approx(np.radians(40))
    circle = registry.get("loss", "circle").create(_ctx()).loss
    assert (circle.m, circle.gamma) == (0.4, 80)
    multisim = registry.get("loss", "multisim").create(_ctx())
    assert (multisim.loss.alpha, multisim.loss.beta, multisim.loss.base) == (2, 50, 0.5)
    assert multisim.miner.epsilon == 0.1


def test_normsoftmax_proxies_are_parameters(registry):
    loss = registry.get("loss", "normsoftmax").create(_ctx(num_users=5))
    params = dict(loss.named_parameters())
    assert len(params) == 1
    (weight,) = params.values()
    assert sorted(weight.shape) == [5, 16]
    assert loss.loss.temperature == 0.05 and loss.lr == 0.01
    assert any(k.endswith("W") for k in loss.state_dict())
    with pytest.raises(UsageError, match="embedding size"):
        registry.get("loss", "normsoftmax").create(BuildContext(num_users=5))


def test_center_centres_move_to_their_class_and_are_checkpointed(registry):
    loss = registry.get("loss", "center").create(_ctx())
    assert "centres" in loss.state_dict() and loss.centres.shape == (4, 16)
    raw, labels = _embedding_problem(1)
    emb = F.normalize(raw.detach(), dim=1)
    means = torch.stack([emb[labels == c].mean(0) for c in range(4)])
    before = (loss.centres.detach() - means).norm(dim=1)
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        loss(emb, labels).backward()
        opt.step()
    after = (loss.centres.detach() - means).norm(dim=1)
    assert (after < 0.5 * before).all()
    fresh = registry.get("loss", "center").create(_ctx(), seed=1)
    assert not torch.equal(fresh.centres, loss.centres)
    fresh.load_state_dict(loss.state_dict())
    torch.testing.assert_close(fresh.centres, loss.centres)
    with pytest.raises(UsageError, match="labels"):
        loss(emb[:2], torch.tensor([0, 9]))
