"""Two sweeps on one runs directory at once: a run key never runs twice at the same time (the
per-key lock), no record is lost or mangled, no pair is trained twice, the leaderboard reads them all.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from rel_helpers import Child, error_lines, events, find_run_dir, piebench, plugin_env, wait_until

TINY = ["--steps", "4", "--set", "train.threads=1", "--set", "eval.max_photos=1", "--set", 'eval.metrics=["psnr"]']
SWEEP = ["sweep", "--encoders", "center,angular", "--enhancers", "sa", *TINY]


def _intervals(evs: list[dict]) -> dict[str, list[tuple[float, float, int]]]:
    """Per run key: (start, end, pid) of every process that held it."""
    out: dict[str, list] = defaultdict(list)
    open_: dict[tuple[int, str], float] = {}
    for e in evs:
        if e["event"] == "start":
            open_[(e["pid"], e["key"])] = e["t"]
        elif e["event"] == "end":
            out[e["key"]].append((open_.pop((e["pid"], e["key"])), e["t"], e["pid"]))
    assert not open_, f"runs that started and never ended: {open_}"
    return out


def test_two_sweeps_at_once_share_the_work_without_clashing(tmp_path: Path, plugin_root: Path):
    runs, ev = tmp_path / "runs", tmp_path / "events.jsonl"
    env = plugin_env(plugin_root, ev)
    a = Child([*SWEEP, "--runs-dir", str(runs)], env, tmp_path / "a")
    b = Child([*SWEEP, "--runs-dir", str(runs)], env, tmp_path / "b")
    rc_a, rc_b = a.wait(900), b.wait(900)
    assert (rc_a, rc_b) == (0, 0), a.stderr()[-2000:] + b.stderr()[-2000:]
    for child in (a, b):  # each sweep reports both pairs as done (run, resumed or reused)
        rows = [ln for ln in child.stdout().splitlines() if ln.startswith("| ") and "| sa " in ln]
        assert len(rows) == 2 and not any("failed" in r for r in rows), child.stdout()

    spans = _intervals(events(ev))
    assert len(spans) == 2  # two run keys
    for key, held in spans.items():
        held.sort()
        for (_s1, e1, p1), (s2, _e2, p2) in zip(held, held[1:], strict=False):
            assert e1 <= s2, f"run key {key} ran in pids {p1} and {p2} at the same time"
    records = [json.loads(p.read_text()) for p in runs.rglob("record.json")]  # all parse: none mangled
    assert sorted(r["encoder"]["name"] for r in records) == ["angular", "center"]  # each pair trained once
    assert all(r["status"] == "finished" and r["metrics"] for r in records)

    res = piebench("leaderboard", "--runs-dir", str(runs), "--format", "csv")
    assert res.returncode == 0, res.stderr
    assert "center" in res.stdout and "angular" in res.stdout


def test_same_config_twice_at_once_fails_fast_without_a_second_run_dir(tmp_path: Path, plugin_root: Path):
    runs = tmp_path / "runs"
    args = ["run", "--encoder", "center", "--enhancer", "sa", *TINY, "--quiet", "--runs-dir", str(runs)]
    first = Child(args, plugin_env(plugin_root), tmp_path / "first")
    wait_until(first, lambda: find_run_dir(runs), "the first run's directory")
    res = piebench(*args, env=plugin_env(plugin_root))
    if first.alive():  # the usual case: the second process met the lock
        assert res.returncode == 1, res.stderr
        lines = error_lines(res.stderr)
        assert len(lines) == 1 and "another piebench process is running the same configuration" in lines[0]
    assert first.wait(600) == 0, first.stderr()[-2000:]
    dirs = [p for p in runs.glob("*/*/*") if p.is_dir()]
    assert len(dirs) == (1 if res.returncode else 2)
