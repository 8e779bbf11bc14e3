"""Leaderboard entries, sections and verdicts on synthetic records written to disk (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from piebench.cli import cli, main
from piebench.errors import UsageError
from piebench.leaderboard import bound_kind, collect, leaderboard_tables, load_per_image, render_markdown
from piebench.metrics.fidelity import PSNR_CAP_DB

SCENES, CROPS, USERS = 8, 3, 4


def _items(rng: np.random.Generator) -> pd.DataFrame:
    """96 items: 8 scenes x 3 crops x 4 users, with how hard each scene and crop is."""
    photo = np.repeat(np.arange(SCENES * CROPS), USERS)
    scene = photo // CROPS
    difficulty = rng.normal(25, 2, SCENES)[scene] + rng.normal(0, 0.5, SCENES * CROPS)[photo]
    return pd.DataFrame({"photo": photo, "scene": [f"sc{s}" for s in scene], "user": np.tile(np.arange(USERS), 24),
                         "draw": 0, "seen": True, "difficulty": difficulty})


def _run(root: Path, enc: str, enh: str, seed: int, items: pd.DataFrame, shift: float, rng, *,
         train_hash: str | None = None, overrides: tuple = (), commit: str = "c0", version: int = 1,
         seed_sd: float = 0.1) -> None:
    """One finished run: per-image PSNR = difficulty + shift + seed effect + item noise."""
    d = root / f"v{version}" / f"{enc}+{enh}" / f"{train_hash or 'r'}-{seed}-{commit}"
    d.mkdir(parents=True)
    psnr = items["difficulty"] + shift + rng.normal(0, seed_sd) + rng.normal(0, 0.05, len(items))
    items.drop(columns="difficulty").assign(psnr=psnr).to_csv(d / "per_image.csv", index=False)
    rec = {"schema_version": 1, "status": "finished", "seed": seed, "blind": False, "git_commit": commit,
           "protocol": {"name": "p", "version": version, "eval_hash": f"e{version}",
                        "train_hash": train_hash or f"{enc}+{enh}", "ranking": True},
           "encoder": {"name": enc}, "enhancer": {"name": enh, "configuration": "small"}, "overrides": list(overrides),
           "parameters": {"encoder": 0, "enhancer": 10}, "environment": {"device": "cpu"},
           "metrics": {"seen": {"psnr": {"mean": float(psnr.mean()), "ci": [0, 0]}}},
           "plugins": {f"encoder:{enc}": {"version": "1"}, f"enhancer:{enh}": {"version": "1"}}}
    (d / "record.json").write_text(json.dumps(rec))


def _entry(root, enc, enh, seeds, items, shift, rng, **kw) -> None:
    for s in seeds:
        _run(root, enc, enh, s, items, shift, rng, **kw)


def test_ties_rest_on_seeds_and_scenes_and_bounds_are_never_ranked(tmp_path):
    rng = np.random.default_rng(0)
    items = _items(rng)
    _entry(tmp_path, "angular", "sa", range(4), items, 0.0, rng)
    _entry(tmp_path, "center", "sa", range(3), items, 0.0, rng)
    _entry(tmp_path, "npair", "sa", range(3), items, -2.0, rng)
    _entry(tmp_path, "triplet", "sa", [0], items, 0.1, rng)
    _entry(tmp_path, "oracle-id", "adain", range(3), items, 3.0, rng)  # best of all, but an oracle
    _entry(tmp_path, "angular", "identity", range(3), items, -5.0, rng, seed_sd=0.0)
    [(spec, table)] = leaderboard_tables(collect(tmp_path))
    cells = dict(zip(table["encoder"], table["PSNR ↑ seen"], strict=True))
    assert set(cells) == {"angular", "center", "npair", "triplet"}  # no oracle, no identity in the ranking
    assert cells["angular"].endswith(" *") and cells["center"].endswith(" *")
    assert not cells["npair"].endswith("*")  # 2 dB worse over 3 seeds and 8 scenes
    assert not cells["triplet"].endswith("*")  # one seed: never a verdict
    bounds = spec["bounds"]
    assert dict(zip(bounds["encoder"], bounds["kind"], strict=True)) == {"oracle-id": "oracle", "angular": "baseline"}
    assert not any(str(c).endswith("*") for c in bounds["PSNR ↑ seen"])
    assert spec["scenes"] == [f"sc{i}" for i in range(SCENES)]
    text = render_markdown([(spec, table)])
    assert "Rests on 8 test scenes" in text and "### Bounds and baselines" in text and "needs >= 2 seeds" in text
    assert text.index("### Bounds and baselines") > text.index("| npair")
    mde = next(n for n in spec["notes"] if n.startswith("minimum detectable effect"))
    assert "between two entries of 3 seeds" in mde and "8 test scenes" in mde
    assert 0.1 < float(mde.split(": ")[1].split(" dB")[0]) < 1.5  # seed sd 0.1 over 3 seeds, t with few df
    assert "A/A false-positive rate on this table's runs: " in mde and " of 3 (" in mde  # angular+sa: 4 seeds


def test_an_entry_is_one_training_recipe_steps_overrides_included(tmp_path):
    rng = np.random.default_rng(1)
    items = _items(rng)
    _entry(tmp_path, "angular", "sa", range(2), items, 0.0, rng, train_hash="full")
    _entry(tmp_path, "angular", "sa", range(2), items, -4.0, rng, train_hash="short", overrides=("steps=20",))
    [(_, table)] = leaderboard_tables(collect(tmp_path))
    rows = {(r.recipe, r.overrides): r.seeds for r in table.itertuples()}
    assert rows == {("full", "–"): 2, ("short", "steps=20"): 2}  # two entries, never one of 4 "seeds"


def test_seeds_from_different_commits_are_flagged_and_refused_with_strict(tmp_path, capsys):
    rng = np.random.default_rng(2)
    items = _items(rng)
    _run(tmp_path, "angular", "sa", 0, items, 0.0, rng, commit="aaaa1111")
    _run(tmp_path, "angular", "sa", 1, items, 0.0, rng, commit="bbbb2222")
    _entry(tmp_path, "center", "sa", range(2), items, 0.0, rng)
    [(spec, table)] = leaderboard_tables(collect(tmp_path))
    seeds = dict(zip(table["encoder"], table["seeds"], strict=True))
    assert seeds == {"angular": "2 †", "center": 2}
    assert any("angular+sa (aaaa1111, bbbb2222)" in n for n in spec["notes"])
    with pytest.raises(UsageError, match="different commits"):
        leaderboard_tables(collect(tmp_path), strict=True)
    with pytest.raises(SystemExit) as exc:
        main(["leaderboard", "--runs-dir", str(tmp_path), "--strict"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "different commits" in err and len(err.strip().splitlines()) == 1, err
    res = CliRunner().invoke(cli, ["leaderboard", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 0 and "2 †" in res.output


def test_protocol_versions_are_separate_tables_newest_first(tmp_path):
    rng = np.random.default_rng(3)
    items = _items(rng)
    for version in (1, 2):
        _entry(tmp_path, "angular", "sa", range(2), items, 0.0, rng, version=version)
        _entry(tmp_path, "oracle-params", "adain", range(2), items, 1.0, rng, version=version)
    tables = leaderboard_tables(collect(tmp_path))
    assert [s["version"] for s, _ in tables] == [2, 1]
    text = render_markdown(tables)
    assert text.index("## p v2") < text.index("## p v1") and text.count("### Bounds and baselines") == 2


def test_a_missing_value_is_an_error_and_an_infinite_psnr_follows_the_cap(tmp_path):
    rng = np.random.default_rng(4)
    items = _items(rng)
    _entry(tmp_path, "angular", "sa", range(2), items, 0.0, rng)
    _entry(tmp_path, "center", "sa", range(2), items, 0.0, rng)
    path = next(tmp_path.rglob("per_image.csv"))
    df = pd.read_csv(path)
    df.loc[0, "psnr"] = np.inf  # a record written before the 100 dB convention: capped, never dropped
    df.to_csv(path, index=False)
    loaded = load_per_image(path.parent)
    assert loaded.loc[0, "psnr"] == PSNR_CAP_DB and len(loaded) == len(df)
    (_, table), = leaderboard_tables(collect(tmp_path))
    assert len(table) == 2 and "inf" not in table.to_string()  # both entries ranked, the capped one finite
    df.loc[0, "psnr"] = np.nan  # a hole is loud
    df.to_csv(path, index=False)
    with pytest.raises(UsageError, match="non-finite psnr"):
        leaderboard_tables(collect(tmp_path))


def test_bounds_come_from_what_plugins_declare():
    rec = {"encoder": {"name": "angular"}, "enhancer": {"name": "sa"}, "blind": False}
    assert bound_kind(rec) == ""
    assert bound_kind({**rec, "blind": True}) == "blind twin"
    assert bound_kind({**rec, "encoder": {"name": "oracle-params"}}) == "oracle"  # spec role="oracle"
    assert bound_kind({**rec, "enhancer": {"name": "transfer"}}) == "baseline"  # spec role="baseline"
    assert bound_kind({**rec, "enhancer": {"name": "not-installed"}}) == ""


def test_the_encoder_gap_to_an_oracle_is_a_comparison_over_seeds_and_scenes(tmp_path):
    rng = np.random.default_rng(5)
    items = _items(rng)
    _entry(tmp_path, "oracle-id", "adain", range(3), items, 3.0, rng)
    _entry(tmp_path, "oracle-params", "adain", [0], items, 3.0, rng)
    _entry(tmp_path, "angular", "adain", range(3), items, 0.0, rng)
    _entry(tmp_path, "gram", "adain", range(3), items, -1.0, rng)
    [(spec, _)] = leaderboard_tables(collect(tmp_path))
    gap, lonely = spec["bounds_notes"]
    assert gap.startswith("encoder gap (PSNR, seen users): oracle-id+adain - angular+adain")
    value, lo, hi = (float(x) for x in gap.split(": ")[2].replace(" dB [", " ").replace("]", " ").replace(",", " ")
                     .split()[:3])
    assert 2.5 < value < 3.5 and 0 < lo < value < hi
    assert "oracle-params+adain - angular+adain" in lonely and "(needs >= 2 seeds)" in lonely
    assert "encoder gap" in render_markdown([(spec, _)]).split("### Bounds and baselines")[1]
