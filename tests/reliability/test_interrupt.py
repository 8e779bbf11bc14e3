"""Ctrl-C (SIGINT to the child): a clean stop with a checkpoint, an ``interrupted`` record, exit 130."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from rel_helpers import (
    RUN_ARGS,
    TOTAL_STEPS,
    Child,
    error_lines,
    events,
    find_run_dir,
    loadable_ckpt_steps,
    log_lines,
    loss_log,
    piebench,
    plugin_env,
    read_record,
    wait_until,
)


def _resume_and_compare(runs: Path, run_dir: Path, ev: Path, plugin_root: Path, reference_run: dict,
                        expect_from: int) -> None:
    res = piebench(*RUN_ARGS, "--quiet", "--resume", "--runs-dir", str(runs), env=plugin_env(plugin_root, ev))
    assert res.returncode == 0, res.stderr[-3000:]
    final = read_record(run_dir)
    assert final["status"] == "finished" and final["resumed_from_step"] == expect_from
    resumed_pid = [e for e in events(ev) if e["event"] == "start"][-1]["pid"]
    ran = [e["step"] for e in events(ev) if e["event"] == "step" and e["pid"] == resumed_pid]
    assert ran == list(range(expect_from + 1, TOTAL_STEPS + 1))
    assert loss_log(run_dir) == loss_log(reference_run["run_dir"])
    assert final["metrics"] == reference_run["record"]["metrics"]


def test_ctrl_c_mid_step_checkpoints_and_resumes_exactly(tmp_path: Path, plugin_root: Path, reference_run: dict):
    """SIGINT lands in the middle of step 15 (half a step after step 14 was logged)."""
    runs, ev = tmp_path / "runs", tmp_path / "events.jsonl"
    child = Child([*RUN_ARGS, "--quiet", "--runs-dir", str(runs)], plugin_env(plugin_root, ev), tmp_path / "c")
    run_dir = wait_until(child, lambda: (d := find_run_dir(runs)) is not None and log_lines(d) >= 14 and d,
                         "14 logged steps")
    last = [e for e in (run_dir / "train_log.jsonl").read_text().splitlines() if e][-1]
    step_time = float(re.search(r'"time_s": ([0-9.]+)', last).group(1))
    time.sleep(min(1.0, step_time / 2))  # mid-step: the batch is drawn, the weights not yet updated
    child.signal(signal.SIGINT)
    rc = child.wait(120)
    err = [ln for ln in error_lines(child.stderr()) if ln.startswith("piebench: error")]
    assert rc == 130, child.stderr()[-2000:]
    assert len(err) == 1 and "Traceback" not in child.stderr(), child.stderr()[-2000:]
    assert "interrupted" in err[0] and "--resume" in err[0]
    assert "stopping after this step" in child.stderr()  # the first Ctrl-C is acknowledged at once
    stopped = log_lines(run_dir)
    assert 14 <= stopped < TOTAL_STEPS
    steps = loadable_ckpt_steps(run_dir / "checkpoints")
    assert max(steps) == stopped  # a checkpoint of the last completed step: nothing lost
    rec = read_record(run_dir)
    assert rec["status"] == "interrupted" and "--resume" in rec["reason"]
    assert rec["compute"]["steps"] == stopped
    _resume_and_compare(runs, run_dir, ev, plugin_root, reference_run, stopped)


def test_ctrl_c_during_evaluation_resumes_without_retraining(tmp_path: Path, plugin_root: Path,
                                                            reference_run: dict):
    runs, ev = tmp_path / "runs", tmp_path / "events.jsonl"
    # The observer plugin holds the run in its on_eval_end hook (still inside evaluation) for 60 s,
    # so the signal lands during evaluation however fast the machine is.
    child = Child([*RUN_ARGS, "--runs-dir", str(runs)], plugin_env(plugin_root, ev, PIEBENCH_TEST_EVAL_HOLD="60"),
                  tmp_path / "c")
    wait_until(child, lambda: ev.exists() and '"eval_end"' in ev.read_text(), "evaluation's end hook",
               interval=0.01)
    child.signal(signal.SIGINT)
    rc = child.wait(120)
    run_dir = find_run_dir(runs)
    assert rc == 130, child.stderr()[-2000:]
    assert "Traceback" not in child.stderr()
    rec = read_record(run_dir)
    assert rec["status"] == "interrupted" and "--resume" in rec["reason"], rec.get("reason")
    assert max(loadable_ckpt_steps(run_dir / "checkpoints")) == TOTAL_STEPS
    _resume_and_compare(runs, run_dir, ev, plugin_root, reference_run, TOTAL_STEPS)


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it():
    """nohup / a script's background job: SIGINT stays ignored in training as in evaluation.

    (It used to be caught during training only, so such a run stopped on Ctrl-C in training
    but not in evaluation: the cause of this file's evaluation test failing under a pytest that
    was itself a background job.)
    """
    from piebench.train import _DeferredStop

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stop = _DeferredStop()
        stop.install()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == stop._handle  # not ignored: still caught
        stop.restore()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stop.install()
        assert signal.getsignal(signal.SIGINT) == stop._handle
        stop.restore()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, old)
