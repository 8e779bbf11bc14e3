"""The contract every registered encoder and enhancer must keep (small configurations).

Parametrised over the registry, so each model plugin is checked as soon as it is installed:
shapes and finiteness, any N and padded references, gradients reaching every trainable
parameter, each consumed preference field actually used, and a few Adam steps that learn.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from piebench.data import PhotoInfo, PieDataset, UserInfo
from piebench.errors import PiebenchError
from piebench.interfaces import BuildContext, Encoder, Preference, RefSet, check_compatible
from piebench.plugins import get_registry

REGISTRY = get_registry()
ENCODERS = REGISTRY.names("encoder")
ENHANCERS = REGISTRY.names("enhancer")
B, N, S = 2, 3, 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one intra-op thread is as fast, and on a shared, oversubscribed
    CPU two threads measured up to 50x slower (OpenMP spin-waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_dataset() -> PieDataset:
    """4 seen + 1 unseen users, 4 photos of 64x64, with known per-user parameters (for oracles)."""
    rng = np.random.default_rng(0)
    users = [UserInfo(i, f"u{i}", seen=i < 4) for i in range(5)]
    photos = [PhotoInfo(i, f"p{i}", scene=f"s{i}", split="train" if i < 3 else "test") for i in range(4)]
    versions = rng.integers(0, 256, size=(6, 4, S, S, 3), dtype=np.uint8)
    return PieDataset(name="tiny", versions=versions, users=users, photos=photos, recipe={}, recipe_hash="0",
                      param_names=["a", "b"], user_params=rng.standard_normal((5, 2)).astype(np.float32))


DATA = _tiny_dataset()


def _image(version: int, photo: int) -> torch.Tensor:
    return torch.from_numpy(DATA.versions[version, photo]).permute(2, 0, 1).float() / 255


def _ctx(**kw) -> BuildContext:
    return BuildContext(num_users=4, num_refs=N, image_size=S, dataset=DATA, **kw)


def _refset(encoder: Encoder, b: int = B, n: int = N, mask=None, seed: int = 0) -> RefSet:
    """Stored retouches of the tiny dataset as references (sample i is seen user i % 4)."""
    rng = np.random.default_rng(seed)
    photos = [rng.permutation(len(DATA.photos))[:n] for _ in range(b)]
    targets = torch.stack([torch.stack([_image(1 + i % 4, p) for p in ps]) for i, ps in enumerate(photos)])
    inputs = torch.stack([torch.stack([_image(0, p) for p in ps]) for ps in photos])
    query = torch.stack([_image(0, int(rng.integers(len(DATA.photos)))) for _ in range(b)])
    return RefSet(targets=targets, inputs=inputs if "inputs" in encoder.requires else None, mask=mask,
                  query=query)


def _retouches(m: int) -> torch.Tensor:
    """``m`` stored retouches ``[m, 3, 64, 64]``."""
    return torch.stack([_image(1 + i % 4, (i // 4) % len(DATA.photos)) for i in range(m)])


def _build_encoder(name: str) -> Encoder:
    torch.manual_seed(0)
    return REGISTRY.get("encoder", name).create(_ctx(), "small")


def _check_preference(encoder: Encoder, pref: Preference, b: int, n: int) -> None:
    assert isinstance(pref, Preference)
    assert pref.vector.shape == (b, encoder.dim)
    assert torch.isfinite(pref.vector).all()
    assert set(encoder.provides) <= pref.provided(), f"declares {set(encoder.provides)}, gave {pref.provided()}"
    if "maps" in encoder.provides:
        assert len(pref.maps) == len(encoder.map_channels)
        for fmap, channels in zip(pref.maps, encoder.map_channels, strict=True):
            assert fmap.dim() == 5 and fmap.shape[:3] == (b, n, channels)
            assert torch.isfinite(fmap).all()
    if "source" in encoder.provides:
        assert pref.source.shape[0] == b and torch.isfinite(pref.source).all()


def _projection_loss(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A fixed random linear functional of the tensors (no symmetric cancellation)."""
    g = torch.Generator().manual_seed(1)
    return sum((t * torch.randn(t.shape, generator=g)).mean() for t in tensors)


def _pref_tensors(pref: Preference) -> list[torch.Tensor]:
    out = [pref.vector]
    out += list(pref.maps or ())
    if pref.source is not None:
        out.append(pref.source)
    return out


def _unreached(params: dict[str, torch.nn.Parameter], loss_fn, inputs: dict[str, torch.Tensor] | None = None,
               steps: int = 3) -> list[str]:
    """Names of parameters (and of watched ``inputs``) outside the graph of ``loss_fn()``, or whose
    gradient stays exactly zero over a few Adam steps on ``params`` (zero-initialised layers,
    as in Fixup, pass gradient only after the first step)."""
    watched = {**params, **(inputs or {})}
    unreached = list(watched)
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        for t in (inputs or {}).values():
            t.grad = None
        loss_fn().backward()
        if step == 0:
            detached = [n for n in unreached if watched[n].grad is None]
            if detached:
                return detached
        unreached = [n for n in unreached if not watched[n].grad.abs().sum() > 0]
        if not unreached:
            break
        opt.step()
    return unreached


# -- encoders --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_shapes_any_n_and_padding(name):
    enc = _build_encoder(name).eval()
    with torch.no_grad():
        emb = enc.embed(_retouches(5))
        assert emb.shape == (5, enc.dim) and torch.isfinite(emb).all()
        _check_preference(enc, enc(_refset(enc)), B, N)
        try:
            one = enc(_refset(enc, n=1))
        except PiebenchError as err:
            pytest.skip(f"{name} does not take N=1: {err}")
        _check_preference(enc, one, B, 1)
        # A padded reference: its content must not matter.
        mask = torch.tensor([[True, True, False], [True, False, False]])
        a, b = _refset(enc, mask=mask, seed=2), _refset(enc, mask=mask, seed=2)
        b.targets[~mask] = torch.rand_like(b.targets[~mask])
        if b.inputs is not None:
            b.inputs[~mask] = torch.rand_like(b.inputs[~mask])
        pa, pb = enc(a), enc(b)
        _check_preference(enc, pa, B, N)
        torch.testing.assert_close(pa.vector, pb.vector, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_gradients_reach_every_parameter(name):
    enc = _build_encoder(name).train()
    params = {n: p for n, p in enc.named_parameters() if p.requires_grad}
    if not enc.trainable or not params:
        assert not params or not enc.trainable
        pytest.skip(f"{name} is training-free")
    refs, images = _refset(enc), _retouches(4)
    def outputs():
        emb = enc.embed(images)
        # an encoder that owns its training proxies (StarEnhancer) reaches them through proxy_logits
        extra = [enc.proxy_logits(emb)] if hasattr(enc, "proxy_logits") else []
        return _projection_loss(_pref_tensors(enc(refs)) + [emb] + extra)

    dead = _unreached(params, outputs)
    assert not dead, f"{name}: no gradient reaches {dead[:8]}"


# -- enhancers -------------------------------------------------------------------------------

@functools.cache
def _provides(name: str) -> frozenset[str]:
    return frozenset(_build_encoder(name).provides)


def _setup_enhancer(name: str):
    """The enhancer (small) with a compatible encoder: its ``pairs_with``, else ``angular``,
    else the first registered encoder providing what it consumes (one its builder accepts)."""
    spec = REGISTRY.get("enhancer", name)
    consumes = set(spec.consumes)
    order = [spec.pairs_with, "angular", *ENCODERS]
    candidates = [e for e in dict.fromkeys(order) if e in ENCODERS and consumes <= _provides(e)]
    error = None
    for partner in candidates:
        enc = _build_encoder(partner).eval()
        torch.manual_seed(0)
        try:
            enh = spec.create(_ctx(encoder=enc), "small")
        except PiebenchError as err:
            error = err
            continue
        if set(enh.consumes) <= set(enc.provides):
            fixed = spec.meta.get("fixed_size") or getattr(enh, "fixed_size", None)
            return enc, enh, fixed
    if error is not None:
        raise error
    pytest.skip(f"no installed encoder provides what '{name}' consumes")


def _preference(enc: Encoder) -> Preference:
    with torch.no_grad():
        return enc(_refset(enc))


@pytest.mark.parametrize("name", ENHANCERS)
def test_enhancer_shapes(name):
    enc, enh, fixed = _setup_enhancer(name)
    sizes = [(S, S)] if fixed else [(S, S), (48, 80)]
    for h, w in sizes:
        x = torch.rand(B, 3, h, w)
        out = enh(x, _preference(enc))
        assert out.shape == (B, 3, h, w), f"{name} at {h}x{w}: {tuple(out.shape)}"
        assert torch.isfinite(out).all()
    if not enh.consumes and not any(p.requires_grad for p in enh.parameters()):
        torch.testing.assert_close(enh(x, _preference(enc)), x)


@pytest.mark.parametrize("name", ENHANCERS)
def test_enhancer_gradients_and_consumed_fields(name):
    enc, enh, _ = _setup_enhancer(name)
    params = {n: p for n, p in enh.named_parameters() if p.requires_grad}
    if not enh.trainable or not params:
        pytest.skip(f"{name} has nothing to train")
    enh.train()
    pref = _preference(enc)
    leaves = {"vector": pref.vector.clone().requires_grad_()}
    if pref.maps is not None:
        leaves["maps"] = tuple(m.clone().requires_grad_() for m in pref.maps)
    if pref.source is not None:
        leaves["source"] = pref.source.clone().requires_grad_()
    pref = pref.replace(**leaves)
    x = torch.rand(B, 3, S, S, generator=torch.Generator().manual_seed(3))
    watched = {}
    for field in enh.consumes:
        value = leaves[field]
        for i, t in enumerate(value if isinstance(value, tuple) else (value,)):
            watched[f"Preference.{field}[{i}]"] = t

    def loss_fn():
        out = enh(x, pref)
        return F.l1_loss(out, x.flip(-1)) + _projection_loss([out])

    dead = _unreached(params, loss_fn, watched)
    assert not dead, f"{name}: no gradient reaches {dead[:8]}"


@pytest.mark.parametrize("name", ENHANCERS)
def test_enhancer_learns_a_fixed_batch(name):
    enc, enh, fixed = _setup_enhancer(name)
    params = [p for p in enh.parameters() if p.requires_grad]
    if not enh.trainable or not params:
        pytest.skip(f"{name} has nothing to train")
    enh.train()
    size = S if fixed else 32  # small images keep 20 steps cheap
    pref = _preference(enc)
    x = torch.rand(B, 3, size, size, generator=torch.Generator().manual_seed(4))
    target = (x.clamp_min(1e-4) ** 0.7) * 0.9 + 0.05
    opt = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(20):
        loss = F.l1_loss(enh(x, pref), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    end = sum(losses[-3:]) / 3
    assert end < losses[0], f"{name}: L1 went {losses[0]:.4f} -> {end:.4f} (mean of the last 3 steps)"


# -- compatibility ---------------------------------------------------------------------------

def test_check_compatible_refuses_maps_without_maps():
    class VectorOnly(Encoder):
        provides = frozenset({"vector"})

    sa = REGISTRY.get("enhancer", "sa").create(_ctx(encoder=_build_encoder("angular")), "small")
    reason = check_compatible("vec", VectorOnly, "sa", sa)
    assert reason is not None and "maps" in reason and "'sa'" in reason and "'vec'" in reason
    assert check_compatible("angular", _build_encoder("angular"), "sa", sa) is None
