"""Model-specific behaviour of the pienet, msm, psp, gram and histogram encoders and piebench.weights."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from piebench_plugins.encoders._resnet import count_parameters
from piebench_plugins.encoders.gram import build_gram
from piebench_plugins.encoders.histogram import build_histogram
from piebench_plugins.encoders.msm import build_msm
from piebench_plugins.encoders.pienet import build_pienet
from piebench_plugins.encoders.psp import build_psp

from piebench.errors import UsageError
from piebench.interfaces import BuildContext, RefSet
from piebench.weights import load_torchvision_backbone, staged_weights

TV_FC = 512 * 1000 + 1000  # torchvision ResNet-18's ImageNet classifier (unused by the encoders)


def _create(registry, name, configuration="small", **ctx):
    return registry.get("encoder", name).create(BuildContext(image_size=64, **ctx), configuration)


def _paper_on_meta(registry, name, image_size=256):
    with torch.device("meta"):
        return registry.get("encoder", name).create(BuildContext(image_size=image_size), "paper")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty ``$TORCH_HOME`` with its ``hub/checkpoints`` folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


# -- parameter counts of the paper configurations (built on the meta device, never trained) --------
def test_msm_paper_parameter_counts_match_the_official_code(registry):
    enc = _paper_on_meta(registry, "msm")
    transformer = count_parameters(enc.transformer) + count_parameters(enc.readout)
    style, content = count_parameters(enc.style), count_parameters(enc.content)
    assert transformer == 50_924_032 and round(transformer / 1e6, 2) == 50.92  # docs/models.md: 50.92 M
    # the official ResNet-18s carry torchvision's unused 1000-class classifier; ours leave it out
    assert style == 11_176_512 and round((style + TV_FC) / 1e6, 2) == 11.69
    assert content == 11_242_048 and round((content + TV_FC) / 1e6, 2) == 11.76
    assert enc.mask_token.numel() == 512 and enc.dim == 512
    assert count_parameters(enc) == transformer + style + content + 512


def test_pienet_paper_is_torchvision_resnet18_without_classifier(registry):
    enc = _paper_on_meta(registry, "pienet")
    with torch.device("meta"):
        tv = torchvision.models.resnet18()
    assert count_parameters(enc) == count_parameters(tv) - TV_FC == 11_176_512
    assert set(enc.trunk.state_dict()) == {k for k in tv.state_dict() if not k.startswith("fc.")}
    assert enc.dim == 512 and enc.map_channels == (128,)
    assert enc.metric_loss == "triplet"
    assert registry.has("loss", "triplet")


def test_psp_paper_heads_reduce_each_scale_to_1x1(registry):
    enc = _paper_on_meta(registry, "psp", image_size=256)
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in heads[0].convs) for heads in enc.heads]
    assert convs == [5, 4, 3]  # 32, 16, 8 pixels at strides 8, 16, 32 of a 256 px image (pSp: log2)
    assert enc.dim == 512 and enc.map_channels == (512, 512, 512)
    conv, linear = 512 * 512 * 9 + 512, 512 * 512 + 512
    laterals = (128 + 256) * 512 + 2 * 512  # layer4 already has the FPN width: identity lateral
    assert count_parameters(enc) == 11_176_512 + laterals + 12 * conv + 3 * linear == 40_479_808


# -- pienet ------------------------------------------------------------------------------------
def test_pienet_preference_is_normalised_mean_of_embeddings(registry):
    enc = _create(registry, "pienet").eval()
    refs = torch.rand(2, 4, 3, 64, 64)
    mask = torch.tensor([[True, True, True, False], [True, False, True, False]])
    pref = enc(RefSet(targets=refs, mask=mask))
    with torch.no_grad():
        emb = enc.embed(refs.flatten(0, 1)).view(2, 4, -1)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2, 4), atol=1e-5)
    want = torch.stack([F.normalize(emb[b][mask[b]].mean(0), dim=0) for b in range(2)])
    assert torch.allclose(pref.vector, want, atol=1e-5)
    assert pref.maps[0].shape == (2, 4, enc.map_channels[0], 8, 8)


def test_pienet_pretrained_loads_the_staged_torchvision_file(registry, torch_home):
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), torch_home / "resnet18-f37072fd.pth")
    enc = build_pienet(BuildContext(pretrained=True))
    assert torch.equal(enc.trunk.conv1.weight, tv.conv1.weight)
    assert torch.equal(enc.trunk.layer4[1].bn2.running_var, tv.layer4[1].bn2.running_var)
    assert "resnet18-f37072fd.pth" in enc.pretrained_from
    assert build_pienet(BuildContext()).pretrained_from == "random initialisation"


def test_pretrained_without_staged_file_names_file_and_folder(registry, torch_home):
    with pytest.raises(UsageError) as err:
        build_pienet(BuildContext(pretrained=True))
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(torch_home) in msg and "--pretrained" in msg
    with pytest.raises(UsageError, match="paper widths"):
        _create(registry, "pienet", pretrained=True)  # small widths have no ImageNet weights


def test_staged_weights_helper(torch_home):
    path = torch_home / "x.pth"
    torch.save({"weight": torch.ones(2, 3)}, path)
    assert staged_weights("x.pth") == path
    with pytest.raises(UsageError, match="does not fit|do not fit"):
        load_torchvision_backbone(torch.nn.Linear(3, 4), "x.pth")
    lin = torch.nn.Linear(3, 2, bias=False)
    assert "x.pth" in load_torchvision_backbone(lin, "x.pth")
    assert torch.equal(lin.weight, torch.ones(2, 3))


# -- msm ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def msm():
    torch.manual_seed(0)
    return build_msm(BuildContext(image_size=64), widths=(8, 16, 32, 64), d_model=128, heads=4,
                     layers=2, feedforward=256).eval()


def _pairs(b=2, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.rand(b, n, 3, 64, 64, generator=g)
    return inputs, (inputs * 1.2).clamp(0, 1), torch.rand(b, 3, 64, 64, generator=g)


def test_msm_preference_depends_on_the_query(msm):
    inputs, targets, query = _pairs()
    with torch.no_grad():
        a = msm(RefSet(targets=targets, inputs=inputs, query=query)).vector
        b = msm(RefSet(targets=targets, inputs=inputs, query=query.flip(-1) * 0.5)).vector
    assert a.shape == (2, msm.dim)
    assert (a - b).abs().max() > 1e-3


def test_msm_is_invariant_to_the_order_of_reference_pairs(msm):
    inputs, targets, query = _pairs(n=4)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        a = msm(RefSet(targets=targets, inputs=inputs, query=query)).vector
        b = msm(RefSet(targets=targets[:, perm], inputs=inputs[:, perm], query=query)).vector
        c = msm(RefSet(targets=targets, inputs=inputs[:, perm], query=query)).vector  # broken pairs
    assert torch.allclose(a, b, atol=1e-5)
    assert (a - c).abs().max() > 1e-4


def test_msm_ignores_masked_references(msm):
    inputs, targets, query = _pairs(n=4)
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    junk_in, junk_tg = inputs.clone(), targets.clone()
    junk_in[~mask], junk_tg[~mask] = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        a = msm(RefSet(targets=targets, inputs=inputs, query=query, mask=mask)).vector
        b = msm(RefSet(targets=junk_tg, inputs=junk_in, query=query, mask=mask)).vector
        first = msm(RefSet(targets=targets[:1, :2], inputs=inputs[:1, :2], query=query[:1])).vector
        unmasked = msm(RefSet(targets=targets, inputs=inputs, query=query)).vector
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[:1], first, atol=1e-5)
    assert (a - unmasked).abs().max() > 1e-4


def test_msm_refuses_references_without_inputs(msm):
    inputs, targets, query = _pairs()
    with pytest.raises(UsageError, match="reference pairs.*RefSet.inputs"):
        msm(RefSet(targets=targets, query=query))
    with pytest.raises(UsageError, match="query"):
        msm(RefSet(targets=targets, inputs=inputs))
    assert msm.requires == {"targets", "inputs"}


# -- psp ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 96])
def test_psp_maps_across_scales(registry, size):
    enc = registry.get("encoder", "psp").create(BuildContext(image_size=size), "small").eval()
    refs = torch.rand(2, 3, 3, size, size)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    pref = enc(RefSet(targets=refs, mask=mask))
    assert [tuple(m.shape) for m in pref.maps] == [
        (2, 3, c, size // s, size // s) for c, s in zip(enc.map_channels, (8, 16, 32), strict=True)]
    assert torch.equal(pref.mask, mask)
    assert all(float(m.detach()[~mask].abs().max()) == 0 for m in pref.maps)
    with torch.no_grad():
        emb = enc.embed(refs.flatten(0, 1)).view(2, 3, -1)
    assert torch.allclose(pref.vector[1], emb[1, 0], atol=1e-5)
    assert enc.metric_loss == "angular"
    assert registry.get("encoder", "psp").create(BuildContext(), "small", metric_loss=None).metric_loss is None


# -- every encoder of this file honours the mask --------------------------------------------------
@pytest.mark.parametrize("name", ["pienet", "psp", "gram", "histogram"])
def test_masked_references_do_not_change_the_preference(registry, name):
    enc = _create(registry, name).eval()
    refs = torch.rand(2, 3, 3, 64, 64)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    junk = refs.clone()
    junk[~mask] = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        a = enc(RefSet(targets=refs, mask=mask)).vector
        b = enc(RefSet(targets=junk, mask=mask)).vector
        one = enc(RefSet(targets=refs[1:, 1:2])).vector
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[1:], one, atol=1e-5)


# -- training-free encoders separate warm from cool users on real photos ------------------------------
def _photos(size=64):
    """Four corner crops of each of eight everyday scenes (skimage, matplotlib, scikit-learn)."""
    import matplotlib
    import matplotlib.image
    import skimage.data
    from sklearn.datasets import load_sample_images

    ims = [getattr(skimage.data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")]
    ims.append(skimage.data.stereo_motorcycle()[0])
    ims.append(matplotlib.image.imread(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")))
    ims += list(load_sample_images().images)
    crops, scene = [], []
    for i, im in enumerate(ims):
        t = torch.from_numpy(np.array(im[..., :3])).permute(2, 0, 1).float() / 255
        h, w = t.shape[1:]
        s = min(h, w) // 2
        for y, x in ((0, 0), (h - s, w - s), (0, w - s), (h - s, 0)):
            crops.append(F.interpolate(t[None, :, y:y + s, x:x + s], size=size, mode="area")[0])
            scene.append(i)
    return torch.stack(crops), torch.tensor(scene)


def _gains(x, r, b):
    return (x * torch.tensor([r, 1.0, b]).view(1, 3, 1, 1)).clamp(0, 1)


@pytest.fixture(scope="module")
def photos():
    return _photos()


@pytest.mark.parametrize("build", [build_gram, build_histogram])
def test_training_free_encoders_separate_warm_and_cool_users(build, photos):
    x, scene = photos
    enc = build(BuildContext())
    assert count_parameters(enc) == 0 and not enc.trainable
    warm, cool = enc.embed(_gains(x, 1.15, 0.85)), enc.embed(_gains(x, 0.85, 1.15))
    # single photos, nearest user centroid, scene held out (content differs from the centroids');
    # the scene's own colour cast limits any retouch-only encoder (a perfect mean-chroma feature
    # scores 0.73 here); chance is 0.5
    hits = []
    for s in scene.unique():
        held = scene == s
        cw, cc = warm[~held].mean(0), cool[~held].mean(0)
        hits += ((warm[held] - cw).norm(dim=1) < (warm[held] - cc).norm(dim=1)).tolist()
        hits += ((cool[held] - cc).norm(dim=1) < (cool[held] - cw).norm(dim=1)).tolist()
    assert np.mean(hits) >= 0.6, np.mean(hits)
    # preferences of 4 references drawn from a common photo pool: centroids from 20 draws per
    # user, 20 fresh draws per user classified
    g = torch.Generator().manual_seed(0)
    picks = torch.stack([torch.randperm(len(x), generator=g)[:4] for _ in range(80)])
    pw = enc(RefSet(targets=_gains(x, 1.15, 0.85)[picks[:40]])).vector
    pc = enc(RefSet(targets=_gains(x, 0.85, 1.15)[picks[40:]])).vector
    cw, cc = pw[:20].mean(0), pc[:20].mean(0)
    acc = (((pw[20:] - cw).norm(dim=1) < (pw[20:] - cc).norm(dim=1)).float().mean()
           + ((pc[20:] - cc).norm(dim=1) < (pc[20:] - cw).norm(dim=1)).float().mean()) / 2
    assert acc >= 0.75, acc


@pytest.mark.parametrize("build", [build_gram, build_histogram])
def test_training_free_encoders_are_differentiable_and_ignore_pretrained(build):
    enc = build(BuildContext(pretrained=True))
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    enc.embed(x)[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert "training-free" in enc.pretrained_from


def test_psp_small_builds_for_image_size(registry):
    enc = build_psp(BuildContext(image_size=32), widths=(8, 16, 32, 64), fpn_width=16)
    pref = enc(RefSet(targets=torch.rand(1, 2, 3, 32, 32)))
    assert pref.vector.shape == (1, 16) and pref.maps[2].shape[-1] == 1
