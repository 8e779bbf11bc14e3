"""Attribution baselines: the oracle encoders and the training-free colour transfer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import color, data
from skimage.transform import resize

from piebench.data import PhotoInfo, PieDataset, UserInfo
from piebench.data.retouch import PARAM_NAMES, retouch
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, RefSet
from piebench.metrics.control import mse_matrix, steering_score, target_matrix
from piebench.metrics.fidelity import rgb_to_lab

USER_EDITS = [  # (exposure, temperature, saturation): 4 seen users then 2 unseen
    (0.6, 0.0, 0.0), (-0.6, 0.3, 0.0), (0.0, -0.5, 0.4), (0.2, 0.4, -0.5), (-0.3, -0.2, 0.6), (0.5, 0.5, 0.3),
]
SEEN = 4


def _photos(n: int = 6, side: int = 16) -> np.ndarray:
    """n float crops [n, side, side, 3] of two skimage photos."""
    out = []
    for i in range(n):
        img = (data.astronaut() if i % 2 == 0 else data.coffee()).astype(np.float32) / 255
        h, w = img.shape[:2]
        y, x = (i * 37) % (h // 2), (i * 53) % (w // 2)
        out.append(resize(img[y:y + h // 2, x:x + w // 2], (side, side), anti_aliasing=True))
    return np.clip(np.stack(out), 0, 1).astype(np.float32)


def _params() -> np.ndarray:
    p = np.zeros((len(USER_EDITS), len(PARAM_NAMES)), np.float32)
    for u, (ev, temp, sat) in enumerate(USER_EDITS):
        p[u, PARAM_NAMES.index("exposure")] = ev
        p[u, PARAM_NAMES.index("temperature")] = temp
        p[u, PARAM_NAMES.index("saturation")] = sat
    return p


@pytest.fixture(scope="module")
def dataset() -> PieDataset:
    x = _photos()
    params = _params()
    versions = [x] + [retouch(x, dict(zip(PARAM_NAMES, row, strict=True))) for row in params]
    store = np.round(np.clip(np.stack(versions), 0, 1) * 255).astype(np.uint8)
    users = [UserInfo(u, f"u{u}", u < SEEN) for u in range(len(USER_EDITS))]
    photos = [PhotoInfo(p, f"p{p}", f"s{p % 2}", "train" if p < 4 else "test") for p in range(x.shape[0])]
    return PieDataset("tiny", store, users, photos, recipe={}, recipe_hash="tiny", param_names=list(PARAM_NAMES),
                      user_params=params)


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).float().permute(2, 0, 1) / 255


def _refs(ds: PieDataset, users: list[int], photos: list[int]) -> RefSet:
    return RefSet(targets=torch.stack([torch.stack([_t(ds.target(u, p)) for p in photos]) for u in users]))


def _build(name: str, ds: PieDataset, configuration: str = "small"):
    from piebench.plugins import get_registry

    return get_registry().get("encoder", name).create(BuildContext(num_users=ds.num_seen, dataset=ds), configuration)


def test_oracle_id_recognises_seen_users_and_flags_unseen(dataset):
    enc = _build("oracle-id", dataset)
    users = list(range(dataset.num_users))
    a, b = enc(_refs(dataset, users, [0, 1, 2])), enc(_refs(dataset, users, [3, 4, 5]))
    assert torch.allclose(a.vector, b.vector)  # same user, other photos: the same vector
    known = a.extras["oracle_known"]
    assert known.tolist() == [u < SEEN for u in users]
    assert torch.count_nonzero(a.vector[~known]) == 0
    seen = a.vector[known]
    cos = seen @ seen.T
    assert torch.allclose(cos.diagonal(), torch.ones(SEEN)) and (cos - torch.eye(SEEN)).abs().max() < 0.99
    # flips and rotations keep the identity
    flipped = _refs(dataset, users, [0, 1, 2])
    flipped.targets = torch.rot90(flipped.targets.flip(-1), 1, (-2, -1))
    assert torch.allclose(enc(flipped).vector, a.vector)
    # the learned table trains through the vector
    enc(_refs(dataset, [1], [0])).vector.sum().backward()
    assert enc.table.weight.grad[1].abs().sum() > 0 and enc.table.weight.grad[0].abs().sum() == 0


def test_oracle_refuses_foreign_references_and_missing_dataset(dataset):
    enc = _build("oracle-id", dataset)
    refs = _refs(dataset, [0], [0, 1])
    refs.targets = refs.targets.clone()
    refs.targets[0, 0, :, 0, 0] = (refs.targets[0, 0, :, 0, 0] + 0.5) % 1  # a re-coloured pixel
    refs.mask = torch.tensor([[True, False]])
    with pytest.raises(UsageError, match="does not match any stored retouch"):
        enc(refs)
    refs.mask = torch.tensor([[False, True]])  # the altered reference is padding: ignored
    assert enc(refs).extras["oracle_known"].item()
    from piebench.plugins import get_registry

    with pytest.raises(UsageError, match="dataset"):
        get_registry().get("encoder", "oracle-id").create(BuildContext())
    no_params = PieDataset("tiny", dataset.versions, dataset.users, dataset.photos, {}, "x")
    with pytest.raises(UsageError, match="true parameters"):
        _build("oracle-params", no_params)


def test_oracle_params_carry_the_true_parameters_so_a_perfect_enhancer_steers_fully(dataset):
    """oracle-params (raw) gives the standardised true parameters of seen and unseen users; an
    enhancer that applies the retouch they describe reproduces the targets: steering ~ 1."""
    enc = _build("oracle-params", dataset, "raw")
    users = list(range(dataset.num_users))
    assert enc.dim == len(PARAM_NAMES) and not enc.trainable
    photos = dataset.photo_ids("test")
    vec = enc(_refs(dataset, users, [0, 1, 2])).vector
    true = vec * enc.std + enc.mean  # undo the standardisation
    assert torch.allclose(true, torch.from_numpy(dataset.user_params), atol=1e-5)
    outs_all, tgts_all = [], []
    for p in photos:
        x = dataset.input(p).astype(np.float32)[None] / 255
        outs = torch.stack([_t(np.round(retouch(x, dict(zip(PARAM_NAMES, row.tolist(), strict=True)))[0]
                                        .clip(0, 1) * 255)) for row in true])
        tgts = torch.stack([_t(dataset.target(u, p)) for u in users])
        outs_all.append(outs)
        tgts_all.append(tgts)
    st = steering_score(mse_matrix(torch.stack(outs_all), torch.stack(tgts_all)), target_matrix(torch.stack(tgts_all)))
    assert st.score.mean == pytest.approx(1.0, abs=0.02)
    mlp = _build("oracle-params", dataset)
    assert mlp.dim == 64 and any(p.requires_grad for p in mlp.parameters())
    out = mlp(_refs(dataset, users, [0]))
    assert out.vector.shape == (len(users), 64) and torch.allclose(out.vector.norm(dim=1), torch.ones(len(users)))


def test_lab_stats_and_lab_round_trip_match_skimage():
    from piebench_plugins.encoders.lab_stats import lab_stats

    from piebench.colour import lab_to_rgb

    img = _photos(2, 24)
    x = torch.from_numpy(img).permute(0, 3, 1, 2)
    ref = color.rgb2lab(img.astype(np.float64))
    stats = lab_stats(x).double().numpy() * 100
    assert np.allclose(stats[:, :3], ref.reshape(2, -1, 3).mean(1), atol=1e-3)
    assert np.allclose(stats[:, 3:], ref.reshape(2, -1, 3).std(1), atol=1e-3)
    back = lab_to_rgb(rgb_to_lab(x)).permute(0, 2, 3, 1).numpy()
    assert np.abs(back - img).max() < 1e-5
    ours = lab_to_rgb(torch.from_numpy(ref).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert np.allclose(ours, np.stack([color.lab2rgb(r) for r in ref]), atol=1e-4)


def test_transfer_moves_the_input_statistics_to_the_references(dataset):
    from piebench.plugins import get_registry

    reg = get_registry()
    enc = reg.get("encoder", "lab-stats").create(BuildContext())
    enh = reg.get("enhancer", "transfer").create(BuildContext(encoder=enc))
    assert not list(enh.parameters()) and not enh.trainable
    for user in (0, 3):
        refs = _refs(dataset, [user], [0, 2])
        pref = enc(refs)
        x = _t(dataset.input(1))[None]
        out = enh(x, pref)
        got = rgb_to_lab(out).flatten(2)
        want = pref.vector.double() * 100
        before = rgb_to_lab(x).flatten(2)
        err_after = (got.mean(2) - want[:, :3]).abs().max() + (got.std(2, unbiased=False) - want[:, 3:]).abs().max()
        err_before = (before.mean(2) - want[:, :3]).abs().max() + (before.std(2, unbiased=False) - want[:, 3:]).abs().max()
        assert err_after < 4 and err_after < 0.1 * err_before, (user, float(err_after), float(err_before))
    mean_only = reg.get("enhancer", "transfer").create(BuildContext(encoder=enc), mode="mean")
    out = mean_only(x, pref)
    assert (rgb_to_lab(out).flatten(2).mean(2) - pref.vector.double()[:, :3] * 100).abs().max() < 1.5


def test_transfer_refuses_other_encoders_but_accepts_its_blind_twin():
    from piebench.blind import BlindEncoder
    from piebench.plugins import get_registry

    reg = get_registry()
    angular = reg.get("encoder", "angular").create(BuildContext())
    with pytest.raises(UsageError, match="lab-stats"):
        reg.get("enhancer", "transfer").create(BuildContext(encoder=angular))
    with pytest.raises(UsageError, match="lab-stats"):
        reg.get("enhancer", "transfer").create(BuildContext())
    blind = BlindEncoder(reg.get("encoder", "lab-stats").create(BuildContext()), (16, 16), 2)
    enh = reg.get("enhancer", "transfer").create(BuildContext(encoder=blind))
    x = torch.rand(2, 3, 16, 16)
    assert enh(x, blind(RefSet(targets=torch.rand(2, 2, 3, 16, 16)))).shape == x.shape


def test_edit_transfer_from_reference_pairs_reproduces_the_users_change(dataset):
    """lab-stats 'pairs' describes the user's change of statistics; transfer applies it to a new photo."""
    from piebench.plugins import get_registry

    reg = get_registry()
    enc = reg.get("encoder", "lab-stats").create(BuildContext(), "pairs")
    assert "inputs" in enc.requires
    enh = reg.get("enhancer", "transfer").create(BuildContext(encoder=enc))
    user, refs_photos, photo = 2, [0, 2, 4], 1
    refs = _refs(dataset, [user], refs_photos)
    refs.inputs = torch.stack([_t(dataset.input(p)) for p in refs_photos])[None]
    out = enh(_t(dataset.input(photo))[None], enc(refs))
    lab = lambda img: rgb_to_lab(img).flatten(2)  # noqa: E731
    x, got, want = lab(_t(dataset.input(photo))[None]), lab(out), lab(_t(dataset.target(user, photo))[None])
    err_before = (x.mean(2) - want.mean(2)).abs().max()
    err_after = (got.mean(2) - want.mean(2)).abs().max()
    assert err_after < 0.35 * err_before, (float(err_after), float(err_before))
    with pytest.raises(UsageError, match="inputs"):
        enc(_refs(dataset, [user], refs_photos))
