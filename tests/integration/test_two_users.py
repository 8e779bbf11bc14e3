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

#: enhancer -> (encoder, training steps at 32 px). star had 400 steps, which left it 0.12 dB short
#: on an AMD EPYC (darken 29.88 dB; it passed on the Intel Xeon it was tuned on); at 600 steps it
#: measures brighten 48.67 / darken 34.96 dB on that EPYC: 4.96 dB of headroom over 30.
CASES = {
    "sa-seed": ("angular", 600),
    "sa-adain": ("angular", 600),
    "adain": ("angular", 600),
    "pienet": ("angular", 600),
    "star": ("star", 600),
    "csrnet": ("angular", 600),
    "lut3d": ("angular", 600),
    "hdrnet": ("angular", 600),
}
#: Below 30 dB for the brightening user, by architecture (closing note of issue 3). PieNet's
#: output is x + a linear 3x3 conv of [decoder, stride-2 skip, broadcast preference] upsampled
#: from stride 2, and the preference enters each block through an unnormalised 1x1 conv of a
#: unit-norm vector. In a controlled loop (32 px, fixed unit-norm codes, 600 steps, brighten /
#: darken dB): 16-d codes 26.2 / 30.3 (28.8 / 33.7 at 128 px, 28.4 / 32.2 after 2,000 steps), and
#: 33.2 / 40.8 with a small preference-aware full-resolution tail; 128-d codes (as the harness's
#: encoders give) 26.5 / 30.1, and only 27.7 / 39.6 with that tail. Widths 8/16/64, GroupNorm for
#: BatchNorm and batch layouts change it by under 2 dB. It must still follow both users by 8 dB, and
#: reach its own measured floor: 27.74 / 28.85 dB (brighten / darken) on an AMD EPYC at 600 steps,
#: asserted at 26.5 dB (1.2 dB of headroom) -- an explicit bar, not an expected failure.
FLOOR_DB = {"pienet": 26.5}
SETS = ["eval.data.users=two-user", "eval.data.crops_per_scene=20", "eval.max_photos=10", "eval.data.resolution=32"]


@pytest.mark.slow
@pytest.mark.parametrize("enhancer", sorted(CASES))
def test_both_users_reach_30_db(enhancer, tmp_path):
    encoder, steps = CASES[enhancer]
    cfg = resolve("smoke", encoder=encoder, enhancer=enhancer, steps=steps, schedule="joint", sets=SETS)
    run_dir, rec = run_experiment(cfg, tmp_path / "runs", progress=False)
    per_user = pd.read_csv(run_dir / "per_image.csv").groupby("user_name")[["psnr", "identity_psnr"]].mean()
    assert set(per_user.index) == {"brighten", "darken"}
    assert (per_user["psnr"] > per_user["identity_psnr"] + 8).all(), per_user.round(2).to_dict()  # follows each user
    assert (per_user["psnr"] >= FLOOR_DB.get(enhancer, 30.0)).all(), per_user.round(2).to_dict()
