"""SIGKILL at chosen moments, then ``--resume``: exactly the uninterrupted run's losses and metrics.

The parent watches the child's progress (loss-log lines, checkpoint files appearing via
inotify, the evaluation progress bar, ``per_image.csv``) and kills it at that point. The run
uses the center loss (learned centres with their own learning rate) and cosine schedules in
two stages, so a resume that misses any state (loss parameters, optimiser moments, scheduler,
sampler or torch RNG) changes the log.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from rel_helpers import (
    RUN_ARGS,
    STAGE1_STEPS,
    TOTAL_STEPS,
    Child,
    events,
    find_run_dir,
    kill_when_created,
    loadable_ckpt_steps,
    log_lines,
    loss_log,
    piebench,
    plugin_env,
    read_record,
    wait_until,
)


def _kill_in_stage(child: Child, runs: Path, lines: int) -> None:
    wait_until(child, lambda: (d := find_run_dir(runs)) is not None and log_lines(d) >= lines,
               f"{lines} logged steps")
    child.kill()


def kill_stage1(child: Child, runs: Path) -> None:
    """During step 6 (encoder stage), after the step-4 checkpoint."""
    _kill_in_stage(child, runs, 5)


def kill_stage2(child: Child, runs: Path) -> None:
    """During step 15 (enhancer stage), after the step-12 checkpoint."""
    _kill_in_stage(child, runs, 14)


def kill_checkpoint_write(child: Child, runs: Path) -> None:
    """The moment the temporary file of the step-12 checkpoint is created (mid-write)."""
    ckpts = wait_until(child, lambda: (d := find_run_dir(runs)) is not None and (d / "checkpoints").is_dir()
                       and d / "checkpoints", "the checkpoints folder")
    kill_when_created(child, ckpts, lambda name: name.startswith(".ckpt-0000012.pt"))


def kill_evaluation(child: Child, runs: Path) -> None:
    """When the evaluation progress bar has done its first photo (of 3)."""
    wait_until(child, lambda: re.search(r"evaluate:[^\r\n]*\b[12]/3\b", child.stderr()), "evaluation progress",
               interval=0.002)
    child.kill()


def kill_record_write(child: Child, runs: Path) -> None:
    """The moment the final record's temporary file is created (after per_image.csv)."""
    run_dir = wait_until(child, lambda: find_run_dir(runs), "the run directory")
    seen_per_image = []

    def accept(name: str) -> bool:
        if name.startswith("per_image.csv"):
            seen_per_image.append(name)
        return bool(seen_per_image) and name.startswith(".record.json.")

    kill_when_created(child, run_dir, accept)


KILLS = {"stage1-step": kill_stage1, "stage2-step": kill_stage2, "checkpoint-write": kill_checkpoint_write,
         "evaluation": kill_evaluation, "record-write": kill_record_write}


@pytest.mark.parametrize("point", list(KILLS))
def test_sigkill_then_resume_matches_uninterrupted(point: str, tmp_path: Path, plugin_root: Path,
                                                   reference_run: dict):
    runs, ev = tmp_path / "runs", tmp_path / "events.jsonl"
    quiet = [] if point == "evaluation" else ["--quiet"]  # the evaluation bar is the progress we watch
    child = Child([*RUN_ARGS, *quiet, "--runs-dir", str(runs)], plugin_env(plugin_root, ev), tmp_path / "first")
    KILLS[point](child, runs)
    assert child.proc.returncode == -9, child.stderr()[-2000:]

    run_dir = find_run_dir(runs)
    killed_log = log_lines(run_dir)
    if point == "stage1-step":
        assert loss_log(run_dir)[-1]["stage"] == "encoder" and killed_log <= STAGE1_STEPS
    if point == "stage2-step":
        assert loss_log(run_dir)[-1]["stage"] == "enhancer" and killed_log < TOTAL_STEPS
    if point in ("evaluation", "record-write"):
        assert killed_log == TOTAL_STEPS
    # nothing corrupt: every checkpoint under its final name loads, the record parses
    steps = loadable_ckpt_steps(run_dir / "checkpoints")
    assert steps, "no checkpoint survived"
    before = read_record(run_dir)
    expect_from = max(steps)
    tmp_left = sorted(p.name for p in run_dir.rglob(".*.tmp"))
    print(f"\n[{point}] killed with {killed_log} steps logged; checkpoints {steps}; record {before['status']}; "
          f"temporary files left: {tmp_left}")
    if point == "checkpoint-write":
        assert 12 not in steps and expect_from == 8  # the half-written checkpoint is invisible

    if before["status"] == "finished":  # the kill landed after the final rename: nothing to redo
        assert point == "record-write"
        final = before
    else:
        assert before["status"] == "running"
        res = piebench(*RUN_ARGS, "--quiet", "--resume", "--runs-dir", str(runs), env=plugin_env(plugin_root, ev))
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"from step {expect_from} of {TOTAL_STEPS}" in res.stdout + res.stderr
        assert find_run_dir(runs) == run_dir  # resumed in place, no second run directory
        final = read_record(run_dir)
        assert final["status"] == "finished"
        assert final["resumed_from_step"] == expect_from
        resumed_pid = [e for e in events(ev) if e["event"] == "start"][-1]["pid"]
        ran = [e["step"] for e in events(ev) if e["event"] == "step" and e["pid"] == resumed_pid]
        assert ran == list(range(expect_from + 1, TOTAL_STEPS + 1))  # only what was left (none after training)
    assert loss_log(run_dir) == loss_log(reference_run["run_dir"])
    assert final["metrics"] == reference_run["record"]["metrics"]
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "per_image.csv"),
                                  pd.read_csv(reference_run["run_dir"] / "per_image.csv"))
    assert final["compute"]["steps"] == TOTAL_STEPS
    assert final["compute"]["images_seen"] == reference_run["record"]["compute"]["images_seen"]
    leftovers = [p.name for p in run_dir.rglob(".*.tmp")]
    assert not leftovers, f"stale temporary files after the resumed run: {leftovers}"
