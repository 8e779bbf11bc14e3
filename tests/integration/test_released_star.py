"""Published StarEnhancer in one command: style code from reference photos or a stored style.

The weights are written by the test in the official checkpoint format (``{'state_dict': ...}``
with DataParallel ``module.`` keys; key names and shapes checked against
tests/data/starenhancer_state_dict_shapes.json), with random values.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import piebench
from piebench.cli import cli
from piebench.data.fakefivek import _save, fake_photo
from piebench.errors import UsageError
from piebench.interfaces import BuildContext, Preference

SHAPES = json.loads((pathlib.Path(__file__).resolve().parents[1] / "data" / "starenhancer_state_dict_shapes.json")
                    .read_text())["files"]


def _official(module: torch.nn.Module, path: pathlib.Path) -> dict[str, list[int]]:
    state = {"module." + k: v.clone() for k, v in module.state_dict().items()}
    torch.save({"state_dict": state}, path)
    return {k: list(v.shape) for k, v in state.items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The official save_model/ folder: stylish.pth.tar (10 styles), mapping.pth.tar, enhancer.pth.tar."""
    from piebench_plugins.encoders.star import StarEncoder
    from piebench_plugins.enhancers.star import build_star

    folder = tmp_path_factory.mktemp("save_model")
    torch.manual_seed(0)
    enc, enh = StarEncoder(10), build_star(BuildContext())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in [*enc.parameters(), *enh.parameters()]:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    assert _official(enc, folder / "stylish.pth.tar") == SHAPES["stylish.pth.tar (Stylish, 10 styles)"]
    assert _official(enh.mapping, folder / "mapping.pth.tar") == SHAPES["mapping.pth.tar"]
    assert _official(enh.enhancer, folder / "enhancer.pth.tar") == SHAPES["enhancer.pth.tar (SlimEnhancer)"]
    return folder


def _photos(root: pathlib.Path, sizes, seed: int) -> list[pathlib.Path]:
    out = []
    for i, (h, w) in enumerate(sizes):
        _save(root / f"p{i}.png", fake_photo(seed + i, h, w))
        out.append(root / f"p{i}.png")
    return out


def _as_tensor(path: pathlib.Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path)).astype(np.float32) / 255).permute(2, 0, 1)


def block_area_resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """Area averaging by brute force: replicate every pixel to a common multiple, average blocks."""
    for axis in (1, 2):
        n = img.shape[axis]
        lcm = np.lcm(n, size)
        img = img.repeat_interleave(lcm // n, dim=axis).double()
        img = img.unflatten(axis, (size, lcm // size)).mean(axis + 1)
    return img.float()


def _invoke(args):
    return CliRunner().invoke(cli, args, catch_exceptions=True)


def test_area_resize_is_the_official_inter_area():
    from piebench.released import area_resize

    img = torch.rand(3, 280, 336, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(area_resize(img[None], 224, 224)[0], block_area_resize(img, 224), rtol=0, atol=1e-6)
    small = torch.rand(1, 3, 2, 3)  # enlarging by an integer factor repeats pixels (OpenCV's INTER_AREA)
    assert torch.equal(area_resize(small, 4, 6), small.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_enhance_with_refs_equals_load_pretrained_and_the_encoder(weights, tmp_path):
    refs = _photos(tmp_path / "style", [(280, 336), (320, 280)], 10)
    photo = _photos(tmp_path / "in", [(56, 84)], 20)[0]
    res = _invoke(["enhance", "--enhancer", "star", "--weights", str(weights), "--refs", str(tmp_path / "style"),
                   "--input", str(photo), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    got = np.asarray(Image.open(tmp_path / "out" / photo.name))

    encoder = piebench.load_pretrained("star", str(weights), kind="encoder")
    model = piebench.load_pretrained("star", str(weights))
    assert not encoder.training and encoder.proxy.fc.shape == (512, 10)
    with torch.no_grad():
        codes = torch.cat([encoder.embed(block_area_resize(_as_tensor(r), 224)[None]) for r in refs])
        target = F.normalize(codes.mean(0, keepdim=True), dim=1)
        x = _as_tensor(photo)[None]
        source = encoder.embed(block_area_resize(x[0], 224)[None])
        y = model(x, Preference(vector=target, source=source)).clamp(0, 1)
    want = np.clip(np.rint(y[0].permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)
    assert np.abs(got.astype(int) - want).max() <= 1 and (got == want).mean() > 0.999
    assert np.abs(got.astype(int) - np.asarray(Image.open(photo)).astype(int)).mean() > 1  # it did enhance


def test_stored_style_from_embeddings_or_proxies(weights, tmp_path):
    photo = _photos(tmp_path / "in", [(48, 64)], 30)[0]
    encoder = piebench.load_pretrained("star", str(weights), kind="encoder")
    proxies = F.normalize(encoder.proxy.fc.detach().t(), dim=1)
    torch.testing.assert_close(encoder.stored_styles(), proxies)  # no embeddings.npy: the proxies
    model = piebench.load_pretrained("star", str(weights))

    def python_output(target):
        with torch.no_grad():
            x = _as_tensor(photo)[None]
            source = encoder.embed(block_area_resize(x[0], 224)[None])
            y = model(x, Preference(vector=target, source=source)).clamp(0, 1)
        return np.clip(np.rint(y[0].permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)

    res = _invoke(["enhance", "--enhancer", "star", "--weights", str(weights), "--style", "3",
                   "--input", str(photo), "--out", str(tmp_path / "o1")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    by_proxy = np.asarray(Image.open(tmp_path / "o1" / photo.name))
    assert np.abs(by_proxy.astype(int) - python_output(proxies[2:3])).max() <= 1

    with_npy = tmp_path / "w"
    with_npy.mkdir()
    for f in weights.iterdir():
        (with_npy / f.name).symlink_to(f)
    emb = F.normalize(torch.randn(10, 4, 512, generator=torch.Generator().manual_seed(5)), dim=2)
    np.save(with_npy / "embeddings.npy", emb.numpy())  # the official fetch_embedding.py output
    res = _invoke(["enhance", "--enhancer", "star", "--weights", str(with_npy), "--style", "3",
                   "--input", str(photo), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    by_centre = np.asarray(Image.open(tmp_path / "o2" / photo.name))
    centre = F.normalize(emb[2].mean(0, keepdim=True), dim=1)  # the official test's target_center
    assert np.abs(by_centre.astype(int) - python_output(centre)).max() <= 1
    assert np.abs(by_centre.astype(int) - by_proxy.astype(int)).max() > 0


@pytest.mark.parametrize("extra, pattern", [
    (["--enhancer", "star", "--style", "2", "--refs", "REFS"], "either --refs STYLE_DIR or --style K"),
    (["--enhancer", "star"], "needs a target style: --refs STYLE_DIR"),
    (["--enhancer", "star", "--style", "11"], "store 10 styles (1..10)"),
    (["--enhancer", "star", "--style", "0"], "numbered from 1"),
    (["--enhancer", "star", "--refs", "nowhere"], "--refs nowhere: folder not found"),
    (["--enhancer", "lut3d", "--style", "1"], "'lut3d' has no style input"),
    (["--enhancer", "lut3d", "--refs", "REFS"], "'lut3d' has no style input"),
    (["--run", "r", "--refs", "REFS", "--style", "1"], "--style K picks a style stored with released weights"),
])
def test_bad_combinations_are_one_line_usage_errors(weights, tmp_path, monkeypatch, extra, pattern):
    monkeypatch.chdir(tmp_path)
    _photos(tmp_path / "in", [(20, 20)], 0)
    _photos(tmp_path / "refs", [(20, 20)], 1)
    lut = tmp_path / "lut"
    if "lut3d" in extra:
        model = piebench.plugins.get_registry().get("enhancer", "lut3d").create(BuildContext(), "paper")
        lut.mkdir()
        torch.save(model.classifier.state_dict(), lut / "classifier.pth")
        torch.save({str(k): {"LUT": model.luts[k].detach().clone()} for k in range(3)}, lut / "LUTs.pth")
    w = str(lut if "lut3d" in extra else weights)
    args = [a.replace("REFS", str(tmp_path / "refs")) for a in extra]
    if "--run" not in args:
        args += ["--weights", w]
    res = _invoke(["enhance", *args, "--input", "in", "--out", "out"])
    assert isinstance(res.exception, UsageError), res.output + repr(res.exception)
    assert pattern in str(res.exception) and "\n" not in str(res.exception)
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_combination_exits_2_with_one_line(weights, tmp_path, capsys):
    from piebench.cli import main

    _photos(tmp_path / "in", [(20, 20)], 0)
    with pytest.raises(SystemExit) as stop:
        main(["enhance", "--enhancer", "star", "--weights", str(weights), "--style", "99",
              "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == 2 and len(lines) == 1 and "store 10 styles" in lines[0], err
    assert not (tmp_path / "out").exists()
