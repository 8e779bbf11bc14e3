"""The image store cache and the pie-synth dataset built on it."""

from __future__ import annotations

import inspect
import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
from piebench_plugins.datasets import kodak_scenes
from piebench_plugins.datasets.pie_synth import CATALOGUE, CATALOGUE_NAMES, TEST_SCENES, build_pie_synth

from piebench.data import store
from piebench.data.retouch import PARAM_NAMES, RetouchParams, luminance, retouch
from piebench.data.synth import (
    ARCHETYPES,
    SCENE_NAMES,
    Scene,
    crop_boxes,
    jittered,
    random_users,
    render_crops,
    scene,
    user_jitter,
)
from piebench.errors import UsageError

TINY = {"resolution": 16, "crops_per_scene": 5}


@pytest.fixture(scope="module")
def tiny():
    """pie-synth with default users and split at 16 px, 5 crops per scene."""
    return build_pie_synth(None, **TINY)


# -- the store ----------------------------------------------------------------------------------
def _counting_builder(log: Path, shape=(3, 4, 8, 8, 3), delay: float = 0.0):
    def build(allocate):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        arr = allocate(shape)
        for v in range(shape[0]):
            for p in range(shape[1]):
                arr[v, p] = (v * 10 + p) % 256
                time.sleep(delay / (shape[0] * shape[1]))
        return {"users": ["a", "b"], "photos": list(range(shape[1]))}

    return build


def test_store_builds_once_then_hits_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PIEBENCH_CACHE", str(tmp_path / "cache"))
    log = tmp_path / "builds.log"
    recipe = {"dataset": "toy", "size": 8}
    arr, meta = store.build_or_load(recipe, _counting_builder(log))
    assert not meta["cache_hit"] and arr.shape == (3, 4, 8, 8, 3) and arr[2, 3, 0, 0, 0] == 23
    sidecar = Path(meta["path"]) / "store.json"
    assert Path(meta["path"]).parent == tmp_path / "cache" / "stores"
    assert Path(meta["path"]).name.endswith(store.recipe_hash(recipe)[:16])
    mtime = sidecar.stat().st_mtime_ns
    hits = store.stats["hits"]
    arr2, meta2 = store.build_or_load(recipe, _counting_builder(log))
    assert meta2["cache_hit"] and store.stats["hits"] == hits + 1
    assert sidecar.stat().st_mtime_ns == mtime
    assert log.read_text().count("\n") == 1  # the builder ran once
    assert isinstance(arr2, np.memmap) and not arr2.flags.writeable
    assert np.array_equal(arr, arr2) and meta2["users"] == ["a", "b"] and meta2["recipe"] == recipe
    _, meta3 = store.build_or_load({"dataset": "toy", "size": 9}, _counting_builder(log))  # recipe change
    assert not meta3["cache_hit"] and meta3["path"] != meta["path"]
    assert log.read_text().count("\n") == 2


def test_recipe_hash_is_canonical():
    a = store.recipe_hash({"x": 1, "y": [1, 2], "z": {"b": 1, "a": 2}})
    assert a == store.recipe_hash({"z": {"a": 2, "b": 1}, "y": (1, 2), "x": 1})
    assert a != store.recipe_hash({"x": 1, "y": [2, 1], "z": {"b": 1, "a": 2}})
    assert len(a) == 64 and int(a, 16) >= 0
    with pytest.raises(UsageError):
        store.recipe_hash({"x": object()})


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("PIEBENCH_CACHE", str(tmp_path))

    def broken(allocate):
        allocate((2, 2, 4, 4, 3))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.build_or_load({"dataset": "toy"}, broken)
    assert [p.name for p in (tmp_path / "stores").iterdir() if not p.name.endswith(".lock")] == []
    _, meta = store.build_or_load({"dataset": "toy"}, _counting_builder(tmp_path / "log", (2, 2, 4, 4, 3)))
    assert not meta["cache_hit"]


def _race(cache: str, log: str, out: str) -> None:
    os.environ["PIEBENCH_CACHE"] = cache
    arr, meta = store.build_or_load({"dataset": "race"}, _counting_builder(Path(log), delay=0.5))
    Path(out).write_text(json.dumps({"sum": int(arr.sum()), "path": meta["path"]}))


def test_concurrent_builders_build_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "c"), str(tmp_path / "log"), str(tmp_path / f"o{i}")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [json.loads((tmp_path / f"o{i}").read_text()) for i in range(2)]
    assert results[0] == results[1]
    assert (tmp_path / "log").read_text().count("\n") == 1
    assert not list((tmp_path / "c" / "stores").glob(".*tmp-*"))


# -- pie-synth ----------------------------------------------------------------------------------
def test_versions_shape_and_users(tiny):
    assert tiny.versions.shape == (1 + 20, 32 * 5, 16, 16, 3) and tiny.versions.dtype == np.uint8
    assert [u.seen for u in tiny.users] == [True] * 12 + [False] * 8
    assert tiny.user_params.shape == (20, len(PARAM_NAMES)) and tiny.param_names == PARAM_NAMES
    defaults = inspect.signature(build_pie_synth).parameters
    assert defaults["unseen_users"].default >= 8 and defaults["seen_users"].default == 12
    assert len({tuple(row) for row in tiny.user_params}) == 20  # every user differs


def test_split_is_by_scene(tiny):
    test_scenes = {p.scene for p in tiny.photos if p.split == "test"}
    assert test_scenes == set(TEST_SCENES) and len(test_scenes) == 8
    assert not {tiny.photos[p].scene for p in tiny.photo_ids("train")} & test_scenes
    assert len(tiny.photo_ids("test")) == 8 * 5 and len(tiny.photo_ids("train")) == 24 * 5
    for u in tiny.user_ids():
        assert all(tiny.photos[p].split == "train" for p in tiny.support(u))
    # varied: both sources among the test scenes, and seen and unseen users test on the same photos
    assert set(SCENE_NAMES) & test_scenes and {s for s in test_scenes if s.startswith("kodim")}
    tested = {u.seen: {p for p in tiny.photo_ids("test") if tiny.has(u.id, p)} for u in tiny.users}
    assert tested[True] == tested[False] == set(tiny.photo_ids("test"))


def test_thirty_two_scenes_package_and_kodak():
    assert len(CATALOGUE) == 32 and CATALOGUE_NAMES[:8] == SCENE_NAMES  # v1 photo ids and crops unchanged
    assert CATALOGUE_NAMES[8:] == tuple(f"kodim{i:02d}" for i in range(1, 25))
    folder = kodak_scenes.folder()
    sums = dict(line.split()[::-1] for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert sorted(sums) == [f"kodim{i:02d}.webp" for i in range(1, 25)]
    import hashlib

    for name, digest in sums.items():  # the committed files are the listed ones
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    image = CATALOGUE[CATALOGUE_NAMES.index("kodim23")].load()
    assert image.dtype == np.uint8 and image.shape in ((512, 768, 3), (768, 512, 3))
    assert "unrestricted" in (folder / "README.md").read_text()


def test_the_store_recipe_covers_the_kodak_files(tiny, tmp_path, monkeypatch):
    recipe = json.loads((Path(tiny.info["store"]) / "store.json").read_text())["recipe"]
    assert recipe["kodak"] == {"encoding": kodak_scenes.ENCODING, "sha256sums": kodak_scenes.files_digest()}
    assert recipe["synth_version"] == "2" and len(recipe["scenes"]) == 32
    package_only = build_pie_synth(None, **TINY, scenes=list(SCENE_NAMES))  # v1's scenes: no Kodak files
    assert "kodak" not in json.loads((Path(package_only.info["store"]) / "store.json").read_text())["recipe"]
    assert {p.scene for p in package_only.photos if p.split == "test"} == {"coffee", "chelsea"}
    assert np.array_equal(package_only.versions[:, :40], tiny.versions[:, :40])  # same first 8 scenes
    fake = tmp_path / "kodak"
    fake.mkdir()
    (fake / "SHA256SUMS").write_text("0" * 64 + "  kodim01.webp\n")
    monkeypatch.setattr(kodak_scenes, "folder", lambda: fake)
    assert kodak_scenes.files_digest() != recipe["kodak"]["sha256sums"]


def test_smoke_eval_set_spreads_over_the_test_scenes_and_the_grid_shows_distinct_ones():
    from piebench.config import resolve
    from piebench.data.manifest import build_manifest
    from piebench.report import grid_entries

    cfg = resolve("smoke", encoder="angular", enhancer="sa")
    assert cfg["eval"]["max_photos"] == 24 and cfg["eval"]["data"]["crops_per_scene"] == 20
    ds = build_pie_synth(None, resolution=16, crops_per_scene=cfg["eval"]["data"]["crops_per_scene"])
    manifest = build_manifest(ds, refs=3, draws=1, seed=1234, max_photos=cfg["eval"]["max_photos"])
    scenes = [ds.photos[e["photo"]].scene for e in manifest["entries"]]
    assert {s: scenes.count(s) for s in scenes} == {s: 3 for s in TEST_SCENES}  # 3 photos of each of 8
    shown = [ds.photos[e["photo"]].scene for e in grid_entries(manifest["entries"], ds, 3)]
    assert len(shown) == 3 and len(set(shown)) == 3
    assert len(grid_entries(manifest["entries"], ds, 10)) == 10  # more rows than scenes: repeats allowed


def test_scene_catalogue_is_a_parameter():
    extra = Scene("plain", lambda: np.zeros((8, 8, 3), np.uint8), "a test", "none")
    assert scene("plain", (*CATALOGUE[:2], extra)) is extra
    with pytest.raises(UsageError, match="unknown pie-synth scene"):
        scene("kodim01")  # the core's catalogue holds only the package photographs


def test_folds_cover_every_scene_once_and_share_one_store(tiny):
    builds = store.stats["builds"]
    tests = [{p.scene for p in build_pie_synth(None, **TINY, folds=4, fold=k).photos if p.split == "test"}
             for k in range(4)]
    assert store.stats["builds"] == builds  # the split is not part of the store
    assert sorted(s for t in tests for s in t) == sorted(CATALOGUE_NAMES)
    hashes = {build_pie_synth(None, **TINY, folds=4, fold=k).recipe_hash for k in range(4)}
    assert len(hashes) == 4 and tiny.recipe_hash not in hashes
    with pytest.raises(UsageError, match="fold"):
        build_pie_synth(None, **TINY, folds=4, fold=4)
    with pytest.raises(UsageError, match="unknown pie-synth scene"):
        build_pie_synth(None, **TINY, test_scenes=("kitchen",))


def test_inputs_are_the_documented_crops(tiny):
    photo = tiny.photo_ids("train")[7]
    info = json.loads((Path(tiny.info["store"]) / "store.json").read_text())["photos"][photo]
    image = scene(info["scene"], CATALOGUE).load()
    again = next(render_crops(image, np.array([info["box"]]), 16))
    assert np.array_equal(tiny.input(photo), again)
    left, top, right, bottom = info["box"]
    short = min(image.shape[:2])
    assert right - left == bottom - top and 0.35 * short - 1 <= right - left <= short


def test_targets_are_the_users_retouch_with_their_jitter(tiny):
    for user, photo in [(0, 3), (5, 12), (17, 38)]:
        params = RetouchParams.from_vector(tiny.user_params[user])
        p = jittered(params, user_jitter(user, [photo], 0, 0.02))
        expected = retouch(tiny.input(photo)[None].astype(np.float32) / 255.0, p)[0]
        assert np.abs(tiny.target(user, photo).astype(np.float32) - np.round(expected * 255)).max() <= 1


def test_seed_and_recipe_change_the_pixels(tiny):
    other = build_pie_synth(None, **TINY, seed=1)
    assert other.recipe_hash != tiny.recipe_hash
    assert not np.array_equal(np.asarray(other.versions[0]), np.asarray(tiny.versions[0]))
    again = build_pie_synth(None, **TINY)
    assert again.recipe_hash == tiny.recipe_hash and again.info["cache_hit"]


def test_users_overlap_around_archetypes(tiny):
    styles = [tiny.info["user_styles"][u.name] for u in tiny.users]
    assert set(styles[:12]) == set(ARCHETYPES)  # every archetype among the seen users
    users, names = random_users(20, np.random.default_rng([0, 3]))
    assert names == styles
    v = np.stack([u.to_vector() for u in users])
    hues = [PARAM_NAMES.index("split_highlight_hue"), PARAM_NAMES.index("split_shadow_hue")]
    v[:, hues] /= 180.0
    dist = np.linalg.norm(v[:, None] - v[None], axis=-1)
    same = np.equal.outer(names, names) & ~np.eye(20, dtype=bool)
    assert dist[same].mean() < dist[~np.equal.outer(names, names)].mean()
    pull = tiny.user_params[:, PARAM_NAMES.index("brightness_pull")]
    assert (pull > 0).mean() >= 0.75  # most users have content-dependent brightness


def test_two_user_preset():
    ds = build_pie_synth(None, resolution=16, crops_per_scene=3, users="two-user")
    assert [u.name for u in ds.users] == ["brighten", "darken"] and all(u.seen for u in ds.users)
    ev = ds.user_params[:, PARAM_NAMES.index("exposure")]
    assert ev.tolist() == pytest.approx([0.8, -0.8])
    rest = np.delete(ds.user_params, PARAM_NAMES.index("exposure"), axis=1)
    assert np.array_equal(rest[0], rest[1])  # nothing else differs

    def brightness(v, p):
        return luminance(ds.versions[v, p].astype(np.float32)).mean()

    for p in range(len(ds.photos)):
        assert brightness(1, p) > brightness(0, p) > brightness(2, p)


def test_provenance_and_registration(tiny, registry):
    sources = tiny.info["sources"]
    assert [s["scene"] for s in sources] == list(CATALOGUE_NAMES)
    assert all(s["licence"] and s["source"] for s in sources)
    spec = registry.get("dataset", "pie-synth")
    assert spec.params("small")["resolution"] == 64 and spec.params("quick")["resolution"] == 256
    assert spec.version == "2" and len(spec.meta["scenes"]) == 32
    ds = spec.create(None, "small", resolution=16, crops_per_scene=2)
    assert ds.resolution == (16, 16) and ds.name == "pie-synth"


def test_bad_parameters_are_usage_errors():
    with pytest.raises(UsageError, match="users must be one of"):
        build_pie_synth(None, users="everyone")
    with pytest.raises(UsageError, match="resolution"):
        build_pie_synth(None, resolution=2)
    with pytest.raises(UsageError, match="crop sides"):
        crop_boxes(100, 100, 3, np.random.default_rng(0), min_side=0.0)
