"""The committed leaderboard tables are exactly what their committed records generate."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
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


def test_committed_seed_splits_are_rarely_called_different():
    """A/A on the committed records: each entry with >= 4 seeds split 2 against 2 (the same
    configuration on both sides) is called "different" in at most 10 % of the splits."""
    from piebench.leaderboard import ENTRY_KEYS, collect
    from piebench.stats import aa_false_positives
    from piebench.verdicts import table_items

    df = collect(_regenerate().RECORDS, "smoke")
    false = total = 0
    for _, part in df.groupby(["version", "eval_hash"]):
        entries = [list(r.sort_values("seed")["run_dir"]) for _, r in part.groupby(ENTRY_KEYS)]
        for group in ("seen", "unseen"):
            got = table_items(entries, group)
            if got is None:
                continue
            cells, w = got[1][0], got[1][1]
            f, t = aa_false_positives([c for c in cells if np.ptp(c, axis=0).max() > 0], w)
            false, total = false + f, total + t
    if not total:
        pytest.xfail("no committed smoke entry has >= 4 seeds yet (the v2 records add seed 3 for three pairs)")
    assert false / total <= 0.10, f"{false} of {total} same-configuration splits called different"


def test_every_protocol_version_is_its_own_table_newest_first_with_its_bounds(tmp_path):
    """v1 and v2 records side by side: two tables (v2 first), each with its bounds section."""
    regen = _regenerate()
    for pair in ("angular+sa", "center+sa", "oracle-id+adain", "angular+identity"):
        for run in sorted((regen.RECORDS / "smoke" / pair).iterdir()):
            if json.loads((run / "record.json").read_text())["protocol"]["version"] != 1:
                continue  # the committed v2 records: this test makes its own v2 copies of v1
            for version in (1, 2):
                dest = tmp_path / "smoke" / f"v{version}" / pair / run.name
                shutil.copytree(run, dest)
                if version == 2:
                    rec = json.loads((dest / "record.json").read_text())
                    rec["protocol"].update(version=2, eval_hash="v2" + rec["protocol"]["eval_hash"][2:])
                    (dest / "record.json").write_text(json.dumps(rec))
    text = regen.render_smoke(tmp_path)
    assert text.index("## smoke v2") < text.index("## smoke v1")
    assert text.count("### Bounds and baselines") == 2 and text.count("Rests on 2 test scenes") == 2
    assert "Coverage of smoke v2: partial" in text and "Older protocol versions (v1)" in text
    v2 = text[text.index("## smoke v2"):text.index("## smoke v1")]
    ranked, bounds = v2.split("### Bounds and baselines")
    assert "oracle-id" not in ranked and "| oracle   | oracle-id" in bounds and "identity" in bounds
