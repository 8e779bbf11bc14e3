"""Bad input to every CLI command: one line, exit 2 (usage) or 1 (runtime), no traceback unless
--debug, no partial output. (tests/integration/test_cli_errors.py covers the common ``run``
mistakes: unknown names, --refs 0, bad --loss weight, typo'd --set key, unknown schedule.)

Commands run in this process (fast); the cases that need a trained run use the session's
reference run, copied.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from rel_helpers import RUN_ARGS, error_lines, piebench, run_cli

RUN = ["run", "--encoder", "center", "--enhancer", "sa", "--steps", "2", "--quiet"]

# (argv without --runs-dir / outputs, expected exit code, words the one error line must hold)
CASES: dict[str, tuple[list[str], int, tuple[str, ...]]] = {
    # run
    "run --steps 0": ([*RUN[:-3], "--steps", "0", "--quiet"], 2, ("--steps", "at least 1")),
    "run --lr-encoder -1": ([*RUN, "--lr-encoder", "-1"], 2, ("--lr-encoder", "> 0")),
    "run --loss with no name": ([*RUN, "--loss", ":0.5"], 2, ("--loss", "NAME[:WEIGHT]")),
    "run --loss negative": ([*RUN, "--loss", "l1:-1"], 2, ("finite number >= 0",)),
    "run --loss inf": ([*RUN, "--loss", "l1:inf"], 2, ("finite number >= 0",)),
    "run --set without =": ([*RUN, "--set", "train.batch_users"], 2, ("KEY=VALUE",)),
    "run --set out of range": ([*RUN, "--set", "train.batch_users=0"], 2, ("train.batch_users", ">= 1")),
    "run --set wrong type": ([*RUN, "--set", "train.checkpoint_every=often"], 2, ("train.checkpoint_every",)),
    "run --set per_user 1": ([*RUN, "--set", "train.per_user=1"], 2, ("per_user", "at least 2")),
    "run --set with a newline": ([*RUN, "--set", "train.stages=\n"], 2, ("train.stages=\\n", "holds a list")),
    "run --set table to scalar": ([*RUN, "--set", "eval.data=5"], 2, ("eval.data=5", "holds a table")),
    "run --set threads text": ([*RUN, "--set", "train.threads=many"], 2, ("train.threads", "a number")),
    "run --refs too many": ([*RUN, "--refs", "1000"], 2, ("1000",)),
    "run --set empty key": ([*RUN, "--set", "train..refs=2"], 2, ("invalid key",)),
    "run --seed text": ([*RUN, "--seed", "abc"], 2, ("--seed",)),
    "run --seed -1": ([*RUN, "--seed", "-1"], 2, ("--seed -1", "out of range", "0 to 4294967295")),
    "run --seed 2**32": ([*RUN, "--seed", str(2**32)], 2, ("out of range",)),
    "run unknown config": ([*RUN, "--encoder-config", "huge"], 2, ("no configuration 'huge'", "small")),
    "run missing protocol file": ([*RUN, "--protocol", "nowhere/proto.toml"], 2, ("protocol file not found",)),
    "run missing dataset path": ([*RUN, "--dataset", "folder:/no/such/photos"], 2, ("/no/such/photos",)),
    "run unknown dataset": ([*RUN, "--dataset", "imagenet"], 2, ("unknown dataset 'imagenet'",)),
    "run max_photos 0": ([*RUN, "--set", "eval.max_photos=0"], 2, ("max_photos",)),
    "run --resume-from missing": ([*RUN, "--resume-from", "/no/such/run"], 2, ("--resume-from", "not a run directory")),
    # list / leaderboard / sweep / ablate / bench / data / enhance / report
    "list unknown kind": (["list", "widgets"], 2, ("widgets",)),
    "leaderboard missing dir": (["leaderboard", "--runs-dir", "/no/such/runs"], 2, ("/no/such/runs",)),
    "leaderboard bad format": (["leaderboard", "--format", "xlsx"], 2, ("xlsx",)),
    "sweep empty encoders": (["sweep", "--encoders", ",", "--enhancers", "sa"], 2, ("--encoders is empty",)),
    "sweep empty enhancers": (["sweep", "--encoders", "center", "--enhancers", " , "], 2, ("--enhancers is empty",)),
    "sweep negative seed": (["sweep", "--encoders", "center", "--enhancers", "sa", "--seeds", "0,-3"], 2,
                            ("--seeds -3", "out of range")),
    "data prepare empty users": (["data", "prepare", "fivek", "--layout", "official", "--root", "/no/fivek",
                                  "--users", ","], 2, ("--users is empty",)),
    "sweep bad seeds": (["sweep", "--encoders", "center", "--enhancers", "sa", "--seeds", "0,x"], 2, ("--seeds",)),
    "sweep duplicate seeds": (["sweep", "--encoders", "center", "--enhancers", "sa", "--seeds", "1,1"], 2,
                              ("duplicates",)),
    "sweep unknown encoder": (["sweep", "--encoders", "centre", "--enhancers", "sa"], 2,
                              ("unknown encoder 'centre'", "center")),
    "sweep --set typo": (["sweep", "--encoders", "center", "--enhancers", "sa", "--set", "train.batch_user=2"], 2,
                         ("unknown key",)),
    "ablate --set without =": (["ablate", "--encoder", "center", "--enhancer", "sa", "--set", "refs"], 2,
                               ("KEY=V1,V2",)),
    "bench unknown enhancer": (["bench", "--enhancer", "sa2"], 2, ("unknown enhancer 'sa2'",)),
    "bench bad size": (["bench", "--enhancer", "sa", "--sizes", "huge"], 2, ("huge",)),
    "bench batch 0": (["bench", "--enhancer", "sa", "--batch", "0"], 2, ("--batch",)),
    "data prepare unknown": (["data", "prepare", "imagenet", "--root", "/tmp"], 2, ("imagenet",)),
    "data prepare missing option": (["data", "prepare", "fivek", "--root", "/tmp"], 2,
                                    ("Missing option '--layout'", "official", "piebench data prepare --help")),
    "data prepare missing root": (["data", "prepare", "fivek", "--layout", "official", "--root", "/no/such/fivek"], 2,
                                  ("/no/such/fivek",)),
    "enhance missing input": (["enhance", "--run", "/no/such/run", "--refs", "/no/refs", "--input", "/no/in.jpg"],
                              2, ("/no/",)),
    "enhance tile too small": (["enhance", "--input", "x.jpg", "--tile", "8"], 2, ("--tile",)),
    "report missing run dir": (["report", "/no/such/run"], 2, ("/no/such/run",)),
}


def _check(code: int, err: str, expect_code: int, words: tuple[str, ...]) -> str:
    lines = error_lines(err)
    assert code == expect_code, f"exit {code}, expected {expect_code}: {err}"
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_catalogue(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # relative defaults (runs/, out dirs) land here
    argv, expect_code, words = CASES[case]
    extra = {"run": ["--runs-dir", str(tmp_path / "runs")], "sweep": ["--runs-dir", str(tmp_path / "runs")],
             "ablate": ["--runs-dir", str(tmp_path / "runs")], "bench": ["--runs-dir", str(tmp_path / "runs")],
             "enhance": ["--out", str(tmp_path / "out")], "report": ["--out", str(tmp_path / "out")]}
    code, _, err = run_cli([*argv, *extra.get(argv[0], [])])
    _check(code, err, expect_code, words)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and ".locks" not in p.parts]
    assert not leftovers, f"partial output: {leftovers}"


def test_debug_shows_the_traceback(tmp_path: Path):
    code, _, err = run_cli(["--debug", *RUN, "--encoder", "centre", "--runs-dir", str(tmp_path / "runs")])
    assert code == 2 and "Traceback" in err and "unknown encoder 'centre'" in err


def test_protocol_with_a_typo_in_a_key(tmp_path: Path):
    text = (Path(__file__).parents[2] / "piebench/protocols/smoke.toml").read_text()
    bad = tmp_path / "typo.toml"
    bad.write_text(text.replace("checkpoint_every =", "checkpiont_every ="))
    code, _, err = run_cli([*RUN, "--protocol", str(bad), "--runs-dir", str(tmp_path / "runs")])
    _check(code, err, 2, ("unknown key 'checkpiont_every'", "did you mean 'checkpoint_every'"))
    bad.write_text(text.replace('name = "smoke"', 'name = "smoke'))
    code, _, err = run_cli([*RUN, "--protocol", str(bad), "--runs-dir", str(tmp_path / "runs")])
    _check(code, err, 2, ("not valid TOML",))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("record.json"))


def test_protocol_file_that_is_not_utf8(tmp_path: Path):
    text = (Path(__file__).parents[2] / "piebench/protocols/smoke.toml").read_text()
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(text.replace('description = "', 'description = "caf\u00e9 ').encode("latin-1"))
    code, _, err = run_cli([*RUN, "--protocol", str(bad), "--runs-dir", str(tmp_path / "runs")])
    _check(code, err, 2, ("latin1.toml", "not UTF-8", "save it as UTF-8"))


def test_runs_dir_that_is_a_file(tmp_path: Path):
    target = tmp_path / "afile"
    target.write_text("x")
    code, _, err = run_cli([*RUN, "--runs-dir", str(target)])
    _check(code, err, 2, ("afile",))


# -- records and checkpoints -----------------------------------------------------------------------
@pytest.fixture
def copied_run(reference_run: dict, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the reference run's runs tree, its record marked unfinished: (runs, run_dir)."""
    src = reference_run["run_dir"]
    runs = tmp_path / "runs"
    dst = runs / src.relative_to(src.parents[2])
    shutil.copytree(src, dst)
    rec = json.loads((dst / "record.json").read_text())
    rec["status"] = "interrupted"
    (dst / "record.json").write_text(json.dumps(rec))
    return runs, dst


def test_record_from_a_newer_piebench(copied_run: tuple[Path, Path]):
    runs, run_dir = copied_run
    rec = json.loads((run_dir / "record.json").read_text())
    rec["schema_version"] = 99
    rec["piebench_version"] = "9.0"
    (run_dir / "record.json").write_text(json.dumps(rec))
    code, _, err = run_cli([*RUN_ARGS, "--quiet", "--resume-from", str(run_dir), "--runs-dir", str(runs)])
    _check(code, err, 2, ("piebench 9.0", "upgrade piebench"))
    code, out, err = run_cli(["leaderboard", "--runs-dir", str(runs)])  # skipped with a warning, not a crash
    assert code in (0, 2) and "Traceback" not in err and "upgrade piebench" in err


def test_corrupt_record_is_reported_not_crashed_on(copied_run: tuple[Path, Path]):
    runs, run_dir = copied_run
    (run_dir / "record.json").write_text('{"schema_version": 1, "status": "fini')
    code, _, err = run_cli([*RUN_ARGS, "--quiet", "--resume-from", str(run_dir), "--runs-dir", str(runs)])
    _check(code, err, 2, ("not valid JSON", "corrupt"))


def test_a_malformed_record_is_skipped_with_one_warning_naming_it(copied_run: tuple[Path, Path]):
    runs, run_dir = copied_run
    rec = json.loads((run_dir / "record.json").read_text())
    rec["metrics"] = [1, 2, 3]  # valid JSON, not a table
    (run_dir / "record.json").write_text(json.dumps(rec))
    code, _, err = run_cli(["leaderboard", "--runs-dir", str(runs)])
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and str(run_dir / "record.json") in warnings[0], err
    assert "'metrics' is not a table" in warnings[0] and "Traceback" not in err and "internal" not in err
    code, _, err = run_cli([*RUN_ARGS, "--quiet", "--resume-from", str(run_dir), "--runs-dir", str(runs)])
    _check(code, err, 2, ("malformed", "'metrics' is not a table"))


def test_every_checkpoint_corrupt_is_an_error_not_a_silent_restart(copied_run: tuple[Path, Path]):
    runs, run_dir = copied_run
    for path in (run_dir / "checkpoints").glob("ckpt-*.pt"):
        path.write_bytes(path.read_bytes()[:1000])  # truncated
    log_before = (run_dir / "train_log.jsonl").read_text()
    code, _, err = run_cli([*RUN_ARGS, "--quiet", "--resume", "--runs-dir", str(runs)])
    line = _check(code, err, 1, ("ckpt-0000030.pt", "cannot be loaded"))
    assert "--resume" in line or "delete" in line
    assert (run_dir / "train_log.jsonl").read_text() == log_before  # nothing overwritten


def test_checkpoint_of_another_configuration_is_refused(copied_run: tuple[Path, Path]):
    runs, run_dir = copied_run
    newest = max((run_dir / "checkpoints").glob("ckpt-*.pt"))
    state = torch.load(newest, map_location="cpu", weights_only=False)
    state["run_key"] = "0123456789abcdef"
    torch.save(state, newest)
    code, _, err = run_cli([*RUN_ARGS, "--quiet", "--resume", "--runs-dir", str(runs)])
    _check(code, err, 2, (newest.name, "another configuration"))


def test_checkpoint_of_another_model_is_refused(copied_run: tuple[Path, Path]):
    runs, run_dir = copied_run
    newest = max((run_dir / "checkpoints").glob("ckpt-*.pt"))
    state = torch.load(newest, map_location="cpu", weights_only=False)
    state["enhancer"] = {k + ".other": v for k, v in state["enhancer"].items()}  # another model's weights
    torch.save(state, newest)
    code, _, err = run_cli([*RUN_ARGS, "--quiet", "--resume", "--runs-dir", str(runs)])
    _check(code, err, 2, (newest.name, "enhancer"))


def test_resume_from_a_run_of_another_configuration(copied_run: tuple[Path, Path], tmp_path: Path):
    runs, run_dir = copied_run
    code, _, err = run_cli([*RUN, "--resume-from", str(run_dir), "--runs-dir", str(tmp_path / "other")])
    _check(code, err, 2, ("different configuration",))


def test_newest_checkpoint_damaged_falls_back_to_the_previous_one(copied_run: tuple[Path, Path]):
    """Not an error: a warning naming the damaged file, and the run resumes from the one before."""
    runs, run_dir = copied_run
    newest = max((run_dir / "checkpoints").glob("ckpt-*.pt"))
    newest.write_bytes(newest.read_bytes()[:4096])  # truncated
    res = piebench(*RUN_ARGS, "--quiet", "--resume", "--runs-dir", str(runs))
    assert res.returncode == 0, res.stderr[-2000:]
    warnings = [ln for ln in res.stderr.splitlines() if newest.name in ln]
    assert len(warnings) == 1 and "warning" in warnings[0], res.stderr
    assert json.loads((run_dir / "record.json").read_text())["resumed_from_step"] == 28


# -- report: that run, never its parents; never over its inputs or an existing page ------------------
def test_report_of_a_run_dir_reports_that_run_only(reference_run: dict, tmp_path: Path):
    src = reference_run["run_dir"]
    mine = tmp_path / "top" / "mine" / "run"  # outside runs/<protocol>/<pair>/
    other = tmp_path / "unrelated" / "p" / "q" / "run2"  # a finished run under the old search root
    shutil.copytree(src, mine)
    shutil.copytree(src, other)
    rec = json.loads((other / "record.json").read_text())
    rec["seed"] = 7
    (other / "record.json").write_text(json.dumps(rec))
    out = tmp_path / "report"
    code, _, err = run_cli(["report", str(mine), "--out", str(out), "--photos", "0"])
    assert code == 0, err
    html = (out / "index.html").read_text()
    assert str(other) not in html and str(mine) in html
    assert re.search(r"<td>\s*1\s*</td>", html)  # one seed: the named run only, not the unrelated one
    # the runs under --runs-dir join on request
    code, _, err = run_cli(["report", str(mine), "--runs-dir", str(tmp_path / "unrelated"), "--out",
                            str(tmp_path / "r2"), "--photos", "0"])
    assert code == 0, err
    assert re.search(r"<td>\s*2\s*</td>", (tmp_path / "r2" / "index.html").read_text())
    # an existing page is not replaced without --overwrite; never written inside a run
    before = (out / "index.html").read_bytes()
    code, _, err = run_cli(["report", str(mine), "--out", str(out), "--photos", "0"])
    _check(code, err, 2, ("already holds", "--overwrite"))
    assert (out / "index.html").read_bytes() == before
    code, _, err = run_cli(["report", str(mine), "--out", str(out), "--photos", "0", "--overwrite"])
    assert code == 0 and f"replaced 1 existing file(s): {out / 'index.html'}" in err, err
    listing = sorted(p.name for p in mine.rglob("*"))
    code, _, err = run_cli(["report", str(mine), "--out", str(mine / "report"), "--photos", "0"])
    _check(code, err, 2, ("never writes where it reads",))
    assert sorted(p.name for p in mine.rglob("*")) == listing
