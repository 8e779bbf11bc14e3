"""A photographer's own files: read as a viewer shows them, written back at full fidelity, never harmed.

Every file here is real and written by the test: EXIF-rotated JPEG/PNG, Adobe RGB and Display P3
tagged PNG/JPEG (profiles built from colour-science's primaries, see ``photo_files``), 16-bit PNG
and TIFF, float TIFF, RGBA PNG, corrupt and zero-byte files, same-stem inputs. Pixel values are
compared with independent references (``ImageOps.exif_transpose``, ``ImageCms.profileToProfile``).
``enhance`` runs the released-weights path with a 3D-LUT model whose weights make it the identity
(LUT 0 = identity, mixing weights [1, 0, 0]), so every output pixel is known. Datasets, ``data
synth`` and ``data prepare`` are in test_photo_datasets.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
import torch
from click.testing import CliRunner
from photo_files import (
    cms,
    digest,
    exit_code,
    gradient,
    icc_profile,
    png16,
    u8,
    u16,
    with_orientation,
)
from PIL import Image, ImageOps

from piebench.cli import cli
from piebench.data.images import read_image, to_srgb
from piebench.errors import RunFailed, UsageError


# -- the reader -----------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_exif_transpose(tmp_path, orientation):
    upright = Image.fromarray(u8(gradient(12, 20, orientation)))
    stored, exif = with_orientation(upright, orientation)
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
    Image.fromarray(u8(gradient(16, 24))).save(path, icc_profile=icc, **({"quality": 95} if ext == "jpg" else {}))
    decoded = np.asarray(Image.open(path).convert("RGB"))
    expected = cms(decoded, icc)
    got = read_image(path)
    assert got.colourspace == "srgb" and got.icc == icc
    assert np.array_equal(got.pixels, expected)
    assert np.abs(decoded.astype(int) - expected).max() > 20  # the profile matters on these colours


def test_16bit_png_and_tiff_keep_every_level(tmp_path):
    arr = u16(gradient(10, 14))
    arr[0, 0] = [1, 2, 65534]  # values no 8-bit path keeps
    png16(tmp_path / "a.png", arr)
    tifffile.imwrite(tmp_path / "b.tif", arr, photometric="rgb")
    for name in ("a.png", "b.tif"):
        got = read_image(tmp_path / name)
        assert got.bits == 16 and got.pixels.dtype == np.uint16 and np.array_equal(got.pixels, arr), name


def test_16bit_p3_png_is_converted_at_16_bit_precision(tmp_path):
    icc = icc_profile("p3")
    arr8 = u8(gradient(10, 14, 3))
    png16(tmp_path / "p3.png", arr8.astype(np.uint16) * 257, icc)
    got = read_image(tmp_path / "p3.png")
    assert got.bits == 16 and got.pixels.dtype == np.float32
    # the same pixels at 8 bits through ImageCms: within ImageCms's own 8-bit rounding
    assert np.abs(got.pixels * 255 - cms(arr8, icc)).max() <= 0.75


def test_float_tiff_and_rgba_alpha_are_kept(tmp_path):
    f = gradient(9, 11).astype(np.float32) * np.float32(0.9)
    tifffile.imwrite(tmp_path / "f.tif", f, photometric="rgb")
    got = read_image(tmp_path / "f.tif")
    assert got.bits == 32 and got.pixels.dtype == np.float32 and np.array_equal(got.pixels, f)
    rgba = np.concatenate([u8(gradient(9, 11)), u8(gradient(9, 11, 5))[..., :1]], axis=-1)
    rgba[..., 3][:, :4] = 0  # fully transparent pixels keep their hidden colour
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = read_image(tmp_path / "a.png")
    assert np.array_equal(got.pixels, rgba[..., :3]) and np.array_equal(got.alpha, rgba[..., 3])


def test_a_profile_that_cannot_be_converted_is_one_warning_naming_the_file(tmp_path, capfd):
    arr = u8(gradient(8, 8))
    bad = bytearray(icc_profile("adobe"))
    bad[16:20] = b"CMYK"  # an RGB photo tagged with a CMYK-space profile: littleCMS refuses it
    Image.fromarray(arr).save(tmp_path / "odd.png", icc_profile=bytes(bad))
    got = read_image(tmp_path / "odd.png")
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "odd.png" in err[0] and "cannot be converted" in err[0] and "warning" in err[0]
    assert np.array_equal(got.pixels, arr)
    from piebench.enhancing import enhance_photos

    enhance_photos([tmp_path / "odd.png"], tmp_path / "out", lambda rgb, name: rgb, title="t", echo=lambda s: None)
    assert capfd.readouterr().err.strip().splitlines() == err  # enhance reads it twice, warns once


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


def _enhance(weights, *args):
    res = CliRunner().invoke(cli, ["enhance", "--enhancer", "lut3d", "--weights", str(weights), *map(str, args)],
                             catch_exceptions=True)
    return res


def _photo_folder(root):
    root.mkdir()
    up = Image.fromarray(u8(gradient(12, 20, 1)))
    stored, exif = with_orientation(up, 6)
    stored.save(root / "portrait.jpg", exif=exif, quality=95)
    Image.fromarray(u8(gradient(10, 16, 2))).save(root / "p3.png", icc_profile=icc_profile("p3"))
    Image.fromarray(u8(gradient(10, 16, 3))).save(root / "adobe.jpg", icc_profile=icc_profile("adobe"), quality=95)
    png16(root / "deep.png", u16(gradient(8, 12, 4)))
    tifffile.imwrite(root / "deep.tif", u16(gradient(8, 12, 5)), photometric="rgb")
    tifffile.imwrite(root / "float.tif", gradient(8, 12, 6).astype(np.float32), photometric="rgb")
    rgba = np.concatenate([u8(gradient(8, 12, 7)), u8(gradient(8, 12, 8))[..., :1]], axis=-1)
    Image.fromarray(rgba, "RGBA").save(root / "cutout.png")
    Image.fromarray(u8(gradient(8, 12, 9))).save(root / "a.jpg", quality=95)
    Image.fromarray(u8(gradient(8, 12, 10))).save(root / "a.png")
    return root


def test_enhance_writes_every_photo_back_like_its_source(tmp_path, identity_weights):
    src = _photo_folder(tmp_path / "mine")
    before = digest(src)
    out = tmp_path / "out"
    res = _enhance(identity_weights[0], "--input", src, "--out", out)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert digest(src) == before  # the originals are untouched

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
    ref = cms(np.asarray(Image.open(src / "p3.png")), icc_profile("p3"))
    assert np.abs(np.asarray(p3).astype(int) - ref).max() <= 1
    # 16-bit in, 16-bit out; float in, float out
    assert np.array_equal(read_image(out / "deep.png").pixels, u16(gradient(8, 12, 4)))
    assert tifffile.imread(out / "deep.tif").dtype == np.uint16
    assert np.array_equal(tifffile.imread(out / "deep.tif"), u16(gradient(8, 12, 5)))
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
    png16(src / "deep.png", u16(gradient(8, 12, 4)))
    res = _enhance(identity_weights[0], "--input", src, "--out", tmp_path / "o", "--format", "tiff")
    assert res.exit_code == 0, res.output
    assert np.array_equal(tifffile.imread(tmp_path / "o" / "deep.tif"), u16(gradient(8, 12, 4)))


@pytest.mark.parametrize("where", ["same folder", "photo's folder", "inside the input folder", "around the input"])
def test_enhance_never_writes_where_it_reads(tmp_path, identity_weights, where):
    src = tmp_path / "mine"
    src.mkdir()
    Image.fromarray(u8(gradient(8, 8))).save(src / "a.png")
    before = digest(tmp_path)
    inp, out = {"same folder": (src, src), "photo's folder": (src / "a.png", src),
                "inside the input folder": (src, src / "enhanced"), "around the input": (src, tmp_path)}[where]
    res = _enhance(identity_weights[0], "--input", inp, "--out", out)
    assert exit_code(res) == 2 and "never writes where it reads" in str(res.exception)
    assert digest(tmp_path) == before and sorted(p.name for p in src.iterdir()) == ["a.png"]


def test_enhance_refuses_to_replace_files_without_overwrite(tmp_path, identity_weights):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(u8(gradient(8, 8))).save(src / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"my own photo")
    (out / "index.html").write_text("my own page")
    before = digest(out)
    res = _enhance(identity_weights[0], "--input", src, "--out", out)
    assert exit_code(res) == 2 and "--overwrite" in str(res.exception) and digest(out) == before
    res = CliRunner().invoke(cli, ["enhance", "--enhancer", "lut3d", "--weights", str(identity_weights[0]),
                                   "--input", str(src), "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "replaced 2 existing file(s)" in res.stderr and str(out / "a.png") in res.stderr
    assert Image.open(out / "a.png").size == (8, 8)


def test_a_bad_photo_stops_enhance_before_anything_is_written(tmp_path, identity_weights):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(u8(gradient(8, 8, i))).save(src / f"{i}.png")
    (src / "y_empty.jpg").write_bytes(b"")
    (src / "z_cut.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    before = digest(src)
    out = tmp_path / "out"
    res = _enhance(identity_weights[0], "--input", src, "--out", out)
    assert exit_code(res) == 2 and "y_empty.jpg" in str(res.exception) and "--skip-bad" in str(res.exception)
    assert not out.exists() and digest(src) == before
    res = _enhance(identity_weights[0], "--input", src, "--out", out, "--skip-bad")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2 and "y_empty.jpg" in warnings[0] and "z_cut.jpg" in warnings[1]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["0.png", "1.png", "2.png", "index.html"]


def test_nan_weights_are_an_error_and_nothing_is_written(tmp_path, identity_weights):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(u8(gradient(8, 8))).save(src / "a.png")
    res = _enhance(identity_weights[1], "--input", src, "--out", tmp_path / "out")
    assert exit_code(res) == 1 and isinstance(res.exception, RunFailed)
    assert "NaN" in str(res.exception) and not (tmp_path / "out").exists()


def test_a_non_finite_output_writes_nothing_for_that_photo(tmp_path):
    from piebench.enhancing import enhance_photos

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(u8(gradient(8, 8))).save(src / "a.png")
    Image.fromarray(u8(gradient(8, 8, 1))).save(src / "b.png")

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
    stored, exif = with_orientation(Image.fromarray(u8(gradient(16, 24, 2))), 8)
    stored.save(refs / "r0.png", exif=exif)
    Image.fromarray(u8(gradient(16, 24, 3))).save(refs / "r1.png", icc_profile=icc_profile("adobe"))
    got = read_refs(refs, (16, 24), pairs=False).targets[0].permute(0, 2, 3, 1).numpy()
    want0 = fit(np.asarray(ImageOps.exif_transpose(Image.open(refs / "r0.png"))), 16, 24)[0]
    want1 = cms(np.asarray(Image.open(refs / "r1.png")), icc_profile("adobe"))
    assert np.array_equal(u8(got[0]), want0) and np.array_equal(u8(got[1]), want1)


def test_to_srgb_of_a_converted_photo_is_what_was_written(tmp_path):
    """The reader's float output feeds the writer unchanged: a P3 photo written back is the sRGB view."""
    from piebench.data.write import encode_photo

    Image.fromarray(u8(gradient(8, 8))).save(tmp_path / "p3.png", icc_profile=icc_profile("p3"))
    image = read_image(tmp_path / "p3.png")
    data = encode_photo(to_srgb(image), image, "PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), image.pixels)


def test_format_that_maps_two_inputs_to_one_name_is_refused(tmp_path, identity_weights):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(u8(gradient(8, 8))).save(src / "a.png")
    Image.fromarray(u8(gradient(8, 8, 1))).save(src / "a.jpg", quality=95)
    res = _enhance(identity_weights[0], "--input", src, "--out", tmp_path / "o", "--format", "png")
    assert exit_code(res) == 2 and "two outputs would be written to" in str(res.exception)
    assert not (tmp_path / "o").exists()


def test_an_output_that_resolves_to_the_input_through_a_symlink_or_dots_is_refused(tmp_path, identity_weights):
    src = tmp_path / "mine"
    src.mkdir()
    Image.fromarray(u8(gradient(8, 8))).save(src / "a.png")
    (tmp_path / "link").symlink_to(src)
    before = digest(src)
    for out in (tmp_path / "link", tmp_path / "other" / ".." / "mine" / "sub"):
        res = _enhance(identity_weights[0], "--input", src, "--out", out)
        assert exit_code(res) == 2 and "never writes where it reads" in str(res.exception), out
    assert digest(src) == before and sorted(p.name for p in src.iterdir()) == ["a.png"]
