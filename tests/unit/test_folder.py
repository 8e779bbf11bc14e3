"""The folder dataset: pairs by stem, 8/16-bit files, reference-only images, splits, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from piebench.data.fakefivek import _save, fake_photo
from piebench.data.folder import build_folder, hash_split
from piebench.errors import UsageError


def _tree(root, names=("p1", "p2", "p3", "p4", "p5", "p6"), users=("ann", "bob")):
    for i, n in enumerate(names):
        img = fake_photo(i, 40, 40)
        _save(root / "input" / f"{n}.png", img)
        for k, u in enumerate(users):
            out = np.clip(img * (1.2 if k == 0 else 0.8), 0, 1)
            # ann exports 16-bit TIFFs, bob 8-bit JPEGs: both read the same way
            _save(root / u / (f"{n}.tif" if k == 0 else f"{n}.jpg"), out, bits=16 if k == 0 else 8)
    return root


def test_pairs_splits_and_bits(tmp_path):
    root = _tree(tmp_path / "d")
    ds = build_folder(root, resolution=32, test_fraction=0.5)
    assert ds.versions.shape == (3, 6, 32, 32, 3) and [u.name for u in ds.users] == ["ann", "bob"]
    splits = {p.name: p.split for p in ds.photos}
    assert splits == {n: hash_split(n, 0.5) for n in splits}  # deterministic, by name
    assert {"train", "test"} <= set(splits.values())
    # ann's 16-bit brightening and bob's darkening are both in the store.
    assert ds.target(0, 0).mean() > ds.input(0).mean() > ds.target(1, 0).mean()
    again = build_folder(root, resolution=32, test_fraction=0.5)  # cached: same recipe, same pixels
    assert again.recipe_hash == ds.recipe_hash and np.array_equal(np.asarray(again.versions), np.asarray(ds.versions))


def test_reference_only_images_and_split_file(tmp_path):
    root = _tree(tmp_path / "d", names=("p1", "p2", "p3"))
    _save(root / "ann" / "extra.png", fake_photo(9, 40, 40))  # ann only: no input
    (root / "split.json").write_text(json.dumps({"train": ["p1", "p2"], "test": ["p3"]}))
    ds = build_folder(root, resolution=16)
    by = {p.name: p for p in ds.photos}
    assert by["extra"].split == "ref" and [by[n].split for n in ("p1", "p2", "p3")] == ["train", "train", "test"]
    assert ds.has(0, by["extra"].id) and not ds.has(1, by["extra"].id)
    assert by["extra"].id in ds.references(0) and by["extra"].id not in ds.references(1)
    assert by["extra"].id not in ds.support(0)  # support() also feeds training pairs: inputs needed
    assert by["extra"].id not in ds.photo_ids("train") + ds.photo_ids("test")  # never a pair
    assert by["p3"].id not in ds.references(0)  # references and test photos stay disjoint


def test_bad_input(tmp_path):
    with pytest.raises(UsageError, match="no .*input/ folder"):
        build_folder(tmp_path)
    (tmp_path / "input").mkdir()
    (tmp_path / "ann").mkdir()
    with pytest.raises(UsageError, match="input/ holds no images"):
        build_folder(tmp_path)
    _save(tmp_path / "input" / "a.png", fake_photo(0, 20, 20))
    with pytest.raises(UsageError, match="ann/ holds no images"):
        build_folder(tmp_path)
    _save(tmp_path / "ann" / "a.png", fake_photo(1, 20, 20))
    with pytest.raises(UsageError, match="user 'ann' has 1 reference photos.*fewer than the 3"):
        build_folder(tmp_path, resolution=16, test_fraction=0.0, min_refs=3)
    Image.new("L", (20, 20)).save(tmp_path / "ann" / "b.png")
    _save(tmp_path / "input" / "b.png", fake_photo(2, 20, 20))
    with pytest.raises(UsageError, match=r"ann/b\.png: grayscale"):
        build_folder(tmp_path, resolution=16, test_fraction=0.0)
    (tmp_path / "split.json").write_text("{oops")
    with pytest.raises(UsageError, match="split.json is not valid JSON"):
        build_folder(tmp_path, resolution=16)


def test_plugin_registered_and_validates(registry, tmp_path):
    from piebench.interfaces import BuildContext

    spec = registry.get("dataset", "folder")
    root = _tree(tmp_path / "d", names=("p1", "p2", "p3", "p4"))
    ds = spec.create(BuildContext(num_refs=1), None, root=str(root), resolution=16, crops_per_scene=4,
                     unseen_users=["bob"])
    assert [(u.name, u.seen) for u in ds.users] == [("ann", True), ("bob", False)]
    with pytest.raises(UsageError, match="resolution"):
        spec.create(BuildContext(), None, root=str(root), resolution="big")
    with pytest.raises(UsageError, match="folder needs a path"):
        spec.create(BuildContext(), None)
