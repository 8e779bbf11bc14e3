"""The README's main job and the core acceptance tests of the harness.

* `piebench run --encoder angular --enhancer sa` (the README command, smoke protocol) beats
  the identity baseline and its preference sensitivity is positive with a CI excluding 0, for
  seen and for unseen users;
* two users, one brightening and one darkening the same photos: `sa` reaches 30 dB for both
  (a model ignoring the preference is capped near the mean of the two).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from piebench.config import resolve
from piebench.runner import run_experiment


@pytest.mark.slow
def test_readme_main_job(tmp_path: Path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch-home")}  # no AlexNet staged: LPIPS unavailable
    res = subprocess.run([sys.executable, "-m", "piebench", "run", "--encoder", "angular", "--enhancer", "sa"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    for header in ("PSNR ↑", "SSIM ↑", "SSIM down ↑", "dE ↓", "LPIPS ↓", "sensitivity dB [95% CI]", "seen (12)",
                   "unseen (8)"):
        assert header in out, header
    assert "LPIPS: unavailable: " in out and "alexnet-owt-7be5be79.pth" in out
    assert "train" in res.stderr  # the progress bar
    record_line = out.strip().splitlines()[-1]
    assert record_line.startswith("record: ")
    record = json.loads((tmp_path / record_line.removeprefix("record: ")).read_text())
    assert record["status"] == "finished"
    assert record["compute"]["steps"] == 500
    for group in ("seen", "unseen"):
        g = record["metrics"][group]
        assert g["gain_over_identity"]["ci"][0] > 0, (group, g["gain_over_identity"])
        assert g["sensitivity"]["ci"][0] > 0, (group, g["sensitivity"])
    print(out)


@pytest.mark.slow
def test_two_users_brighten_and_darken(tmp_path: Path):
    cfg = resolve("smoke", encoder="angular", enhancer="sa", steps=300,
                  sets=["eval.data.users=two-user", "eval.data.crops_per_scene=20", "eval.max_photos=10"])
    run_dir, rec = run_experiment(cfg, tmp_path / "runs", progress=False)
    per_user = pd.read_csv(run_dir / "per_image.csv").groupby("user_name")[["psnr", "identity_psnr"]].mean()
    print(per_user)
    assert set(per_user.index) == {"brighten", "darken"}
    assert (per_user["psnr"] >= 30).all(), per_user
