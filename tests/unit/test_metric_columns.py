"""Metric columns come from the registry: a registered third-party metric shows in the run table,
the leaderboard (and its CSV), the report and the archive; adding one never splits a table."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from piebench import config as C
from piebench.leaderboard import collect, leaderboard_tables, run_summary_table
from piebench.plugins import get_registry
from piebench.registry import Spec
from piebench.report import run_table
from piebench.runs import archive_records

ROOT = Path(__file__).resolve().parents[2] / "leaderboards"
PAIR = ROOT / "records" / "smoke" / "angular+sa"


def _copy_v1(dest: Path) -> None:
    """The committed smoke v1 seeds of angular+sa (the folder also holds the v2 records)."""
    for run in sorted(PAIR.iterdir()):
        if json.loads((run / "record.json").read_text())["protocol"]["version"] == 1:
            shutil.copytree(run, dest / run.name)
OLD, NEW = "e33b975796d0554f", "2b05907abceef4b0"
V1_RECIPE = "ef90679d4336cfed871a615ae93320e89b69d5cd003779fa84fba72cfc6201f8"  # pie-synth v1 at smoke v1  # smoke v1's eval hash before / after the metric list left it


@pytest.fixture
def tp_metric():
    """A third-party metric in the process registry: lower is better, label MAE, 3 decimals."""
    reg = get_registry()
    reg.add(Spec("metric", "tp-mae", lambda ctx: (lambda o, t: (o - t).abs().mean((1, 2, 3))), plugin="tp",
                 higher_is_better=False, label="MAE", digits=3, variant="mean absolute error"))
    yield reg
    reg._specs["metric"].pop("tp-mae")


def _runs_with_metric(tmp_path: Path) -> Path:
    """Three committed angular+sa seeds; seed 0 also computed tp-mae (record and per_image.csv)."""
    runs = tmp_path / "runs" / "smoke" / "angular+sa"
    _copy_v1(runs)
    first = sorted(runs.iterdir())[0]
    rec = json.loads((first / "record.json").read_text())
    for i, group in enumerate(("seen", "unseen", "all")):
        rec["metrics"][group]["tp-mae"] = {"mean": 0.0412 + i / 100, "ci": [0.04, 0.05]}
    rec["metric_variants"]["tp-mae"] = "mean absolute error"
    (first / "record.json").write_text(json.dumps(rec))
    df = pd.read_csv(first / "per_image.csv")
    df["tp-mae"] = 0.04
    df.to_csv(first / "per_image.csv", index=False)
    return tmp_path / "runs"


def test_a_registered_metric_is_a_column_everywhere_and_never_splits_the_table(tp_metric, tmp_path):
    runs = _runs_with_metric(tmp_path)
    tables = leaderboard_tables(collect(runs, "smoke"))
    assert len(tables) == 1  # one eval spec: the added metric did not split it
    spec, table = tables[0]
    assert spec["eval_hash"] == NEW and str(table.loc[0, "seeds"]).startswith("3")
    assert table.loc[0, "MAE ↓ seen"] == "0.041"  # one seed has it: its value, no interval
    assert table.columns.get_loc("MAE ↓ seen") > table.columns.get_loc("dE ↓ seen")  # after the built-ins
    rec = json.loads((sorted((runs / "smoke" / "angular+sa").iterdir())[0] / "record.json").read_text())
    summary = run_summary_table(rec)
    assert "MAE ↓" in summary and "0.041" in summary and "PSNR ↑" in summary
    headers, rows = run_table(rec)
    assert "MAE ↓" in headers and rows[0][headers.index("MAE ↓")].startswith("0.041 [0.040, 0.050]")
    archive_records(runs, tmp_path / "archive")
    kept = pd.read_csv(next((tmp_path / "archive").rglob("*s0-*/per_image.csv")))
    assert "tp-mae" in kept.columns and "psnr" in kept.columns


def test_a_metric_no_longer_installed_keeps_its_column(tmp_path):
    runs = _runs_with_metric(tmp_path)  # tp-mae is not registered here
    _, table = leaderboard_tables(collect(runs, "smoke"))[0]
    assert table.loc[0, "tp-mae seen"] == "0.041"


def test_directions_labels_and_digits_come_from_the_specs(registry):
    rec = json.loads(sorted(PAIR.glob("*/record.json"))[0].read_text())  # v1 (2026-11-26) sorts first
    rec["metrics"]["seen"]["ssim"]["mean"], rec["metrics"]["seen"]["delta_e"]["mean"] = 0.123456, 3.14159
    summary = run_summary_table(rec)
    for name in ("psnr", "ssim", "delta_e"):
        spec = registry.get("metric", name)
        assert f"{spec.label} {'↑' if spec.higher_is_better else '↓'}" in summary
    assert "0.1235" in summary and "3.14 " in summary and "3.142" not in summary


def test_the_eval_hash_ignores_the_metric_list_only():
    cfg = C.resolve("smoke", encoder="angular", enhancer="sa")
    more = C.resolve("smoke", encoder="angular", enhancer="sa", metrics=["tp-mae"])
    assert more["eval"]["metrics"][-1] == "tp-mae"
    assert C.eval_hash(cfg, "r") == C.eval_hash(more, "r")
    assert C.eval_hash(cfg, "r") != C.eval_hash(C.resolve("smoke", encoder="angular", enhancer="sa",
                                                          sets=["eval.max_photos=3"]), "r")


def test_metric_adds_to_a_metric_list_set_on_the_command_line():
    cfg = C.resolve("smoke", encoder="angular", enhancer="sa", metrics=["tp-mae"], sets=['eval.metrics=["psnr"]'])
    assert cfg["eval"]["metrics"] == ["psnr", "tp-mae"]


def _migration():
    spec = importlib.util.spec_from_file_location("migrate_eval_hash", ROOT / "migrate_eval_hash.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_rewrites_old_hashes_once_and_leaves_unknown_ones(tmp_path, capsys):
    runs = tmp_path / "records"
    _copy_v1(runs / "angular+sa")
    paths = sorted(runs.rglob("record.json"))
    before = [json.loads(p.read_text()) for p in paths]
    for p, rec in zip(paths, before, strict=True):
        p.write_text(json.dumps({**rec, "protocol": {**rec["protocol"], "eval_hash": OLD}}))
    bogus = json.loads(paths[2].read_text())
    bogus["protocol"]["eval_hash"] = "0123456789abcdef"
    paths[2].write_text(json.dumps(bogus))
    migrate = _migration()
    # smoke and pie-synth are v2 now: the v1 protocol file and the v1 store's recipe hash (from a v1
    # run's manifest.json) let the one-off rebuild v1's evaluation spec exactly
    v1 = ["--protocol-file", str(ROOT.parent / "tests" / "data" / "smoke-v1.toml")]
    for p in paths:
        (p.parent / "manifest.json").write_text(json.dumps({"recipe_hash": V1_RECIPE}))
    assert migrate.main([str(runs), *v1]) == 1
    out = capsys.readouterr().out
    assert "2 migrated, 0 already current, 1 unverified" in out and "0123456789abcdef" in out
    after = [json.loads(p.read_text()) for p in paths]
    assert [a["protocol"]["eval_hash"] for a in after] == [NEW, NEW, "0123456789abcdef"]
    assert after[0] == before[0]  # nothing else changed (the committed records carry NEW already)
    assert migrate.main([str(runs), "--check", *v1]) == 1
    assert "0 migrated (dry run), 2 already current, 1 unverified" in capsys.readouterr().out
    assert migrate.main([str(tmp_path / "nope")]) == 2


def test_the_migration_reads_a_run_directorys_config_and_manifest(tmp_path):
    migrate = _migration()
    run = tmp_path / "runs" / "smoke" / "angular+sa" / "r1"
    run.mkdir(parents=True)
    cfg = C.resolve("smoke", encoder="angular", enhancer="sa", sets=["eval.max_photos=3"])
    (run / "config.json").write_text(json.dumps(cfg))
    (run / "manifest.json").write_text(json.dumps({"recipe_hash": "abc"}))
    old = migrate.old_eval_hash(cfg, "abc")
    rec = {"protocol": {**cfg["protocol"], "eval_hash": old}, "encoder": cfg["encoder"], "enhancer": cfg["enhancer"]}
    (run / "record.json").write_text(json.dumps(rec))
    assert migrate.migrate([tmp_path / "runs"]) == {"migrated": 1, "current": 0, "unverified": 0}
    assert json.loads((run / "record.json").read_text())["protocol"]["eval_hash"] == C.eval_hash(cfg, "abc") != old
