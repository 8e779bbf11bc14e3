"""The two-user test for every conditioned enhancer (`sa` has it in test_main_job.py).

Two users retouch the same photos, one brightening (+0.8 EV) and one darkening (-0.8 EV).
An enhancer that ignores its preference is capped near the mean of the two targets (about
19 dB here); one that follows it reaches 30 dB for both users. Sizes are chosen per model so
CI stays fast: 32 px crops, the joint schedule, and the step count each model needs.
"""

from __future__ import annotations

import pandas as pd
import pytest

from piebench.config import resolve
from piebench.runner import run_experiment

#: enhancer -> (encoder, training steps at 32 px)
CASES = {
    "sa-seed": ("angular", 600),
    "sa-adain": ("angular", 600),
    "adain": ("angular", 600),
    "pienet": ("angular", 600),
    "star": ("star", 400),
    "csrnet": ("angular", 600),
    "lut3d": ("angular", 600),
    "hdrnet": ("angular", 600),
}
#: Below 30 dB for the brightening user (see the closing note of issue 3). PieNet's last
#: personalised up-sample block only concatenates the preference with stride-2 features before a
#: linear head, so a user-specific per-pixel nonlinearity (the +0.8 EV curve clipping the
#: highlights) exists only at stride 4 and coarser. 32 px, 600 steps: 27.4-29.3 dB brighten,
#: 28.8-31.1 darken over batch layouts, widths 8/16, GroupNorm in place of BatchNorm and a
#: full-resolution head; 1,500 steps: 28.93 / 30.85.
SHORT_OF_30 = {"pienet"}
SETS = ["eval.data.users=two-user", "eval.data.crops_per_scene=20", "eval.max_photos=10", "eval.data.resolution=32"]


@pytest.mark.slow
@pytest.mark.parametrize("enhancer", [
    pytest.param(e, marks=pytest.mark.xfail(reason="plateaus just under 30 dB for the brightening user", strict=False))
    if e in SHORT_OF_30 else e for e in sorted(CASES)])
def test_both_users_reach_30_db(enhancer, tmp_path):
    encoder, steps = CASES[enhancer]
    cfg = resolve("smoke", encoder=encoder, enhancer=enhancer, steps=steps, schedule="joint", sets=SETS)
    run_dir, rec = run_experiment(cfg, tmp_path / "runs", progress=False)
    per_user = pd.read_csv(run_dir / "per_image.csv").groupby("user_name")[["psnr", "identity_psnr"]].mean()
    assert set(per_user.index) == {"brighten", "darken"}
    assert (per_user["psnr"] > per_user["identity_psnr"] + 8).all(), per_user.round(2).to_dict()  # follows each user
    assert (per_user["psnr"] >= 30).all(), per_user.round(2).to_dict()
