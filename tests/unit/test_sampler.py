"""The training sampler and the evaluation reference manifest."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from piebench_plugins.datasets.pie_synth import build_pie_synth

from piebench.data.manifest import build_manifest, eval_batches, load_manifest, save_manifest
from piebench.data.sampler import TrainSampler
from piebench.errors import UsageError


@pytest.fixture(scope="module")
def ds():
    """pie-synth at 16 px, 6 crops per scene, default users (12 seen, 8 unseen)."""
    return build_pie_synth(None, resolution=16, crops_per_scene=6)


def store_image(ds, version: int, photo: int, flip: bool = False) -> torch.Tensor:
    img = np.asarray(ds.versions[version, photo])
    if flip:
        img = img[:, ::-1]
    return torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255.0


def test_batch_structure_and_reference_rules(ds):
    sampler = TrainSampler(ds, batch_users=4, per_user=3, refs=5, seed=1)
    test = set(ds.photo_ids("test"))
    for _ in range(5):
        batch = sampler.sample()
        idx = sampler.last_indices
        assert batch.input.shape == (12, 3, 16, 16) and batch.refs.targets.shape == (12, 5, 3, 16, 16)
        counts = Counter(idx["user"])
        assert len(counts) == 4 and set(counts.values()) == {3}  # P users x K photos
        assert all(ds.users[u].seen for u in counts)
        for u, p, refs in zip(idx["user"], idx["photo"], idx["refs"], strict=True):
            support = set(ds.support(u))
            assert p in support and p not in refs
            assert set(refs) <= support and not set(refs) & test
            assert len(set(refs)) == len(refs)  # distinct when the user has enough photos
        for u in counts:  # a user's K photos are distinct
            photos = [p for v, p in zip(idx["user"], idx["photo"], strict=True) if v == u]
            assert len(set(photos)) == len(photos)
        assert torch.equal(batch.user, torch.tensor(idx["user"])) and batch.user.dtype == torch.long
        assert batch.refs.query is batch.input and batch.refs.mask is None and batch.refs.inputs is None
        assert torch.allclose(batch.extras["user_params"], torch.from_numpy(ds.user_params[idx["user"]]))


def test_batch_pixels_are_the_store_entries_of_last_indices(ds):
    sampler = TrainSampler(ds, batch_users=3, per_user=2, refs=3, pairs=True, seed=5, augment=True)
    previous = None
    for _ in range(3):
        batch = sampler.sample()
        idx = sampler.last_indices
        for i, (u, p) in enumerate(zip(idx["user"], idx["photo"], strict=True)):
            flip = idx["flip"][i]
            assert torch.equal(batch.input[i], store_image(ds, 0, p, flip))
            assert torch.equal(batch.target[i], store_image(ds, 1 + u, p, flip))
            for j, r in enumerate(idx["refs"][i]):
                rflip = idx["ref_flip"][i][j]
                assert torch.equal(batch.refs.targets[i, j], store_image(ds, 1 + u, r, rflip))
                assert torch.equal(batch.refs.inputs[i, j], store_image(ds, 0, r, rflip))
        checksum = float(batch.target.sum())
        assert checksum != previous  # a sampler that returns a cached batch fails here
        previous = checksum
    flips = [f for _ in range(10) for f in (sampler.sample(), sampler.last_indices["flip"])[1]]
    assert 0 < sum(flips) < len(flips)  # augmentation flips some samples, not all


def test_no_augmentation_means_no_flips(ds):
    sampler = TrainSampler(ds, batch_users=2, per_user=2, refs=2, augment=False)
    batch = sampler.sample()
    assert not any(sampler.last_indices["flip"])
    assert torch.equal(batch.input[0], store_image(ds, 0, sampler.last_indices["photo"][0]))


def test_state_dict_resumes_the_same_batches(ds):
    a = TrainSampler(ds, batch_users=3, per_user=2, refs=4, seed=7)
    for _ in range(3):
        a.sample()
    state = json.loads(json.dumps(a.state_dict()))  # survives a JSON checkpoint
    expected = [(a.sample(), dict(a.last_indices)) for _ in range(3)]
    b = TrainSampler(ds, batch_users=3, per_user=2, refs=4, seed=123)
    b.load_state_dict(state)
    for batch, idx in expected:
        got = b.sample()
        assert b.last_indices == idx
        assert torch.equal(got.input, batch.input) and torch.equal(got.refs.targets, batch.refs.targets)
    assert b.step == a.step == 6
    with pytest.raises(UsageError, match="refs"):
        TrainSampler(ds, batch_users=3, per_user=2, refs=2).load_state_dict(state)


def test_seeds_differ_and_small_pools_fall_back_to_replacement(ds):
    one = TrainSampler(ds, batch_users=2, per_user=2, refs=2, seed=0).indices()
    two = TrainSampler(ds, batch_users=2, per_user=2, refs=2, seed=1).indices()
    assert not all(np.array_equal(one[k], two[k]) for k in ("user", "photo"))
    # more users per batch than seen users, more photos per user than the user has
    big = TrainSampler(ds, batch_users=15, per_user=40, refs=50, seed=0)
    idx = big.indices()
    assert len(idx["user"]) == 600 and set(idx["user"].tolist()) <= set(ds.user_ids(seen=True))
    assert all(p not in r for p, r in zip(idx["photo"], idx["refs"], strict=True))
    with pytest.raises(UsageError):
        TrainSampler(ds, batch_users=0, per_user=2, refs=2)


# -- the reference manifest ------------------------------------------------------------------------
def test_manifest_is_deterministic_and_covers_every_user(ds):
    m = build_manifest(ds, refs=3, draws=2, seed=0)
    assert m == build_manifest(ds, refs=3, draws=2, seed=0)
    assert m["hash"] != build_manifest(ds, refs=3, draws=2, seed=1)["hash"]
    assert m["recipe_hash"] == ds.recipe_hash and (m["refs"], m["draws"], m["seed"]) == (3, 2, 0)
    test = set(ds.photo_ids("test"))
    assert m["photos"] == sorted(test)
    for entry in m["entries"]:
        assert entry["users"] == ds.user_ids()  # seen and unseen
        for u, draws in zip(entry["users"], entry["refs"], strict=True):
            assert len(draws) == 2
            for refs in draws:
                assert len(set(refs)) == 3 and set(refs) <= set(ds.support(u)) and not set(refs) & test
    seen = {u for e in m["entries"] for u in e["users"] if ds.users[u].seen}
    unseen = {u for e in m["entries"] for u in e["users"] if not ds.users[u].seen}
    assert len(seen) == 12 and len(unseen) == 8


def test_manifest_subset_keeps_the_same_references(ds):
    full = build_manifest(ds, refs=2, draws=1, seed=3)
    sub = build_manifest(ds, refs=2, draws=1, seed=3, max_photos=4)
    tests = ds.photo_ids("test")
    assert len(sub["photos"]) == 4 and sub["photos"][0] == tests[0] and sub["photos"][-1] == tests[-1]
    by_photo = {e["photo"]: e for e in full["entries"]}
    for entry in sub["entries"]:
        assert entry == by_photo[entry["photo"]]


def test_manifest_save_load_and_tamper(ds, tmp_path):
    m = build_manifest(ds, refs=2, draws=1, seed=0, max_photos=2)
    path = tmp_path / "sub" / "manifest.json"
    save_manifest(m, path)
    assert load_manifest(path) == m
    data = json.loads(path.read_text())
    data["entries"][0]["refs"][0][0] = [0, 1]
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="modified"):
        load_manifest(path)
    with pytest.raises(UsageError, match="not a piebench reference manifest"):
        (tmp_path / "x.json").write_text("{}")
        load_manifest(tmp_path / "x.json")


def test_eval_batches_follow_the_manifest(ds):
    m = build_manifest(ds, refs=3, draws=2, seed=0, max_photos=3)
    seen_pairs = []
    for photo, draw, batch in eval_batches(ds, m, pairs=True):
        entry = next(e for e in m["entries"] if e["photo"] == photo)
        users = entry["users"]
        seen_pairs.append((photo, draw))
        assert batch.user.tolist() == users and batch.photo.tolist() == [photo] * len(users)
        for i, u in enumerate(users):
            assert torch.equal(batch.input[i], store_image(ds, 0, photo))
            assert torch.equal(batch.target[i], store_image(ds, 1 + u, photo))
            for j, r in enumerate(entry["refs"][i][draw]):
                assert torch.equal(batch.refs.targets[i, j], store_image(ds, 1 + u, r))
                assert torch.equal(batch.refs.inputs[i, j], store_image(ds, 0, r))
        assert batch.extras["user_params"].shape == (len(users), ds.user_params.shape[1])
    assert seen_pairs == [(p, k) for p in m["photos"] for k in range(2)]
    _, _, batch = next(eval_batches(ds, m, pairs=False))
    assert batch.refs.inputs is None
    other = build_pie_synth(None, resolution=16, crops_per_scene=6, folds=4, fold=1)
    with pytest.raises(UsageError, match="rebuild the manifest"):
        next(eval_batches(other, m, pairs=False))
