"""Full-resolution testing (``eval.test_resolution = "full"``, the ``fivek-upe`` protocol).

A fake FiveK tree is prepared at full resolution (``--size full``), trained at a small derived
size, and scored on every test photo at its own size: the per-image PSNR of the identity
enhancer must equal the PSNR computed here from the full-resolution store, which differs from
the PSNR at the derived size.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from piebench.cli import cli
from piebench.config import resolve
from piebench.data import prepared
from piebench.data.fakefivek import make_fake_fivek
from piebench.errors import UsageError
from piebench.runner import run_experiment

SETS = ["eval.data.resolution=16", "eval.refs=3", "eval.max_photos=6", "train.refs=3", "train.batch_users=2"]


@pytest.fixture(scope="module")
def full_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fivek-full")
    root = make_fake_fivek(tmp / "src", "starenhancer", height=40, width=60)
    result = CliRunner().invoke(cli, ["data", "prepare", "fivek", "--root", str(root), "--layout", "starenhancer",
                                      "--size", "full", "--out", str(tmp / "fivek-upe-full")])
    assert result.exit_code == 0, result.output
    return tmp / "fivek-upe-full"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)
    return float(10 * np.log10(1 / mse))


@pytest.mark.parametrize("enhancer", ["identity", "sa"])
def test_scores_each_test_photo_at_its_own_resolution(full_store, tmp_path, enhancer):
    cfg = resolve("smoke", encoder="angular", enhancer=enhancer, steps=3, dataset=f"fivek:{full_store}",
                  sets=SETS + ["eval.test_resolution=full"])
    run_dir, rec = run_experiment(cfg, tmp_path / "runs", progress=False)
    assert rec["status"] == "finished"
    df = pd.read_csv(run_dir / "per_image.csv")
    meta = prepared.read_store_meta(full_store)
    users = list(meta["users"])
    assert len(df) == 5 * len(set(df["photo"])) and set(df["photo"])
    sizes = set()
    for row in df.itertuples():
        versions = prepared.full_photo(full_store, int(row.photo))  # photo ids are the store's slots
        sizes.add(versions.shape[1:3])
        full = _psnr(versions[0], versions[1 + users.index(row.user_name)])
        assert row.identity_psnr == pytest.approx(full, abs=1e-4)
        if enhancer == "identity":
            assert row.psnr == pytest.approx(full, abs=1e-4)
        assert np.isfinite(row.psnr) and np.isfinite(row.ssim_down)
    assert (40, 60) in sizes or (60, 40) in sizes  # the source size, not the 16 px training copy

    # the same run scored at the store's derived size gives other numbers
    cfg16 = resolve("smoke", encoder="angular", enhancer="identity", steps=3, dataset=f"fivek:{full_store}", sets=SETS)
    run16, _ = run_experiment(cfg16, tmp_path / "runs16", progress=False)
    at16 = pd.read_csv(run16 / "per_image.csv").set_index(["photo", "user"])["identity_psnr"]
    atfull = df.set_index(["photo", "user"])["identity_psnr"]
    assert not np.allclose(at16.loc[atfull.index].to_numpy(), atfull.to_numpy(), atol=0.05)


def test_full_resolution_needs_a_full_store(tmp_path):
    root = make_fake_fivek(tmp_path / "src", "starenhancer", ids=["a0001", "a0002", "a0004", "a0005", "a4501"])
    store = tmp_path / "store16"
    assert CliRunner().invoke(cli, ["data", "prepare", "fivek", "--root", str(root), "--layout", "starenhancer",
                                    "--size", "16", "--out", str(store)]).exit_code == 0
    cfg = resolve("smoke", encoder="angular", enhancer="identity", steps=2, dataset=f"fivek:{store}",
                  sets=["eval.refs=2", "train.refs=2", "train.batch_users=2", "eval.test_resolution=full"])
    with pytest.raises(UsageError, match="prepare one with --size full"):
        run_experiment(cfg, tmp_path / "runs", progress=False)
    with pytest.raises(UsageError, match="test_resolution must be 'store'"):
        resolve("smoke", encoder="angular", enhancer="sa", sets=["eval.test_resolution=480"])


def test_fivek_upe_tests_at_full_resolution():
    cfg = resolve("fivek-upe", encoder="star", enhancer="star")
    assert cfg["eval"]["test_resolution"] == "full"
    assert cfg["eval"]["data"] == {"root": "fivek-upe-full", "split": "upe", "resolution": 480}
