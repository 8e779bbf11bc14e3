"""`piebench enhance`: a run's models on a person's photos at full resolution, and released weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from piebench.cli import cli
from piebench.data.fakefivek import _save, fake_photo
from piebench.errors import UsageError
from piebench.full_resolution import enhance_full
from piebench.interfaces import RefSet


def _folder(root, n=5):
    for i in range(n):
        img = fake_photo(i, 40, 40)
        _save(root / "input" / f"p{i}.png", img)
        _save(root / "ann" / f"p{i}.png", np.clip(img * 1.3, 0, 1))
        _save(root / "bob" / f"p{i}.png", np.clip(img * 0.7, 0, 1))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as `piebench run` leaves it: config.json + a checkpoint of both models."""
    import json

    from piebench.build import build_dataset, build_models
    from piebench.config import resolve
    from piebench.plugins import get_registry

    tmp = tmp_path_factory.mktemp("enh")
    data = _folder(tmp / "data")
    cfg = resolve("smoke", encoder="angular", enhancer="sa", dataset=f"folder:{data}",
                  sets=["eval.data.resolution=32", "eval.refs=2", "train.refs=2"])
    registry = get_registry()
    torch.manual_seed(0)
    encoder, enhancer = build_models(cfg, registry, build_dataset(cfg, registry))
    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(cfg))
    torch.save({"encoder": encoder.state_dict(), "enhancer": enhancer.state_dict(), "step": 1},
               run / "checkpoints" / "ckpt-0000001.pt")
    return run, tmp, encoder.eval(), enhancer.eval()


def _invoke(args):
    return CliRunner().invoke(cli, args, catch_exceptions=True)


def test_enhance_with_a_run_at_full_resolution(run_dir, tmp_path):
    run, tmp, encoder, enhancer = run_dir
    refs = tmp_path / "refs"
    for i in range(3):
        _save(refs / f"r{i}.jpg", np.clip(fake_photo(10 + i, 48, 64) * 1.3, 0, 1))
    photos = tmp_path / "mine"
    _save(photos / "holiday.png", fake_photo(20, 70, 100))
    _save(photos / "cat.jpg", fake_photo(21, 90, 60))
    out = tmp_path / "out"
    res = _invoke(["enhance", "--run", str(run), "--refs", str(refs), "--input", str(photos), "--out", str(out),
                   "--tile", "128"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["cat.jpg", "holiday.png", "index.html"]
    got = np.asarray(Image.open(out / "holiday.png"))
    assert got.shape == (70, 100, 3)  # full resolution, not the 32 px training size
    assert Image.open(out / "cat.jpg").size == (60, 90)
    html = (out / "index.html").read_text()
    assert "_thumbs/holiday.png.before.jpg" in html and (out / "_thumbs" / "holiday.png.after.jpg").exists()
    # Same as running the models by hand: preference from the references, one full-size pass.
    from piebench.data.images import fit, read_image, to_srgb

    def t(a):
        return torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)

    src = to_srgb(read_image(photos / "holiday.png"))
    targets = torch.stack([t(fit(read_image(refs / f"r{i}.jpg"), 32, 32)[0]) for i in range(3)])[None]
    with torch.no_grad():
        pref = encoder(RefSet(targets=targets, query=t(fit(src, 32, 32)[0])[None]))
        x = torch.from_numpy(src).permute(2, 0, 1)[None]
        expected = enhance_full(enhancer, x, pref, full_resolution=True)
    expected = np.rint(expected[0].permute(1, 2, 0).numpy() * 255)
    assert np.abs(got.astype(np.float32) - expected).max() <= 1.0


def test_tiles_blend_without_seams():
    x = torch.rand(1, 3, 150, 230)

    def per_pixel(t, pref=None):
        return t ** 2 * 0.9

    full = enhance_full(per_pixel, x, None, full_resolution=True)
    tiled = enhance_full(per_pixel, x, None, full_resolution=False, tile=64, overlap=16)
    assert torch.allclose(full, tiled, atol=1e-6)
    with pytest.raises(UsageError, match="overlap"):
        enhance_full(per_pixel, x, None, full_resolution=False, tile=64, overlap=40)


def _released_lut3d(tmp_path, registry):
    """A lut3d model and its weights written in the official release's file layout (the folder)."""
    from piebench.interfaces import BuildContext

    torch.manual_seed(0)
    model = registry.get("enhancer", "lut3d").create(BuildContext(), "paper")
    weights = tmp_path / "w"
    weights.mkdir()
    torch.save(model.classifier.state_dict(), weights / "classifier.pth")
    torch.save({str(k): {"LUT": model.luts[k].detach().clone()} for k in range(model.luts.shape[0])},
               weights / "LUTs.pth")
    return model, weights


def test_enhance_with_released_weights(tmp_path, registry):
    model, weights = _released_lut3d(tmp_path, registry)
    photo = tmp_path / "one.png"
    _save(photo, fake_photo(3, 60, 80))
    res = _invoke(["enhance", "--enhancer", "lut3d", "--weights", str(weights), "--input", str(photo),
                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    got = np.asarray(Image.open(tmp_path / "o" / "one.png")).astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(Image.open(photo)).astype(np.float32) / 255).permute(2, 0, 1)[None]
        ref = model.eval()(x, None).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
    assert got.shape == (60, 80, 3) and np.abs(got - np.rint(ref)).max() <= 1.0


@pytest.mark.parametrize("args, pattern", [
    (["--input", "x", "--out", "o"], "either --run"),
    (["--run", "r", "--enhancer", "lut3d", "--input", "x", "--out", "o"], "either --run"),
    (["--enhancer", "lut3d", "--input", "x", "--out", "o"], "needs --weights"),
])
def test_usage_errors(args, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").mkdir()
    _save(tmp_path / "x" / "a.png", fake_photo(0, 20, 20))
    res = _invoke(["enhance", *args])
    assert isinstance(res.exception, UsageError) and pattern in str(res.exception)


def test_run_needs_refs_with_photos(run_dir, tmp_path):
    run = run_dir[0]
    _save(tmp_path / "in" / "a.png", fake_photo(0, 20, 20))
    (tmp_path / "refs").mkdir()
    res = _invoke(["enhance", "--run", str(run), "--refs", str(tmp_path / "refs"), "--input", str(tmp_path / "in"),
                   "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, UsageError) and "no reference photos" in str(res.exception)


def test_a_bad_reference_stops_enhance_before_anything_is_written(run_dir, tmp_path):
    run = run_dir[0]
    refs = tmp_path / "refs"
    for i in range(2):
        _save(refs / f"r{i}.jpg", np.clip(fake_photo(10 + i, 48, 64) * 1.3, 0, 1))
    (refs / "r9.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 20)  # truncated
    _save(tmp_path / "in" / "a.png", fake_photo(0, 20, 20))
    args = ["enhance", "--run", str(run), "--refs", str(refs), "--input", str(tmp_path / "in"),
            "--out", str(tmp_path / "o")]
    res = _invoke(args)
    assert isinstance(res.exception, UsageError) and "r9.jpg" in str(res.exception)
    assert not (tmp_path / "o").exists()
    res = CliRunner().invoke(cli, [*args, "--skip-bad"])
    assert res.exit_code == 0, res.output
    assert "skipped reference" in res.stderr and "r9.jpg" in res.stderr and "2 references" in res.stderr
    assert (tmp_path / "o" / "a.png").is_file()


def test_max_size_keeps_a_16_bit_photo_above_8_bits():
    from piebench.enhancing import _shrink

    ramp = np.linspace(0, 65535, 400, dtype=np.float64).round().astype(np.uint16)
    photo = np.repeat(np.repeat(ramp[None, :, None], 8, axis=0), 3, axis=2)  # [8, 400, 3] 16-bit ramp
    alpha = np.repeat(ramp[None, :], 8, axis=0)
    rgb, a = _shrink(photo, alpha, 300)
    assert rgb.shape == (6, 300, 3) and rgb.dtype == np.float32
    assert len(np.unique(rgb[..., 0])) > 256 and len(np.unique(a)) > 256  # not cut to 8 bits on the way


def test_max_size_shrinks_the_photo_and_its_alpha_together(tmp_path, registry):
    model, weights = _released_lut3d(tmp_path, registry)
    rgba = np.concatenate([np.rint(fake_photo(3, 60, 80) * 255), np.full((60, 80, 1), 255.0)], axis=-1)
    rgba[:30, :, 3] = 0
    (tmp_path / "in").mkdir()
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(tmp_path / "in" / "cut.png")
    res = _invoke(["enhance", "--enhancer", "lut3d", "--weights", str(weights), "--input", str(tmp_path / "in"),
                   "--out", str(tmp_path / "o"), "--max-size", "40"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = np.asarray(Image.open(tmp_path / "o" / "cut.png"))
    assert out.shape == (30, 40, 4)
    assert (out[:14, :, 3] == 0).all() and (out[16:, :, 3] == 255).all()  # the transparent half stays so
