"""FiveK: every layout from a generated tree, the splits, the manifest, resume, skip-bad, bad input."""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pytest

from piebench.colour import prophoto_to_srgb
from piebench.data import fivek, prepared
from piebench.data.fakefivek import FAKE_IDS, fake_photo, make_fake_fivek
from piebench.data.fivek import prepare_fivek, split_480p, upe_split
from piebench.data.prepared import load_store
from piebench.errors import UsageError


@pytest.mark.parametrize("layout", ["starenhancer", "adaint", "msm", "folder"])
def test_rendered_layouts(tmp_path, layout):
    root = make_fake_fivek(tmp_path / "src", layout)
    out = prepare_fivek(root, layout, tmp_path / "store", size=32, progress=False)
    ds = load_store(out)
    assert ds.versions.shape == (6, 12, 32, 48, 3)
    assert [u.name for u in ds.users] == [f"expert{e}" for e in "ABCDE"]
    assert [p.name for p in ds.photos] == sorted(FAKE_IDS)
    assert len(ds.photo_ids("train")) == 8 and len(ds.photo_ids("test")) == 4
    assert all(ds.photos[i].name > "a4500" for i in ds.photo_ids("test"))
    # Experts differ from the input and from each other (their edits survived the store).
    p = ds.photo_ids("test")[0]
    diffs = [np.abs(ds.target(u, p).astype(int) - ds.input(p).astype(int)).mean() for u in range(5)]
    assert min(diffs) > 1.0
    manifest = json.loads((out / "manifest.json").read_text())
    src = manifest["photos"][0]["sources"][0]
    assert src["sha256"] == hashlib.sha256(pathlib.Path(src["file"]).read_bytes()).hexdigest()
    assert src["size"] == [48, 72] and manifest["splits"] == {"test": 4, "train": 8}
    # The portrait photo a0003 was rotated into the landscape store.
    rotated = {ph["name"]: ph["sources"][0]["fit"]["rotated"] for ph in manifest["photos"]}
    assert rotated["a0003"] is True and rotated["a0001"] is False


def test_official_layout_converts_prophoto_experts(tmp_path):
    pytest.importorskip("rawpy")
    root = make_fake_fivek(tmp_path / "src", "official", ids=["a0001", "a4501"], experts="AC")
    out = prepare_fivek(root, "official", tmp_path / "store", size=48, progress=False)
    ds = load_store(out)
    assert [u.name for u in ds.users] == ["expertA", "expertC"]
    assert [(p.name, p.split) for p in ds.photos] == [("a0001", "train"), ("a4501", "test")]
    tif = sorted((root / "img" / "tiff16_c").glob("a4501*.tif"))[0]
    import tifffile

    expected = np.round(prophoto_to_srgb(tifffile.imread(tif)) * 255).astype(np.uint8)  # 48x72 already
    assert np.abs(ds.target(1, 1).astype(int) - expected.astype(int)).max() <= 1
    man = json.loads((out / "manifest.json").read_text())
    assert man["photos"][0]["sources"][1]["colourspace"] == "prophoto"
    assert man["photos"][0]["sources"][1]["bits"] == 16


def test_official_layout_demosaics_real_dngs_with_rawpy(tmp_path):
    """The inputs are raw Bayer DNGs; rawpy (LibRaw) renders them with the camera white balance."""
    rawpy = pytest.importorskip("rawpy")
    root = make_fake_fivek(tmp_path / "src", "official", ids=["a0001", "a4501"], experts="C")
    dng = sorted((root / "img" / "dng").glob("a0001*.dng"))[0]
    with rawpy.imread(str(dng)) as raw:  # a real CFA raw file, not RGB data under a .dng name
        assert raw.raw_image.shape == (48, 72) and raw.color_desc == b"RGBG"
        assert raw.raw_pattern.tolist() == [[0, 1], [3, 2]]
    out = prepare_fivek(root, "official", tmp_path / "store", size=48, progress=False)
    ds = load_store(out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["photos"][0]["sources"][0]["bits"] == 16 and man["photos"][0]["sources"][0]["colourspace"] == "srgb"
    source = fake_photo(0, 48, 72)  # what make_fake_fivek mosaicked into a0001's DNG
    got = ds.input(0).astype(np.float64) / 255
    # The photo comes back up to LibRaw's auto-brightness. Red and blue are sampled on a quarter
    # of the pixels, so demosaicing the fake photo's hard-edged discs costs them some correlation
    # (measured 0.94 / 0.99 / 0.95; a smooth gradient gives 0.99999 on every channel).
    for c, floor in enumerate((0.9, 0.98, 0.9)):
        r = np.corrcoef(got[4:-4, 4:-4, c].ravel(), source[4:-4, 4:-4, c].ravel())[0, 1]
        assert r > floor, (c, r)
    ratio = got[4:-4, 4:-4].mean((0, 1)) / source[4:-4, 4:-4].mean((0, 1))
    assert ratio.max() / ratio.min() < 1.1, ratio  # camera white balance: no colour cast


def test_official_layout_without_rawpy_says_how(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_rawpy(name, *args, **kwargs):
        if name == "rawpy":
            raise ImportError("No module named 'rawpy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rawpy)
    root = make_fake_fivek(tmp_path / "src", "official", ids=["a0001"], experts="C")
    with pytest.raises(UsageError, match=r"piebench\[raw\]"):
        prepare_fivek(root, "official", tmp_path / "store", size=32, progress=False)
    assert not (tmp_path / "store").exists()


def test_splits():
    assert upe_split("a0001") == "train" and upe_split("a4500") == "train" and upe_split("a4501") == "test"
    assert upe_split("IMG_1") is None
    table = split_480p()
    assert sum(v == "train" for v in table.values()) == 4500
    assert sum(v == "test" for v in table.values()) == 498
    assert "a0160" not in table and "a2952" not in table
    assert fivek.photo_id("a0001-jmac_DSC1459") == "a0001"


def test_split_file_and_480p(tmp_path):
    root = make_fake_fivek(tmp_path / "src", "folder", ids=["a0001", "a0160", "a4195"], portrait=())
    out = prepare_fivek(root, "folder", tmp_path / "s480", size=16, split="480p", progress=False)
    meta = json.loads((out / "store.json").read_text())
    assert [(p["name"], p["split"]) for p in meta["photos"]] == [("a0001", "train"), ("a4195", "test")]
    assert meta["info"]["left_out_by_split"] == 1  # a0160 is in neither 480p list
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a4195"], "test": ["a0001"]}))
    out2 = prepare_fivek(root, "folder", tmp_path / "sfile", size=16, split=str(split), progress=False)
    meta2 = json.loads((out2 / "store.json").read_text())
    assert [(p["name"], p["split"]) for p in meta2["photos"]] == [("a0001", "test"), ("a4195", "train")]


def test_resume_after_kill_gives_identical_store(tmp_path, monkeypatch):
    root = make_fake_fivek(tmp_path / "src", "adaint")
    clean = prepare_fivek(root, "adaint", tmp_path / "clean", size=24, progress=False)
    real, calls = prepared._prepare_photo, []

    def dies_at_five(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(prepared, "_prepare_photo", dies_at_five)
    with pytest.raises(KeyboardInterrupt):
        prepare_fivek(root, "adaint", tmp_path / "store", size=24, progress=False)
    assert not (tmp_path / "store").exists() and (tmp_path / "store.partial" / "progress.jsonl").exists()
    monkeypatch.setattr(prepared, "_prepare_photo", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    calls.clear()
    out = prepare_fivek(root, "adaint", tmp_path / "store", size=24, progress=False)
    assert len(calls) == 8  # the 4 done before the kill were not redone
    assert (out / "versions.u8").read_bytes() == (clean / "versions.u8").read_bytes()
    assert not (tmp_path / "store.partial").exists()
    with pytest.raises(UsageError, match="other options"):
        prepare_fivek(root, "adaint", tmp_path / "store", size=32, progress=False)


def test_skip_bad_lists_the_file_and_nothing_half_written(tmp_path):
    root = make_fake_fivek(tmp_path / "src", "starenhancer")
    bad = root / "data" / "train" / "03-Experts-C" / "a0004.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(UsageError, match=r"a0004\.jpg.*--skip-bad"):
        prepare_fivek(root, "starenhancer", tmp_path / "store", size=16, progress=False)
    assert not (tmp_path / "store").exists()
    out = prepare_fivek(root, "starenhancer", tmp_path / "store", size=16, skip_bad=True, progress=False)
    man = json.loads((out / "manifest.json").read_text())
    assert [s["name"] for s in man["skipped"]] == ["a0004"] and "a0004.jpg" in man["skipped"][0]["reason"]
    ds = load_store(out)
    assert len(ds.photos) == 11 and "a0004" not in [p.name for p in ds.photos]
    assert (out / "versions.u8").stat().st_size == 11 * 6 * 16 * 24 * 3


@pytest.mark.parametrize("damage, pattern", [
    ("missing", r"missing the file of user 'expertB'"),
    ("size", r"does not match the input"),
    ("gray", r"grayscale"),
    ("cmyk", r"CMYK"),
])
def test_bad_input_names_the_file(tmp_path, damage, pattern):
    from PIL import Image

    root = make_fake_fivek(tmp_path / "src", "adaint", ids=["a0001", "a4501"], experts="ABC")
    target = root / "FiveK" / "expertB" / "JPG" / "480p" / "a4501.jpg"
    if damage == "missing":
        target.unlink()
    elif damage == "size":
        Image.new("RGB", (40, 40)).save(target)
    elif damage == "gray":
        Image.new("L", (72, 48)).save(target)
    else:
        Image.new("CMYK", (72, 48)).save(target)
    with pytest.raises(UsageError, match=pattern) as err:
        prepare_fivek(root, "adaint", tmp_path / "store", size=16, progress=False)
    assert "a4501" in str(err.value) and "\n" not in str(err.value)


def test_empty_and_wrong_roots(tmp_path):
    (tmp_path / "empty").mkdir()
    for layout in ("official", "starenhancer", "adaint", "msm", "folder"):
        with pytest.raises(UsageError, match="check --root|no .*folder|input"):
            prepare_fivek(tmp_path / "empty", layout, tmp_path / "store", size=16, progress=False)
    with pytest.raises(UsageError, match="unknown --layout"):
        prepare_fivek(tmp_path / "empty", "lightroom", tmp_path / "store", progress=False)
    with pytest.raises(UsageError, match="--size"):
        prepare_fivek(tmp_path / "empty", "adaint", tmp_path / "store", size="big", progress=False)


def test_dataset_plugin_holds_out_and_resizes(tmp_path):
    from piebench_plugins.datasets.fivek import build_fivek

    from piebench.interfaces import BuildContext

    root = make_fake_fivek(tmp_path / "src", "folder")
    out = prepare_fivek(root, "folder", tmp_path / "store", size=32, progress=False)
    plain = build_fivek(BuildContext(), root=str(out))
    assert isinstance(plain.versions, np.ndarray) and plain.num_seen == 5
    ds = build_fivek(BuildContext(), root=str(out), unseen_users=["C"], resolution=16, crops_per_scene=3)
    assert [u.name for u in ds.users] == ["expertA", "expertB", "expertD", "expertE", "expertC"]
    assert [u.seen for u in ds.users] == [True] * 4 + [False] and ds.resolution == (16, 24)
    # expertC's retouch moved to the last slot, downsized from the store.
    big = plain.target(2, 0).astype(np.float32).reshape(16, 2, 24, 2, 3).mean((1, 3))
    assert np.abs(ds.target(4, 0).astype(np.float32) - big).mean() < 2.0
    curve = build_fivek(BuildContext(), root=str(out), unseen_users=["C"], seen_users=2)
    assert [u.name for u in curve.users] == ["expertA", "expertB", "expertC"] and curve.num_seen == 2
    with pytest.raises(UsageError, match="no user 'F'"):
        build_fivek(BuildContext(), root=str(out), unseen_users=["F"])
    with pytest.raises(UsageError, match="not a prepared piebench store"):
        build_fivek(BuildContext(), root=str(tmp_path))


def test_protocols_and_split_guard(tmp_path):
    from piebench_plugins.datasets.fivek import build_fivek

    from piebench.config import resolve
    from piebench.data.fivek import default_store
    from piebench.interfaces import BuildContext

    for name in ("fivek-upe", "fivek-480p", "fivek-c", "fivek-loeo"):
        cfg = resolve(name, encoder="angular", enhancer="sa")
        assert cfg["eval"]["dataset"] == "fivek" and cfg["eval"]["data"]["root"].startswith("fivek-")
    assert resolve("fivek-loeo", encoder="angular", enhancer="sa")["eval"]["data"]["unseen_users"] == ["A"]
    assert default_store("x", "starenhancer", "480", None) == "fivek-upe-480"
    assert default_store("x", "adaint", "480", None) == "fivek-480p-480"
    root = make_fake_fivek(tmp_path / "src", "starenhancer")
    out = prepare_fivek(root, "starenhancer", tmp_path / "store", size=16, progress=False)
    assert json.loads((out / "store.json").read_text())["info"]["split"] == "upe"  # StarEnhancer's = UPE
    assert build_fivek(BuildContext(), root=str(out), split="upe").num_users == 5
    with pytest.raises(UsageError, match="needs a FiveK store with the 480p split"):
        build_fivek(BuildContext(), root=str(out), split="480p")


def test_full_size_store_keeps_each_photo_and_needs_a_resolution(tmp_path):
    root = make_fake_fivek(tmp_path / "src", "adaint", ids=["a0001", "a0003", "a4501"], experts="AC")
    out = prepare_fivek(root, "adaint", tmp_path / "full", size="full", progress=False)
    assert prepared.full_photo(out, 1).shape == (3, 72, 48, 3)  # a0003 is portrait: kept as it is
    assert prepared.full_photo(out, 0).shape == (3, 48, 72, 3)
    with pytest.raises(UsageError, match="full-resolution store"):
        load_store(out)
    ds = load_store(out, size=(16, 24))
    assert ds.versions.shape == (3, 3, 16, 24, 3)
