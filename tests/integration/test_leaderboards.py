"""The committed leaderboard tables are exactly what their committed records generate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "leaderboards"


def _regenerate():
    spec = importlib.util.spec_from_file_location("regenerate", ROOT / "regenerate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_md_regenerates_from_its_records():
    assert (ROOT / "smoke.md").read_text() == _regenerate().render_smoke(), \
        "leaderboards/smoke.md differs from what leaderboards/records generates (python leaderboards/regenerate.py)"


def test_smoke_table_covers_every_shipped_encoder_and_enhancer():
    from piebench.leaderboard import collect

    regen = _regenerate()
    df = collect(regen.RECORDS, "smoke")
    done = set(map(tuple, df[["encoder", "enhancer"]].drop_duplicates().to_numpy().tolist()))
    missing = regen.cross_pairs() - done
    if missing:
        pytest.xfail(f"smoke cross not complete yet: {sorted(missing)} (see leaderboards/smoke.md)")
    assert (df.groupby(["encoder", "enhancer"])["seed"].nunique() >= 3).all()
