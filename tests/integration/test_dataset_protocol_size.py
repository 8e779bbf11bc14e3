"""A dataset named on the command line keeps the protocol's size: smoke on folder:PATH builds at 64 px."""

from __future__ import annotations

import json

import numpy as np

from piebench.cli import main
from piebench.config import inherited_data, resolve
from piebench.data.fakefivek import _save, fake_photo


def _folder(root, n=8, users=("ann", "bob", "cid")):
    for i in range(n):
        img = fake_photo(i, 90, 120)
        _save(root / "input" / f"p{i}.png", img)
        for k, u in enumerate(users):
            _save(root / u / f"p{i}.png", np.clip(img * (0.7, 1.15, 1.3)[k], 0, 1))
    return root


def test_named_dataset_takes_the_protocol_keys_it_understands():
    cfg = resolve("smoke", encoder="angular", enhancer="sa", dataset="folder:/photos")
    assert cfg["eval"]["data"] == {"root": "/photos", "resolution": 64}  # not pie-synth's user counts
    assert resolve("quick", encoder="angular", enhancer="sa", dataset="folder:/p")["eval"]["data"]["resolution"] == 256
    fivek = resolve("smoke", encoder="angular", enhancer="sa", dataset="fivek:/store")["eval"]["data"]
    assert fivek == {"root": "/store", "resolution": 64}  # fivek's `resolution: int | None` takes it too
    over = resolve("smoke", encoder="angular", enhancer="sa", dataset="folder:/p", sets=["eval.data.resolution=96"])
    assert over["eval"]["data"]["resolution"] == 96  # the user's --set still wins
    assert list(inherited_data("folder", {"unseen_users": 8, "crops_per_scene": 4, "resolution": 32})) == ["resolution"]
    assert inherited_data("no-such-dataset", {"resolution": 32}) == {}


def test_smoke_on_a_folder_builds_its_store_at_64_px(tmp_path):
    import time

    from piebench.data.folder import build_folder

    root = _folder(tmp_path / "photos")
    runs = tmp_path / "runs"
    t0 = time.perf_counter()
    main(["run", "--protocol", "smoke", "--encoder", "angular", "--enhancer", "sa", "--dataset", f"folder:{root}",
          "--steps", "10", "--runs-dir", str(runs)])
    elapsed = time.perf_counter() - t0
    (config,) = list(runs.rglob("config.json"))
    cfg = json.loads(config.read_text())
    assert cfg["eval"]["dataset"] == "folder" and cfg["eval"]["data"]["resolution"] == 64
    store = build_folder(root, resolution=64)  # the cached store the run built (same recipe)
    assert store.versions.shape[-3:] == (64, 64, 3)
    assert elapsed < 120, f"10 steps at 64 px took {elapsed:.0f} s"
