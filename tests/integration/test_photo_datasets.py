"""A photographer's own files in datasets: folder datasets, ``data synth`` and ``data prepare``.

Files are real and written by the test (see ``photo_files``): EXIF-rotated exports, Display P3
and Adobe RGB tagged photos, presets with non-finite values; the user's files are hashed before
and after.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from click.testing import CliRunner
from photo_files import digest, exit_code, gradient, icc_profile, u8, with_orientation
from PIL import Image, ImageCms, ImageOps

from piebench.cli import cli
from piebench.errors import UsageError


def test_folder_dataset_pairs_a_tagged_input_with_its_upright_edit(tmp_path):
    """A Lightroom-style export: the camera JPEG stored sideways with orientation 6, the edit upright."""
    from piebench.data.folder import build_folder

    root = tmp_path / "ds"
    for d in ("input", "ann"):
        (root / d).mkdir(parents=True)
    for i in range(3):
        up = Image.fromarray(u8(gradient(20, 30, i)))
        stored, exif = with_orientation(up, 6)
        stored.save(root / "input" / f"p{i}.png", exif=exif)
        up.save(root / "ann" / f"p{i}.png")
    ds = build_folder(root, resolution=16, test_fraction=0.0)
    v = np.asarray(ds.versions)
    assert np.array_equal(v[0], v[1])  # input and edit are the same upright photo


def test_data_synth_reads_photos_as_shown_and_never_touches_them(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "warm.xmp").write_text(_XMP.format(extra='crs:Exposure2012="+0.30"'))
    photos = tmp_path / "photos"
    photos.mkdir()
    stored, exif = with_orientation(Image.fromarray(u8(gradient(10, 16))), 6)
    stored.save(photos / "a.jpg", exif=exif, quality=95)
    out = tmp_path / "ds"
    res = CliRunner().invoke(cli, ["data", "synth", "--presets", str(presets), "--photos", str(photos),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    shown = np.asarray(ImageOps.exif_transpose(Image.open(photos / "a.jpg")))
    assert np.array_equal(np.asarray(Image.open(out / "input" / "a.png")), shown)


_XMP = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/" {extra}/></rdf:RDF></x:xmpmeta>"""


def _synth_inputs(tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "warm.xmp").write_text(_XMP.format(extra='crs:Exposure2012="+0.30"'))
    (presets / "cool.xmp").write_text(_XMP.format(extra='crs:Exposure2012="-0.30"'))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(u8(gradient(8, 10, i))).save(photos / f"p{i}.jpg", quality=95)
    return presets, photos


def _synth(presets, photos, out, *extra):
    return CliRunner().invoke(cli, ["data", "synth", "--presets", str(presets), "--photos", str(photos),
                                    "--out", str(out), *extra])


def test_data_synth_refuses_an_output_holding_its_photos(tmp_path):
    presets, _ = _synth_inputs(tmp_path)
    out = tmp_path / "ds"
    (out / "input").mkdir(parents=True)
    Image.fromarray(u8(gradient(8, 10))).save(out / "input" / "mine.jpg", quality=95)
    before = digest(tmp_path)
    res = _synth(presets, out / "input", out)
    assert exit_code(res) == 2 and "never writes where it reads" in str(res.exception)
    assert digest(tmp_path) == before


def test_data_synth_names_a_non_finite_preset_and_writes_nothing(tmp_path):
    presets, photos = _synth_inputs(tmp_path)
    (presets / "zz_broken.xmp").write_text(_XMP.format(extra='crs:Contrast2012="nan"'))
    res = _synth(presets, photos, tmp_path / "ds")
    assert exit_code(res) == 2 and "zz_broken.xmp" in str(res.exception) and "finite" in str(res.exception)
    assert not (tmp_path / "ds").exists()


def test_data_synth_again_replaces_the_old_dataset_only_with_overwrite(tmp_path):
    presets, photos = _synth_inputs(tmp_path)
    out = tmp_path / "ds"
    assert _synth(presets, photos, out).exit_code == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["cool", "input", "warm"]
    (presets / "cool.xmp").unlink()
    before = digest(out)
    res = _synth(presets, photos, out)
    assert exit_code(res) == 2 and "--overwrite" in str(res.exception) and digest(out) == before
    res = _synth(presets, photos, out, "--overwrite")
    assert res.exit_code == 0 and "replaced" in res.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["input", "warm"]  # no stale user
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds")]
    # a folder that is not a synth output is never replaced, even with --overwrite
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    res = _synth(presets, photos, other, "--overwrite")
    assert exit_code(res) == 2 and (other / "notes.txt").read_text() == "keep"


def test_a_run_refused_for_its_data_leaves_no_run_directory(tmp_path):
    """bob has one photo: enough for the folder's reference check, too few for a training sample."""
    import json

    root = tmp_path / "ds"
    for d in ("input", "ann", "bob"):
        (root / d).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(u8(gradient(16, 16, i))).save(root / "input" / f"p{i}.png")
        Image.fromarray(u8(gradient(16, 16, i) * 0.8)).save(root / "ann" / f"p{i}.png")
    Image.fromarray(u8(gradient(16, 16, 0) * 0.6)).save(root / "bob" / "p0.png")
    (root / "split.json").write_text(json.dumps({"train": ["p0", "p1", "p2"], "test": ["p3"]}))
    runs = tmp_path / "runs"
    res = CliRunner().invoke(cli, ["run", "--encoder", "angular", "--enhancer", "identity", "--dataset",
                                   f"folder:{root}", "--runs-dir", str(runs), "--steps", "2", "--quiet",
                                   "--set", "eval.refs=1", "--set", "train.refs=1",
                                   "--set", "eval.data.resolution=16"])
    assert exit_code(res) == 2 and "bob" in str(res.exception) and "too few photos" in str(res.exception)
    assert not list(runs.rglob("record.json")) and not list(runs.rglob("config.json"))


def test_data_prepare_never_writes_its_store_inside_the_dataset(tmp_path, monkeypatch):
    root = tmp_path / "fivek"
    (root / "input").mkdir(parents=True)
    Image.fromarray(u8(gradient(8, 12))).save(root / "input" / "a0001.png")
    before = digest(root)
    res = CliRunner().invoke(cli, ["data", "prepare", "fivek", "--root", str(root), "--layout", "folder",
                                   "--out", str(root / "store")])
    assert exit_code(res) == 2 and "never writes where it reads" in str(res.exception)
    monkeypatch.chdir(root)  # the default store ./fivek-... would land inside the dataset too
    res = CliRunner().invoke(cli, ["data", "prepare", "fivek", "--root", str(root), "--layout", "folder"])
    assert exit_code(res) == 2 and "never writes where it reads" in str(res.exception)
    assert digest(root) == before


def test_a_bad_photo_in_a_folder_dataset_names_it_without_advising_a_flag_run_lacks(tmp_path):
    from piebench.data.folder import build_folder

    root = tmp_path / "ds"
    for d in ("input", "ann"):
        (root / d).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(u8(gradient(20, 30, i))).save(root / "input" / f"p{i}.png")
        Image.fromarray(u8(gradient(30, 20, i))).save(root / "ann" / f"p{i}.png")  # cropped / rotated edit
    with pytest.raises(UsageError, match="does not match the input") as err:
        build_folder(root, resolution=16, test_fraction=0.0)
    assert "--skip-bad" not in str(err.value) and "fix or remove" in str(err.value)


def test_folder_dataset_compares_a_p3_input_with_an_adobe_rgb_edit_in_srgb(tmp_path):
    """The same colours, stored once in Display P3 and once in Adobe RGB: equal once both are sRGB."""
    from piebench.data.folder import build_folder

    root = tmp_path / "ds"
    for d in ("input", "ann"):
        (root / d).mkdir(parents=True)
    p3, adobe = icc_profile("p3"), icc_profile("adobe")
    to_adobe = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(p3)),
                                       ImageCms.ImageCmsProfile(io.BytesIO(adobe)), "RGB", "RGB")
    raw_gap = 0
    for i in range(3):
        x = Image.fromarray(u8(gradient(16, 16, i) * 0.8 + 0.1))
        x.save(root / "input" / f"p{i}.png", icc_profile=p3)
        y = ImageCms.applyTransform(x, to_adobe)
        y.save(root / "ann" / f"p{i}.png", icc_profile=adobe)
        raw_gap = max(raw_gap, int(np.abs(np.asarray(x).astype(int) - np.asarray(y)).max()))
    v = np.asarray(build_folder(root, resolution=16, test_fraction=0.0).versions).astype(int)
    assert raw_gap > 10  # as stored, the two files disagree
    assert np.abs(v[0] - v[1]).max() <= 3  # as shown, they agree (two 8-bit roundings apart)
