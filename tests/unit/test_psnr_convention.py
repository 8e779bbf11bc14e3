"""One PSNR convention: 100 dB (an MSE floor of 1e-10) wherever PSNR is computed or read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from piebench.data import PhotoInfo, PieDataset, UserInfo
from piebench.interfaces import BuildContext
from piebench.metrics import METRICS, PSNR_CAP_DB, cap_psnr, psnr, psnr_from_mse
from piebench.metrics import control as ctl


def test_the_cap_is_one_constant_applied_everywhere():
    assert PSNR_CAP_DB == 100.0
    assert float(psnr_from_mse(0.0)) == 100.0 and float(psnr_from_mse(torch.zeros(1))[0]) == 100.0
    assert float(psnr_from_mse(1e-4)) == pytest.approx(40.0)  # below the cap nothing changes
    assert np.isnan(psnr_from_mse(np.nan))  # missing stays missing
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert psnr(x, x).tolist() == [100.0, 100.0]
    assert METRICS["psnr_q8"][0](torch.round(x * 255) / 255, torch.round(x * 255) / 255).tolist() == [100.0, 100.0]
    m = ctl.psnr_matrix(x[:, None].repeat(1, 2, 1, 1, 1), x[:, None].repeat(1, 2, 1, 1, 1))
    assert np.isfinite(m).all() and m.max() == 100.0
    assert cap_psnr([np.inf, 35.0, np.nan]).tolist()[:2] == [100.0, 35.0]


@pytest.fixture(scope="module")
def unedited():
    """8 photos in 4 scenes; user a leaves every photo as it is, b brightens, c (unseen) darkens."""
    rng = np.random.default_rng(0)
    x = rng.integers(40, 200, (8, 16, 16, 3)).astype(np.uint8)
    versions = np.stack([x, x, np.clip(x.astype(int) + 30, 0, 255), np.clip(x.astype(int) - 30, 0, 255)])
    users = [UserInfo(0, "a", True), UserInfo(1, "b", True), UserInfo(2, "c", False)]
    photos = [PhotoInfo(p, f"p{p}", f"s{p // 2}", "train" if p < 4 else "test") for p in range(8)]
    return PieDataset("unedited", versions.astype(np.uint8), users, photos, recipe={}, recipe_hash="unedited")


def test_identity_on_an_unedited_photo_end_to_end(unedited, tmp_path):
    """The identity enhancer on a user who left the photo unedited scores exactly the cap, and the
    summary, the control diagnostics and the leaderboard's per-image reader all take it."""
    from types import SimpleNamespace

    from piebench.data.manifest import build_manifest
    from piebench.diagnostics import steering_for
    from piebench.evaluate import evaluate, summarize
    from piebench.leaderboard import load_per_image
    from piebench.plugins import get_registry

    reg = get_registry()
    enc = reg.get("encoder", "lab-stats").create(BuildContext())
    enh = reg.get("enhancer", "identity").create(BuildContext(encoder=enc))
    manifest = build_manifest(unedited, refs=2, draws=2, seed=0)
    metrics = {name: METRICS[name][0] for name in ("psnr", "psnr_q8", "ssim", "delta_e")}
    result = evaluate(enc, enh, unedited, manifest, metrics=metrics, pairs=False, progress=False)
    df = result.per_image
    own = df[df["user_name"] == "a"]
    assert (own["psnr"] == 100.0).all() and (own["identity_psnr"] == 100.0).all() and (own["psnr_q8"] == 100.0).all()
    summary = summarize(result, list(metrics))
    seen = summary["seen"]
    assert seen["psnr"]["mean"] == pytest.approx(df.loc[df["seen"], "psnr"].mean())  # nothing dropped
    assert seen["psnr"]["mean"] > 55 and seen["n_scenes"] == 2 and seen["psnr"]["n_scenes"] == 2
    assert seen["gain_over_identity"]["mean"] == 0.0
    assert summary["per_user"]["a"]["psnr"] == 100.0
    st = steering_for(result, np.array([0, 1, 2]), seed=0,
                      scenes=np.array([unedited.photos[p].scene for p in result.group_photos]))
    assert st is not None and st["steering"]["n_scenes"] == 2
    # a record written before the cap existed: inf in per_image.csv reads as 100 dB, not dropped
    run = tmp_path / "run"
    run.mkdir()
    old = df.assign(psnr=np.where(df["user_name"] == "a", np.inf, df["psnr"]))
    old.to_csv(run / "per_image.csv", index=False)
    assert pd.read_csv(run / "per_image.csv")["psnr"].max() == np.inf
    read = load_per_image(run)
    assert len(read) == len(df) and (read.loc[read["user_name"] == "a", "psnr"] == 100.0).all()
    capped = summarize(SimpleNamespace(per_image=old, unavailable={}), ["psnr"])["seen"]["psnr"]
    assert capped["mean"] == pytest.approx(seen["psnr"]["mean"])  # the old inf summarises as 100 dB
