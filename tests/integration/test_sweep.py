"""piebench sweep / ablate end to end on smoke, and the leaderboard's paired statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from piebench.cli import cli
from piebench.leaderboard import collect, leaderboard_tables, render_markdown

FAST = ["--steps", "3", "--set", "eval.max_photos=3", "--set", "train.threads=1"]


@pytest.fixture(autouse=True)
def one_thread():
    """Runs here are tiny: one BLAS/OpenMP thread is faster than two fighting for a busy CPU."""
    with threadpool_limits(1):
        yield


def invoke(args: list[str]) -> tuple[int, str]:
    res = CliRunner().invoke(cli, args, catch_exceptions=True)
    text = res.output + (f"\n{type(res.exception).__name__}: {res.exception}" if res.exception else "")
    return res.exit_code, text


def _paired_mean(a: Path, b: Path, group: str) -> float:
    pa, pb = pd.read_csv(a / "per_image.csv"), pd.read_csv(b / "per_image.csv")
    m = pa.merge(pb, on=["photo", "user", "draw"], suffixes=("_a", "_b"))
    m = m[m["seen_a"] == (group == "seen")]
    return float((m["psnr_a"] - m["psnr_b"]).mean())


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    with threadpool_limits(1):
        code, out = invoke(["sweep", "--encoders", "lab-stats", "--enhancers", "transfer,sa,csrnet", "--blind-twins",
                            "--runs-dir", str(runs), *FAST])
    return runs, code, out


def test_grid_lists_incompatible_pairs_and_runs_the_rest_with_blind_twins(swept):
    runs, code, out = swept
    assert code == 0, out
    assert "incompatible" in out and "maps" in out  # lab-stats provides no maps for sa
    recs = [json.loads(p.read_text()) for p in runs.rglob("record.json")]
    done = sorted((r["encoder"]["name"], r["enhancer"]["name"], r["blind"]) for r in recs)
    # transfer is training-free: no blind twin (its constant would never be trained)
    assert done == [("lab-stats", "csrnet", False), ("lab-stats", "csrnet", True), ("lab-stats", "transfer", False)]
    assert all(r["status"] == "finished" for r in recs)


def test_rerun_reuses_finished_runs_and_resumes_unfinished_ones(swept):
    runs, _, _ = swept
    rec_path = next(p for p in runs.rglob("record.json") if "lab-stats+transfer" in str(p))
    rec = json.loads(rec_path.read_text())
    rec["status"] = "interrupted"
    rec_path.write_text(json.dumps(rec))
    before = sorted(str(p) for p in runs.rglob("record.json"))
    code, out = invoke(["sweep", "--encoders", "lab-stats", "--enhancers", "transfer,csrnet", "--blind-twins",
                        "--runs-dir", str(runs), *FAST])
    assert code == 0, out
    assert sorted(str(p) for p in runs.rglob("record.json")) == before  # no new run directory
    lines = {ln.split("|")[2].strip(): ln for ln in out.splitlines() if ln.startswith("| lab-stats")}
    assert "| cached" in lines["csrnet"] and "| cached" in lines["csrnet (blind)"]
    assert "| resumed" in lines["transfer"]
    assert json.loads(rec_path.read_text())["status"] == "finished"


def test_gain_over_the_blind_twin_is_the_paired_per_image_difference(swept):
    runs, _, _ = swept
    model = next(p.parent for p in runs.rglob("record.json") if p.parent.parent.name == "lab-stats+csrnet")
    twin = next(p.parent for p in runs.rglob("record.json") if p.parent.parent.name == "lab-stats+csrnet+blind")
    df = collect(runs)
    row = df[(df["enhancer"] == "csrnet")].iloc[0]
    for group in ("seen", "unseen"):
        assert row[f"gain_vs_blind:{group}"] == pytest.approx(_paired_mean(model, twin, group), abs=1e-9)
    text = render_markdown(leaderboard_tables(df))
    assert "gain ↑ seen" in text and "gain ↑ unseen" in text


def test_ablate_reports_the_gram_loss_delta_with_its_ci(tmp_path):
    out_dir = tmp_path / "abl"
    code, out = invoke(["ablate", "--encoder", "angular", "--enhancer", "sa", "--set", "loss.gram=0,0.01",
                        "--steps", "3", "--base-set", "eval.max_photos=3", "--base-set", "train.threads=1",
                        "--seeds", "0,1", "--runs-dir", str(tmp_path / "runs"), "--out", str(out_dir)])
    assert code == 0, out
    row = next(ln for ln in out.splitlines() if ln.startswith("| loss.gram=0.01"))
    assert row.count("[") == 2  # an interval over seeds and scenes for seen and for unseen users
    assert "0 (same config)" in next(ln for ln in out.splitlines() if ln.startswith("| loss.gram=0 "))
    data = json.loads(next(out_dir.glob("*.json")).read_text())
    gram = next(v for v in data["variants"] if v["change"] == "loss.gram=0.01")
    base_dirs = [Path(r["run_dir"]) for r in data["base"]]
    var_dirs = [Path(r["run_dir"]) for r in gram["runs"]]
    assert json.loads((var_dirs[0] / "config.json").read_text())["train"]["stages"][-1]["losses"]["gram"] == 0.01
    for group in ("seen", "unseen"):
        d = gram["delta"][group]
        assert d["ci"][0] <= d["mean"] <= d["ci"][1] and d["seeds"] == [2, 2] and d["paired_seeds"]
        per_seed = [_paired_mean(v, b, group) for v, b in zip(var_dirs, base_dirs, strict=True)]
        assert d["mean"] == pytest.approx(float(np.mean(per_seed)), abs=1e-9)
    assert list(out_dir.glob("*.md"))


def test_one_seed_gives_a_mean_and_no_verdict(swept):
    """The sweep ran one seed: its gain over the blind twin has no interval, and says why."""
    _, code, out = swept
    row = next(ln for ln in out.splitlines() if ln.startswith("| lab-stats") and "| csrnet " in ln)
    assert "(needs >= 2 seeds)" in row and "[" not in row.split("|")[-3]


def test_ablate_refuses_a_bad_value_before_training(tmp_path):
    code, out = invoke(["ablate", "--encoder", "angular", "--enhancer", "sa", "--set", "refs=0",
                        "--runs-dir", str(tmp_path / "runs"), *FAST[:2]])
    assert code != 0 and "refs" in out
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("record.json"))


# -- leaderboard statistics on synthetic records (fast) ------------------------------------------------
def _fake_run(root: Path, name: str, seed: int, psnr: np.ndarray, photos: np.ndarray, users: np.ndarray,
              version: str = "1") -> None:
    d = root / "p" / name / f"run-{seed}-v{version}"
    d.mkdir(parents=True)
    rec = {"schema_version": 1, "status": "finished", "run_key": f"{name}{seed}", "seed": seed, "blind": False,
           "protocol": {"name": "p", "version": 1, "eval_hash": "e", "train_hash": name, "ranking": True},
           "encoder": {"name": "enc"}, "enhancer": {"name": name, "configuration": "small"}, "overrides": [],
           "parameters": {"encoder": 0, "enhancer": 10}, "environment": {"device": "cpu"},
           "metrics": {"seen": {"psnr": {"mean": float(psnr.mean()), "ci": [0, 0]}}},
           "plugins": {"encoder:enc": {"version": "1"}, f"enhancer:{name}": {"version": version}}}
    (d / "record.json").write_text(json.dumps(rec))
    pd.DataFrame({"photo": photos, "user": users, "draw": 0, "seen": True, "psnr": psnr}).to_csv(d / "per_image.csv")


def test_runs_of_another_model_version_are_another_entry_never_extra_seeds(tmp_path):
    from piebench.config import resolve, run_key

    rng = np.random.default_rng(1)
    photos, users = np.repeat(np.arange(10), 2), np.tile(np.arange(2), 10)
    for seed in (0, 1):
        _fake_run(tmp_path, "net", seed, rng.normal(24, 1, photos.size), photos, users, version="1")
    _fake_run(tmp_path, "net", 0, rng.normal(27, 1, photos.size), photos, users, version="2")
    _fake_run(tmp_path, "other", 0, rng.normal(25, 1, photos.size), photos, users)
    [(_, table)] = leaderboard_tables(collect(tmp_path))
    rows = {(r.enhancer, r.versions): r.seeds for r in table.itertuples()}
    assert rows == {("net", "v1 / v1"): 2, ("net", "v1 / v2"): 1, ("other", "v1 / v1"): 1}
    # and a sweep never reuses a finished run of an older architecture: the version is in the key
    cfg = resolve("smoke", encoder="angular", enhancer="adain")
    assert cfg["versions"] == {"encoder": "1", "enhancer": "2"}
    older = {**cfg, "versions": {**cfg["versions"], "enhancer": "1"}}
    assert run_key(older) != run_key(cfg)
