"""users-curve's delta to the first count: paired per seed, an interval over seeds and scenes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from piebench.errors import UsageError
from piebench.sweep import SweepItem
from piebench.users_curve import _delta, _rows


def _frame(rng, seed: int, shift: float) -> pd.DataFrame:
    photo = np.repeat(np.arange(12), 3)
    return pd.DataFrame({"photo": photo, "scene": [f"s{p // 3}" for p in photo], "draw": 0,
                         "user_name": np.tile(["u00", "u01", "u02"], 12), "seed": seed,
                         "psnr": 24 + photo % 4 + shift + rng.normal(0, 0.05, photo.size)})


def test_delta_is_paired_per_seed_with_an_interval_over_seeds_and_scenes():
    rng = np.random.default_rng(0)
    seed_effect = {0: 0.4, 1: -0.3, 2: 0.1}  # shared by both counts of one seed: pairing cancels it
    runs = [_frame(rng, s, 1.0 + e) for s, e in seed_effect.items()]
    base = [_frame(rng, s, e) for s, e in seed_effect.items()]
    d = _delta(runs, base)
    assert d["paired_seeds"] and d["seeds"] == [3, 3] and d["n_scenes"] == 4 and d["verdict"] == "a > b"
    assert d["mean"] == pytest.approx(1.0, abs=0.05) and 0 < d["ci"][0] < 1.0 < d["ci"][1]
    one = _delta(runs[:1], base[:1])
    assert one["verdict"] == "needs >= 2 seeds" and one["ci"] is None
    assert _delta(runs[:1], base[1:2]) is None  # no seed in common: nothing to pair


def test_an_infinite_psnr_is_an_error_not_dropped(tmp_path):
    df = _frame(np.random.default_rng(1), 0, 0.0).drop(columns="seed")
    df.loc[0, "psnr"] = np.inf
    df.to_csv(tmp_path / "per_image.csv", index=False)
    item = SweepItem("angular", "sa", 0)
    item.run_dir = tmp_path
    with pytest.raises(UsageError, match="non-finite PSNR"):
        _rows(item, ["u00", "u01"])
