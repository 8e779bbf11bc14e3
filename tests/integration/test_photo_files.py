"""A photographer's own files: read as a viewer shows them, written back at full fidelity, never harmed.

Every file here is real and written by the test: EXIF-rotated JPEG/PNG, Adobe RGB and Display P3
tagged PNG/JPEG (profiles built from colour-science's primaries, see ``photo_files``), 16-bit PNG
and TIFF, float TIFF, RGBA PNG, corrupt and zero-byte files, same-stem inputs. Pixel values are
compared with independent references (``ImageOps.exif_transpose``, ``ImageCms.profileToProfile``).
``enhance`` runs the released-weights path with a 3D-LUT model whose weights make it the identity
(LUT 0 = identity, mixing weights [1, 0, 0]), so every output pixel is known.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import tifffile
import torch
from click.testing import CliRunner
from photo_files import gradient, icc_profile
from PIL import Image, ImageCms, ImageOps

from piebench.cli import cli
from piebench.data.images import read_image, to_srgb
from piebench.errors import RunFailed, UsageError

SRGB = ImageCms.createProfile("sRGB")


def _u8(a):
    return np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)


def _u16(a):
    return np.clip(np.rint(a * 65535), 0, 65535).astype(np.uint16)


def _cms(arr8: np.ndarray, profile: bytes) -> np.ndarray:
    """The independent reference: littleCMS through ImageCms, on 8-bit pixels."""
    im = ImageCms.profileToProfile(Image.fromarray(arr8), ImageCms.ImageCmsProfile(io.BytesIO(profile)), SRGB,
                                   renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB")
    return np.asarray(im)


def _png16(path, arr, profile=None):
    """A 16-bit PNG through the same chunk layout any editor writes (libpng via imagecodecs + iCCP)."""
    import zlib

    import imagecodecs

    from piebench.data.write import _png_chunk

    png = imagecodecs.png_encode(np.ascontiguousarray(arr))
    if profile:
        png = png[:33] + _png_chunk(b"iCCP", b"P3\x00\x00" + zlib.compress(profile)) + png[33:]
    path.write_bytes(png)


def _with_orientation(upright: Image.Image, orientation: int) -> tuple[Image.Image, bytes]:
    """A stored image and EXIF such that a viewer shows ``upright``."""
    inverse = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}[orientation]
    stored = upright.transpose(inverse) if inverse is not None else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make: must survive the round trip
    return stored, exif.tobytes()


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- the reader -----------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_exif_transpose(tmp_path, orientation):
    upright = Image.fromarray(_u8(gradient(12, 20, orientation)))
    stored, exif = _with_orientation(upright, orientation)
    for ext in ("png", "jpg"):
        path = tmp_path / f"p.{ext}"
        stored.save(path, exif=exif, **({"quality": 95} if ext == "jpg" else {}))
        expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
        got = read_image(path)
        assert got.pixels.shape == (12, 20, 3) == expected.shape
        assert np.array_equal(got.pixels, expected), (ext, orientation)


@pytest.mark.parametrize("profile", ["adobe", "p3"])
@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_icc_tagged_photos_are_converted_to_srgb_like_imagecms(tmp_path, profile, ext):
    icc = icc_profile(profile)
    path = tmp_path / f"p.{ext}"
    Image.fromarray(_u8(gradient(16, 24))).save(path, icc_profile=icc, **({"quality": 95} if ext == "jpg" else {}))
    decoded = np.asarray(Image.open(path).convert("RGB"))
    expected = _cms(decoded, icc)
    got = read_image(path)
    assert got.colourspace == "srgb" and got.icc == icc
    assert np.array_equal(got.pixels, expected)
    assert np.abs(decoded.astype(int) - expected).max() > 20  # the profile matters on these colours


def test_16bit_png_and_tiff_keep_every_level(tmp_path):
    arr = _u16(gradient(10, 14))
    arr[0, 0] = [1, 2, 65534]  # values no 8-bit path keeps
    _png16(tmp_path / "a.png", arr)
    tifffile.imwrite(tmp_path / "b.tif", arr, photometric="rgb")
    for name in ("a.png", "b.tif"):
        got = read_image(tmp_path / name)
        assert got.bits == 16 and got.pixels.dtype == np.uint16 and np.array_equal(got.pixels, arr), name


def test_16bit_p3_png_is_converted_at_16_bit_precision(tmp_path):
    icc = icc_profile("p3")
    arr8 = _u8(gradient(10, 14, 3))
    _png16(tmp_path / "p3.png", arr8.astype(np.uint16) * 257, icc)
    got = read_image(tmp_path / "p3.png")
    assert got.bits == 16 and got.pixels.dtype == np.float32
    # the same pixels at 8 bits through ImageCms: within ImageCms's own 8-bit rounding
    assert np.abs(got.pixels * 255 - _cms(arr8, icc)).max() <= 0.75


def test_float_tiff_and_rgba_alpha_are_kept(tmp_path):
    f = gradient(9, 11).astype(np.float32) * np.float32(0.9)
    tifffile.imwrite(tmp_path / "f.tif", f, photometric="rgb")
    got = read_image(tmp_path / "f.tif")
    assert got.bits == 32 and got.pixels.dtype == np.float32 and np.array_equal(got.pixels, f)
    rgba = np.concatenate([_u8(gradient(9, 11)), _u8(gradient(9, 11, 5))[..., :1]], axis=-1)
    rgba[..., 3][:, :4] = 0  # fully transparent pixels keep their hidden colour
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = read_image(tmp_path / "a.png")
    assert np.array_equal(got.pixels, rgba[..., :3]) and np.array_equal(got.alpha, rgba[..., 3])


def test_a_profile_that_cannot_be_converted_is_one_warning_naming_the_file(tmp_path, capfd):
    arr = _u8(gradient(8, 8))
    bad = bytearray(icc_profile("adobe"))
    bad[16:20] = b"CMYK"  # an RGB photo tagged with a CMYK-space profile: littleCMS refuses it
    Image.fromarray(arr).save(tmp_path / "odd.png", icc_profile=bytes(bad))
    got = read_image(tmp_path / "odd.png")
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "odd.png" in err[0] and "cannot be converted" in err[0] and "warning" in err[0]
    assert np.array_equal(got.pixels, arr)


@pytest.mark.parametrize("content, what", [(b"", "empty file"), (b"\x89PNG\r\n\x1a\nnot really", "not a readable"),
                                           (b"\xff\xd8\xff\xe0" + b"\0" * 40, "not a readable")])
def test_corrupt_and_empty_files_are_named(tmp_path, content, what):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=what) as err:
        read_image(path)
    assert str(path) in str(err.value)


# -- enhance: check first, then write at full fidelity ------------------------------------------------
@pytest.fixture(scope="module")
def identity_weights(tmp_path_factory):
    """Released-style lut3d weights that make the model the identity (so outputs are known)."""
    from piebench_plugins.enhancers.lut3d import BIN_NUMERATOR, identity_lut

    from piebench.interfaces import BuildContext
    from piebench.plugins import get_registry

    model = get_registry().get("enhancer", "lut3d").create(BuildContext(), "paper")
    last = model.classifier.model[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    folder = tmp_path_factory.mktemp("weights")
    torch.save(model.classifier.state_dict(), folder / "classifier.pth")
    luts = {"0": {"LUT": identity_lut(33) * BIN_NUMERATOR}}
    luts.update({str(k): {"LUT": torch.zeros(3, 33, 33, 33)} for k in (1, 2)})
    torch.save(luts, folder / "LUTs.pth")
    nan = tmp_path_factory.mktemp("nan-weights")
    torch.save(model.classifier.state_dict(), nan / "classifier.pth")
    bad = {k: {"LUT": v["LUT"].clone()} for k, v in luts.items()}
    bad["1"]["LUT"][0, 0, 0, 0] = float("nan")
    torch.save(bad, nan / "LUTs.pth")
    return folder, nan


def _code(res) -> int:
    """The exit code `piebench` gives (CliRunner reports a raised PiebenchError as 1)."""
    from piebench.errors import PiebenchError

    return res.exception.exit_code if isinstance(res.exception, PiebenchError) else res.exit_code


def _enhance(weights, *args):
    res = CliRunner().invoke(cli, ["enhance", "--enhancer", "lut3d", "--weights", str(weights), *map(str, args)],
                             catch_exceptions=True)
    return res


def _photo_folder(root):
    root.mkdir()
    up = Image.fromarray(_u8(gradient(12, 20, 1)))
    stored, exif = _with_orientation(up, 6)
    stored.save(root / "portrait.jpg", exif=exif, quality=95)
    Image.fromarray(_u8(gradient(10, 16, 2))).save(root / "p3.png", icc_profile=icc_profile("p3"))
    Image.fromarray(_u8(gradient(10, 16, 3))).save(root / "adobe.jpg", icc_profile=icc_profile("adobe"), quality=95)
    _png16(root / "deep.png", _u16(gradient(8, 12, 4)))
    tifffile.imwrite(root / "deep.tif", _u16(gradient(8, 12, 5)), photometric="rgb")
    tifffile.imwrite(root / "float.tif", gradient(8, 12, 6).astype(np.float32), photometric="rgb")
    rgba = np.concatenate([_u8(gradient(8, 12, 7)), _u8(gradient(8, 12, 8))[..., :1]], axis=-1)
    Image.fromarray(rgba, "RGBA").save(root / "cutout.png")
    Image.fromarray(_u8(gradient(8, 12, 9))).save(root / "a.jpg", quality=95)
    Image.fromarray(_u8(gradient(8, 12, 10))).save(root / "a.png")
    return root


def test_enhance_writes_every_photo_back_like_its_source(tmp_path, identity_weights):
    src = _photo_folder(tmp_path / "mine")
    before = _digest(src)
    out = tmp_path / "out"
    res = _enhance(identity_weights[0], "--input", src, "--out", out)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert _digest(src) == before  # the originals are untouched

    def is_srgb(icc: bytes) -> bool:  # littleCMS's sRGB: same description and same colorants (dates differ)
        from piebench.data.icc import description, matrix_trc, srgb_profile

        return (description(icc) == description(srgb_profile())
                and np.array_equal(matrix_trc(icc)[0], matrix_trc(srgb_profile())[0]))

    # EXIF-rotated JPEG: upright, EXIF kept with orientation 1, sRGB profile embedded
    pj = Image.open(out / "portrait.jpg")
    expected = np.asarray(ImageOps.exif_transpose(Image.open(src / "portrait.jpg")))
    assert pj.size == (20, 12) and pj.getexif()[0x0112] == 1 and pj.getexif()[0x010F] == "TestCam"
    assert is_srgb(pj.info["icc_profile"])
    assert np.abs(np.asarray(pj).astype(int) - expected).mean() < 3  # JPEG re-encoding only
    # Display P3 PNG: the littleCMS conversion, exactly (identity model, lossless PNG)
    p3 = Image.open(out / "p3.png")
    assert is_srgb(p3.info["icc_profile"])
    ref = _cms(np.asarray(Image.open(src / "p3.png")), icc_profile("p3"))
    assert np.abs(np.asarray(p3).astype(int) - ref).max() <= 1
    # 16-bit in, 16-bit out; float in, float out
    assert np.array_equal(read_image(out / "deep.png").pixels, _u16(gradient(8, 12, 4)))
    assert tifffile.imread(out / "deep.tif").dtype == np.uint16
    assert np.array_equal(tifffile.imread(out / "deep.tif"), _u16(gradient(8, 12, 5)))
    fl = tifffile.imread(out / "float.tif")
    assert fl.dtype == np.float32 and np.abs(fl - gradient(8, 12, 6)).max() < 1e-5
    # alpha restored unchanged
    cut = np.asarray(Image.open(out / "cutout.png"))
    assert cut.shape[-1] == 4 and np.array_equal(cut[..., 3], np.asarray(Image.open(src / "cutout.png"))[..., 3])
    # same-stem inputs: two outputs, two thumbnails each, from the decoded arrays
    html = (out / "index.html").read_text()
    for name in ("a.jpg", "a.png", "float.tif", "deep.png"):
        assert (out / name).is_file() and f"_thumbs/{name}.before.jpg" in html
        assert (out / "_thumbs" / f"{name}.after.jpg").is_file()
    thumb = np.asarray(Image.open(out / "_thumbs" / "portrait.jpg.before.jpg"))
    assert thumb.shape[:2] == (12, 20)  # upright, from the decoded array


def test_enhance_format_option_writes_16_bit_tiff_from_16_bit_png(tmp_path, identity_weights):
    src = tmp_path / "in"
    src.mkdir()
    _png16(src / "deep.png", _u16(gradient(8, 12, 4)))
    res = _enhance(identity_weights[0], "--input", src, "--out", tmp_path / "o", "--format", "tiff")
    assert res.exit_code == 0, res.output
    assert np.array_equal(tifffile.imread(tmp_path / "o" / "deep.tif"), _u16(gradient(8, 12, 4)))


@pytest.mark.parametrize("where", ["same folder", "photo's folder", "inside the input folder", "around the input"])
def test_enhance_never_writes_where_it_reads(tmp_path, identity_weights, where):
    src = tmp_path / "mine"
    src.mkdir()
    Image.fromarray(_u8(gradient(8, 8))).save(src / "a.png")
    before = _digest(tmp_path)
    inp, out = {"same folder": (src, src), "photo's folder": (src / "a.png", src),
                "inside the input folder": (src, src / "enhanced"), "around the input": (src, tmp_path)}[where]
    res = _enhance(identity_weights[0], "--input", inp, "--out", out)
    assert _code(res) == 2 and "never writes where it reads" in str(res.exception)
    assert _digest(tmp_path) == before and sorted(p.name for p in src.iterdir()) == ["a.png"]


def test_enhance_refuses_to_replace_files_without_overwrite(tmp_path, identity_weights):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_u8(gradient(8, 8))).save(src / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"my own photo")
    (out / "index.html").write_text("my own page")
    before = _digest(out)
    res = _enhance(identity_weights[0], "--input", src, "--out", out)
    assert _code(res) == 2 and "--overwrite" in str(res.exception) and _digest(out) == before
    res = CliRunner().invoke(cli, ["enhance", "--enhancer", "lut3d", "--weights", str(identity_weights[0]),
                                   "--input", str(src), "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "replaced 2 existing file(s)" in res.stderr and str(out / "a.png") in res.stderr
    assert Image.open(out / "a.png").size == (8, 8)


def test_a_bad_photo_stops_enhance_before_anything_is_written(tmp_path, identity_weights):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_u8(gradient(8, 8, i))).save(src / f"{i}.png")
    (src / "y_empty.jpg").write_bytes(b"")
    (src / "z_cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    before = _digest(src)
    out = tmp_path / "out"
    res = _enhance(identity_weights[0], "--input", src, "--out", out)
    assert _code(res) == 2 and "y_empty.jpg" in str(res.exception) and "--skip-bad" in str(res.exception)
    assert not out.exists() and _digest(src) == before
    res = _enhance(identity_weights[0], "--input", src, "--out", out, "--skip-bad")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2 and "y_empty.jpg" in warnings[0] and "z_cut.jpg" in warnings[1]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["0.png", "1.png", "2.png", "index.html"]


def test_nan_weights_are_an_error_and_nothing_is_written(tmp_path, identity_weights):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_u8(gradient(8, 8))).save(src / "a.png")
    res = _enhance(identity_weights[1], "--input", src, "--out", tmp_path / "out")
    assert _code(res) == 1 and isinstance(res.exception, RunFailed)
    assert "NaN" in str(res.exception) and not (tmp_path / "out").exists()


def test_a_non_finite_output_writes_nothing_for_that_photo(tmp_path):
    from piebench.enhancing import enhance_photos

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_u8(gradient(8, 8))).save(src / "a.png")
    Image.fromarray(_u8(gradient(8, 8, 1))).save(src / "b.png")

    def run(image, name):
        return image if name.endswith("a.png") else image * np.float32(np.nan)

    with pytest.raises(RunFailed, match="b.png: the model's output is not finite") as err:
        enhance_photos(sorted(src.iterdir()), tmp_path / "out", run, title="t", echo=lambda s: None)
    assert "1 photo(s) before it are kept" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file()) == ["a.png"]
    assert not any(".tmp" in p.name for p in (tmp_path / "out").rglob("*"))


def test_refs_are_read_upright_and_in_srgb(tmp_path):
    from piebench.data.images import fit
    from piebench.personalize import read_refs

    refs = tmp_path / "refs"
    refs.mkdir()
    stored, exif = _with_orientation(Image.fromarray(_u8(gradient(16, 24, 2))), 8)
    stored.save(refs / "r0.png", exif=exif)
    Image.fromarray(_u8(gradient(16, 24, 3))).save(refs / "r1.png", icc_profile=icc_profile("adobe"))
    got = read_refs(refs, (16, 24), pairs=False).targets[0].permute(0, 2, 3, 1).numpy()
    want0 = fit(np.asarray(ImageOps.exif_transpose(Image.open(refs / "r0.png"))), 16, 24)[0]
    want1 = _cms(np.asarray(Image.open(refs / "r1.png")), icc_profile("adobe"))
    assert np.array_equal(_u8(got[0]), want0) and np.array_equal(_u8(got[1]), want1)


# -- datasets ------------------------------------------------------------------------------------------
def test_folder_dataset_pairs_a_tagged_input_with_its_upright_edit(tmp_path):
    """A Lightroom-style export: the camera JPEG stored sideways with orientation 6, the edit upright."""
    from piebench.data.folder import build_folder

    root = tmp_path / "ds"
    for d in ("input", "ann"):
        (root / d).mkdir(parents=True)
    for i in range(3):
        up = Image.fromarray(_u8(gradient(20, 30, i)))
        stored, exif = _with_orientation(up, 6)
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
    stored, exif = _with_orientation(Image.fromarray(_u8(gradient(10, 16))), 6)
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
        Image.fromarray(_u8(gradient(8, 10, i))).save(photos / f"p{i}.jpg", quality=95)
    return presets, photos


def _synth(presets, photos, out, *extra):
    return CliRunner().invoke(cli, ["data", "synth", "--presets", str(presets), "--photos", str(photos),
                                    "--out", str(out), *extra])


def test_data_synth_refuses_an_output_holding_its_photos(tmp_path):
    presets, _ = _synth_inputs(tmp_path)
    out = tmp_path / "ds"
    (out / "input").mkdir(parents=True)
    Image.fromarray(_u8(gradient(8, 10))).save(out / "input" / "mine.jpg", quality=95)
    before = _digest(tmp_path)
    res = _synth(presets, out / "input", out)
    assert _code(res) == 2 and "never writes where it reads" in str(res.exception)
    assert _digest(tmp_path) == before


def test_data_synth_names_a_non_finite_preset_and_writes_nothing(tmp_path):
    presets, photos = _synth_inputs(tmp_path)
    (presets / "zz_broken.xmp").write_text(_XMP.format(extra='crs:Contrast2012="nan"'))
    res = _synth(presets, photos, tmp_path / "ds")
    assert _code(res) == 2 and "zz_broken.xmp" in str(res.exception) and "finite" in str(res.exception)
    assert not (tmp_path / "ds").exists()


def test_data_synth_again_replaces_the_old_dataset_only_with_overwrite(tmp_path):
    presets, photos = _synth_inputs(tmp_path)
    out = tmp_path / "ds"
    assert _synth(presets, photos, out).exit_code == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["cool", "input", "warm"]
    (presets / "cool.xmp").unlink()
    before = _digest(out)
    res = _synth(presets, photos, out)
    assert _code(res) == 2 and "--overwrite" in str(res.exception) and _digest(out) == before
    res = _synth(presets, photos, out, "--overwrite")
    assert res.exit_code == 0 and "replaced" in res.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["input", "warm"]  # no stale user
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds")]
    # a folder that is not a synth output is never replaced, even with --overwrite
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    res = _synth(presets, photos, other, "--overwrite")
    assert _code(res) == 2 and (other / "notes.txt").read_text() == "keep"


def test_to_srgb_of_a_converted_photo_is_what_was_written(tmp_path):
    """The reader's float output feeds the writer unchanged: a P3 photo written back is the sRGB view."""
    from piebench.data.write import encode_photo

    Image.fromarray(_u8(gradient(8, 8))).save(tmp_path / "p3.png", icc_profile=icc_profile("p3"))
    image = read_image(tmp_path / "p3.png")
    data = encode_photo(to_srgb(image), image, "PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), image.pixels)


def test_a_run_refused_for_its_data_leaves_no_run_directory(tmp_path):
    """bob has one photo: enough for the folder's reference check, too few for a training sample."""
    import json

    root = tmp_path / "ds"
    for d in ("input", "ann", "bob"):
        (root / d).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(_u8(gradient(16, 16, i))).save(root / "input" / f"p{i}.png")
        Image.fromarray(_u8(gradient(16, 16, i) * 0.8)).save(root / "ann" / f"p{i}.png")
    Image.fromarray(_u8(gradient(16, 16, 0) * 0.6)).save(root / "bob" / "p0.png")
    (root / "split.json").write_text(json.dumps({"train": ["p0", "p1", "p2"], "test": ["p3"]}))
    runs = tmp_path / "runs"
    res = CliRunner().invoke(cli, ["run", "--encoder", "angular", "--enhancer", "identity", "--dataset",
                                   f"folder:{root}", "--runs-dir", str(runs), "--steps", "2", "--quiet",
                                   "--set", "eval.refs=1", "--set", "train.refs=1",
                                   "--set", "eval.data.resolution=16"])
    assert _code(res) == 2 and "bob" in str(res.exception) and "too few photos" in str(res.exception)
    assert not list(runs.rglob("record.json")) and not list(runs.rglob("config.json"))


def test_data_prepare_never_writes_its_store_inside_the_dataset(tmp_path, monkeypatch):
    root = tmp_path / "fivek"
    (root / "input").mkdir(parents=True)
    Image.fromarray(_u8(gradient(8, 12))).save(root / "input" / "a0001.png")
    before = _digest(root)
    res = CliRunner().invoke(cli, ["data", "prepare", "fivek", "--root", str(root), "--layout", "folder",
                                   "--out", str(root / "store")])
    assert _code(res) == 2 and "never writes where it reads" in str(res.exception)
    monkeypatch.chdir(root)  # the default store ./fivek-... would land inside the dataset too
    res = CliRunner().invoke(cli, ["data", "prepare", "fivek", "--root", str(root), "--layout", "folder"])
    assert _code(res) == 2 and "never writes where it reads" in str(res.exception)
    assert _digest(root) == before


def test_format_that_maps_two_inputs_to_one_name_is_refused(tmp_path, identity_weights):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_u8(gradient(8, 8))).save(src / "a.png")
    Image.fromarray(_u8(gradient(8, 8, 1))).save(src / "a.jpg", quality=95)
    res = _enhance(identity_weights[0], "--input", src, "--out", tmp_path / "o", "--format", "png")
    assert _code(res) == 2 and "two outputs would be written to" in str(res.exception)
    assert not (tmp_path / "o").exists()


def test_a_bad_photo_in_a_folder_dataset_names_it_without_advising_a_flag_run_lacks(tmp_path):
    from piebench.data.folder import build_folder

    root = tmp_path / "ds"
    for d in ("input", "ann"):
        (root / d).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_u8(gradient(20, 30, i))).save(root / "input" / f"p{i}.png")
        Image.fromarray(_u8(gradient(30, 20, i))).save(root / "ann" / f"p{i}.png")  # cropped / rotated edit
    with pytest.raises(UsageError, match="does not match the input") as err:
        build_folder(root, resolution=16, test_fraction=0.0)
    assert "--skip-bad" not in str(err.value) and "fix or remove" in str(err.value)


def test_an_output_that_resolves_to_the_input_through_a_symlink_or_dots_is_refused(tmp_path, identity_weights):
    src = tmp_path / "mine"
    src.mkdir()
    Image.fromarray(_u8(gradient(8, 8))).save(src / "a.png")
    (tmp_path / "link").symlink_to(src)
    before = _digest(src)
    for out in (tmp_path / "link", tmp_path / "other" / ".." / "mine" / "sub"):
        res = _enhance(identity_weights[0], "--input", src, "--out", out)
        assert _code(res) == 2 and "never writes where it reads" in str(res.exception), out
    assert _digest(src) == before and sorted(p.name for p in src.iterdir()) == ["a.png"]


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
        x = Image.fromarray(_u8(gradient(16, 16, i) * 0.8 + 0.1))
        x.save(root / "input" / f"p{i}.png", icc_profile=p3)
        y = ImageCms.applyTransform(x, to_adobe)
        y.save(root / "ann" / f"p{i}.png", icc_profile=adobe)
        raw_gap = max(raw_gap, int(np.abs(np.asarray(x).astype(int) - np.asarray(y)).max()))
    v = np.asarray(build_folder(root, resolution=16, test_fraction=0.0).versions).astype(int)
    assert raw_gap > 10  # as stored, the two files disagree
    assert np.abs(v[0] - v[1]).max() <= 3  # as shown, they agree (two 8-bit roundings apart)
