"""``piebench sweep --launcher local``: one submitit job (process) per (pair, seed).

A 2-pair x 2-seed sweep whose one job is SIGKILLed mid-run (a test plugin parks it at step 5,
after the checkpoint of step 4, and the test kills the process), then submitted again: exactly
four records, the killed run resumed from its checkpoint, and a leaderboard equal to the same
sweep run in one process. A second job is preempted (submitit's USR2) and requeued: it resumes
from its checkpoint in the same submission. Real processes, real signals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from piebench.cli import cli
from piebench.leaderboard import collect, leaderboard_tables, render_markdown

pytestmark = pytest.mark.slow

SWEEP = ["sweep", "--encoders", "lab-stats", "--enhancers", "transfer,csrnet", "--seeds", "0,1", "--steps", "8",
         "--set", "eval.max_photos=3", "--set", "train.threads=1", "--set", "train.checkpoint_every=2"]

PARK = '''
"""Test plugin: the first process to reach step $PARK_AT writes its pid to $PARK_FILE and waits."""
import os, time
from piebench import hookimpl


@hookimpl
def on_step_end(run, stage, step, losses):
    if step != int(os.environ.get("PARK_AT", "0")):
        return
    try:
        fd = os.open(os.environ["PARK_FILE"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()} {run.run_dir}".encode())
    os.close(fd)
    time.sleep(600)
'''


@pytest.fixture(scope="module")
def park_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("park")
    (root / "park_plugin.py").write_text(PARK)
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PIEBENCH_LOAD_PLUGINS": "park_plugin", "PARK_AT": "5", "PARK_FILE": str(root / "parked"),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return env, root / "parked"


def _sweep(runs: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "piebench", *SWEEP, "--runs-dir", str(runs), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> str:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before a job parked:\n{proc.stdout.read()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("no job reached the parking step")


def _records(runs: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(runs.rglob("record.json"))]


@pytest.fixture(scope="module")
def launched(tmp_path_factory, park_env):
    env, parked = park_env
    runs = tmp_path_factory.mktemp("launched")
    t0 = time.time()
    first = _sweep(runs, env, "--launcher", "local", "--max-parallel", "2")
    pid, run_dir = _wait_for(parked, first).split(" ", 1)
    os.kill(int(pid), signal.SIGKILL)  # the job dies mid-run, after its checkpoint of step 4
    out1 = first.communicate(timeout=600)[0]
    t1 = time.time()
    second = _sweep(runs, env, "--launcher", "local", "--max-parallel", "2")
    out2 = second.communicate(timeout=600)[0]
    t2 = time.time()
    print(f"\n[launcher local] first submission (one job killed) {t1 - t0:.1f} s, second {t2 - t1:.1f} s")
    return runs, Path(run_dir), (first.returncode, out1), (second.returncode, out2)


def test_killed_job_fails_the_first_submission_and_the_next_one_resumes_it(launched):
    runs, killed_dir, (code1, out1), (code2, out2) = launched
    assert code1 == 1 and "1 of 4 runs failed" in out1 and "ended without a result" in out1, out1
    assert out1.count(": ran") == 3
    assert code2 == 0, out2
    recs = _records(runs)
    assert len(recs) == 4 and all(r["status"] == "finished" for r in recs)  # exactly 4: nothing ran twice
    assert sorted((r["enhancer"]["name"], r["seed"]) for r in recs) == [("csrnet", 0), ("csrnet", 1),
                                                                      ("transfer", 0), ("transfer", 1)]
    resumed = json.loads((killed_dir / "record.json").read_text())
    assert resumed["resumed_from_step"] == 4 and resumed["compute"]["steps"] == resumed["compute"]["total_steps"]
    assert out2.count(": cached") == 3 and out2.count(": resumed") == 1, out2
    assert out2.count("submitted as local job") == 1  # finished runs need no job


def test_leaderboard_equals_the_in_process_sweep(launched, tmp_path):
    runs = launched[0]
    with threadpool_limits(1):
        res = CliRunner().invoke(cli, [*SWEEP, "--runs-dir", str(tmp_path)], catch_exceptions=True)
    assert res.exit_code == 0, res.output
    inline, local = (render_markdown(leaderboard_tables(collect(d, "smoke"))) for d in (tmp_path, runs))
    assert "lab-stats" in inline and local == inline
    def by_run(root: Path) -> dict:
        return {(r["enhancer"]["name"], r["seed"]): r["metrics"] for r in _records(root)}

    inline_metrics, local_metrics = by_run(tmp_path), by_run(runs)
    assert len(inline_metrics) == 4 and inline_metrics.keys() == local_metrics.keys()
    for key, metrics in inline_metrics.items():  # the killed-and-resumed run included
        for group in ("seen", "unseen"):
            assert local_metrics[key][group]["psnr"] == metrics[group]["psnr"], (key, group)


def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(park_env, tmp_path, monkeypatch):
    from piebench.config import resolve
    from piebench.launch import Launcher, SweepJob, make_executor

    env, _ = park_env
    parked = tmp_path / "parked"
    for key, value in {**env, "PARK_FILE": str(parked)}.items():
        monkeypatch.setenv(key, value)
    cfg = resolve("smoke", encoder="lab-stats", enhancer="csrnet", steps=8, seed=2,
                  sets=["eval.max_photos=3", "train.threads=1", "train.checkpoint_every=2"])
    job = make_executor(Launcher(kind="local"), tmp_path / "jobs").submit(SweepJob(cfg, tmp_path / "runs"))
    end = time.time() + 300
    while not (parked.exists() and parked.read_text().strip()) and time.time() < end and not job.done():
        time.sleep(0.2)
    assert parked.exists(), job.stderr()
    # Slurm's preemption warning: USR2 to the job's task; submitit calls SweepJob.checkpoint and requeues
    os.kill(int(parked.read_text().split()[0]), signal.SIGUSR2)
    result = job.result()
    assert result["status"] == "resumed"
    rec = json.loads((Path(result["run_dir"]) / "record.json").read_text())
    assert rec["status"] == "finished" and rec["resumed_from_step"] == 4
    assert "from step 4 of" in job.stderr() and "Requeued job" in (job.stdout() or "") + job.stderr()
