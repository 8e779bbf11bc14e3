"""The sweep launchers' executors, built and inspected without a cluster (nothing is submitted)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import submitit

from piebench.errors import UsageError
from piebench.launch import Launcher, SweepJob, make_executor, parse_slurm_opts, torchrun_argv


@pytest.fixture
def slurm_on_path(tmp_path, monkeypatch):
    """``sbatch`` and ``srun`` executables that do nothing: submitit only checks that they exist."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "srun"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_slurm_executor_carries_the_requested_resources(slurm_on_path, tmp_path):
    launcher = Launcher(kind="slurm", gpus=4, cpus=16, mem_gb=64, timeout_min=180, partition="gpu", account="lab",
                        qos="high", slurm_opts=parse_slurm_opts(["constraint=a100", "--exclude=node3"]))
    ex = make_executor(launcher, tmp_path / "jobs")
    assert isinstance(ex, submitit.SlurmExecutor)
    p = ex.parameters
    assert (p["gpus_per_node"], p["cpus_per_task"], p["mem"], p["time"], p["partition"]) == (4, 16, "64GB", 180, "gpu")
    assert p["nodes"] == 1 and p["ntasks_per_node"] == 1  # one task: torchrun starts the 4 processes
    assert p["additional_parameters"] == {"constraint": "a100", "exclude": "node3", "account": "lab", "qos": "high"}
    script = ex._make_submission_file_text("CMD", "uid")
    for line in ("#SBATCH --gpus-per-node=4", "#SBATCH --cpus-per-task=16", "#SBATCH --mem=64GB",
                 "#SBATCH --time=180", "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --qos=high",
                 "#SBATCH --constraint=a100", "#SBATCH --exclude=node3",
                 "#SBATCH --signal=USR2@120"):  # the preemption warning that triggers checkpoint + requeue
        assert line in script, line
    assert f"--output={tmp_path / 'jobs'}/%j_0_log.out" in script


def test_slurm_without_sbatch_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match="needs Slurm's sbatch and srun on PATH"):
        make_executor(Launcher(kind="slurm"), tmp_path)


def test_local_executor_and_bad_options(tmp_path):
    ex = make_executor(Launcher(kind="local", timeout_min=30), tmp_path)
    assert isinstance(ex, submitit.LocalExecutor)
    assert ex.parameters["timeout_min"] == 30 and ex.parameters["gpus_per_node"] == 0
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_slurm_opts(["exclusive"])
    with pytest.raises(UsageError, match="choose one of"):
        Launcher(kind="lsf")
    with pytest.raises(UsageError):
        Launcher(kind="local", cpus=0)


def test_several_gpus_train_under_torchrun_and_preemption_requeues_the_same_run(tmp_path):
    argv = torchrun_argv(4, tmp_path / "cfg.json", tmp_path / "runs")
    assert argv[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert argv[5:] == ["-m", "piebench.launch", str(tmp_path / "cfg.json"), str(tmp_path / "runs")]
    job = SweepJob({"seed": 3}, tmp_path / "runs", gpus=2)
    again = job.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert isinstance(again.function, SweepJob) and again.function.cfg == {"seed": 3}
    assert Path(again.function.runs_dir) == tmp_path / "runs" and again.function.gpus == 2


def test_job_options_without_a_launcher_are_refused_before_anything_runs(tmp_path):
    from click.testing import CliRunner

    from piebench.cli import cli

    runs = tmp_path / "runs"
    for args, says in ((["--partition", "gpu"], "Slurm options: add --launcher slurm"),
                       (["--launcher", "local", "--qos", "high"], "Slurm options: add --launcher slurm"),
                       (["--max-parallel", "3"], "--max-parallel: only with --launcher local or slurm")):
        res = CliRunner().invoke(cli, ["sweep", "--encoders", "lab-stats", "--runs-dir", str(runs), *args])
        assert res.exit_code == 2 and says in res.output, res.output
    assert not runs.exists()
