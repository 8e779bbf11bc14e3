"""``piebench users-curve``: held-out users' PSNR against the number of training users."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from piebench.cli import cli, main
from piebench.data.fakefivek import make_fake_fivek
from piebench.errors import UsageError
from piebench.users_curve import parse_counts, users_curve

SMALL = ["eval.data.crops_per_scene=6", "eval.max_photos=4", "eval.data.unseen_users=3"]


def _quiet(msg: str) -> None:
    pass


def test_pie_synth_curve_trains_on_k_users_and_scores_the_same_held_out_users(tmp_path):
    curve = users_curve("smoke", "angular", "sa", [2, 5], seeds=[0], steps=20, sets=SMALL,
                        runs_dir=tmp_path / "runs", echo=_quiet)
    assert curve.held_out == ["u00", "u01", "u02"]  # never s02..s04, which only k=2 leaves out
    for k, (item,) in curve.items.items():
        df = pd.read_csv(item.run_dir / "per_image.csv")
        trained = sorted(df.loc[df["seen"], "user_name"].unique())
        assert trained == [f"s{i:02d}" for i in range(k)]
    # the paired delta is the mean per-image difference on the held-out users
    a, b = (pd.read_csv(curve.items[k][0].run_dir / "per_image.csv") for k in (5, 2))
    a, b = (d[d["user_name"].isin(curve.held_out)].set_index(["photo", "user_name", "draw"])["psnr"] for d in (a, b))
    delta = curve.points[1]["delta_vs_first"]
    assert delta["mean"] == pytest.approx(float((a - b.loc[a.index]).mean()), abs=1e-9)
    # one seed: the mean, and no verdict (training noise cannot be estimated from one seed)
    assert delta["verdict"] == "needs >= 2 seeds" and delta["ci"] is None and delta["paired_seeds"]
    assert curve.points[0]["psnr"]["mean"] == pytest.approx(float(b.mean()), abs=1e-9)


def test_cli_writes_table_json_and_plot_and_reuses_runs(tmp_path):
    args = ["users-curve", "--encoder", "angular", "--enhancer", "sa", "--counts", "3,2", "--steps", "10",
            "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")] + \
        [x for s in SMALL for x in ("--set", s)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "| 2 " in first.output.replace("|                2 ", "| 2 ")
    js = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert [p["count"] for p in js["points"]] == [2, 3] and js["held_out"] == ["u00", "u01", "u02"]
    png = next((tmp_path / "out").glob("*.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0 and second.output.count("cached") >= 2, second.output


def test_fivek_loeo_curve_holds_out_the_same_expert(tmp_path):
    root = make_fake_fivek(tmp_path / "src", "starenhancer")
    store = tmp_path / "store"
    assert CliRunner().invoke(cli, ["data", "prepare", "fivek", "--root", str(root), "--layout", "starenhancer",
                                    "--size", "16", "--out", str(store)]).exit_code == 0
    sets = ["eval.refs=2", "train.refs=2", "train.batch_users=2", "eval.max_photos=4", f"eval.data.root={store}"]
    curve = users_curve("fivek-loeo", "angular", "sa", [1, 2], seeds=[0], steps=4, sets=sets,
                        runs_dir=tmp_path / "runs", echo=_quiet)
    assert curve.held_out == ["expertA"]
    users = {k: sorted(pd.read_csv(it.run_dir / "per_image.csv")["user_name"].unique())
             for k, (it,) in curve.items.items()}
    assert users == {1: ["expertA", "expertB"], 2: ["expertA", "expertB", "expertC"]}
    assert all(np.isfinite(p["psnr"]["mean"]) for p in curve.points)


def _main_fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_input(tmp_path, capsys):
    with pytest.raises(UsageError, match="--counts expects"):
        parse_counts("2,x")
    with pytest.raises(UsageError, match="at least one count >= 1"):
        parse_counts("0")
    err = _main_fails(["users-curve", "--encoder", "angular", "--enhancer", "sa", "--counts", "2,40",
                       "--runs-dir", str(tmp_path / "runs")] + [x for s in SMALL for x in ("--set", s)], capsys)
    assert "train_users must be an integer in 1..12" in err
    assert not (tmp_path / "runs").exists()  # refused before any training
    folder = tmp_path / "photos"
    for sub in ("input", "alice", "bob"):
        (folder / sub).mkdir(parents=True)
    err = _main_fails(["users-curve", "--encoder", "angular", "--enhancer", "sa", "--counts", "1",
                       "--dataset", f"folder:{folder}", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert "cannot vary its number of training users" in err
    err = _main_fails(["users-curve", "--encoder", "angular", "--enhancer", "sa", "--counts", "2,4",
                       "--set", "eval.data.unseen_users=0", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert "holds no user out of training" in err and not (tmp_path / "runs").exists()
