"""Sweeps beyond one process: one submitit job per (pair, seed), on this machine or a Slurm cluster.

``piebench sweep ... --launcher local`` runs each planned run as its own process on this machine
(submitit's ``LocalExecutor``, at most ``--max-parallel`` at a time); ``--launcher slurm``
submits each as a Slurm job (``SlurmExecutor``) with the requested GPUs, CPUs, memory, time and
partition. A job does what the in-process sweep does for one run (:func:`run_or_reuse`):
reuse a finished run of the same key, else resume the unfinished one from its latest
checkpoint, else start it, under the same per-key lock. So a job that was killed is resumed by
the next submission of the same sweep, and two sweeps sharing a runs directory never train the
same configuration twice at once.

Preemption: Slurm signals the job (``USR2``, ``signal_delay_s`` before the end); submitit calls
:meth:`SweepJob.checkpoint`, which requeues the same job, and the requeued attempt resumes from
the run's latest checkpoint (every ``train.checkpoint_every`` steps). A job asking for several
GPUs trains under ``torchrun --standalone --nproc-per-node N`` inside the job.

Job logs: ``<runs dir>/.submitit/<job id>_*.out|err``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config as C
from .errors import PiebenchError, RunFailed, UsageError
from .runner import run_experiment
from .runs import find_runs, load_record

LAUNCHERS = ("local", "slurm")


@dataclass
class Launcher:
    """Where and with what each job of a sweep runs.

    kind: ``local`` or ``slurm``; gpus: GPUs per job (> 1 runs torchrun inside the job); cpus:
    CPUs per job; mem_gb: memory per job (Slurm); timeout_min: the job's time limit; partition,
    account, qos, constraint: Slurm placement; slurm_opts: further ``sbatch`` options
    (``KEY=VALUE``, e.g. ``exclude=node3``); max_parallel: jobs at once (local: default the CPU
    count divided by ``cpus``; Slurm: all are submitted, the scheduler queues them); folder:
    where submitit keeps job files and logs (default ``<runs dir>/.submitit``).
    """

    kind: str = "local"
    gpus: int = 0
    cpus: int = 1
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    slurm_opts: dict[str, str] = field(default_factory=dict)
    max_parallel: int | None = None
    folder: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in LAUNCHERS:
            raise UsageError(f"--launcher {self.kind}: choose one of {', '.join(LAUNCHERS)}")
        if self.gpus < 0 or self.cpus < 1 or self.timeout_min < 1 or (self.max_parallel is not None
                                                                          and self.max_parallel < 1):
            raise UsageError("--gpus-per-job must be >= 0, --cpus-per-job, --timeout-min and --max-parallel >= 1")

    def check_available(self) -> None:
        """A UsageError when this launcher cannot work here (Slurm's commands missing)."""
        if self.kind == "slurm" and (shutil.which("srun") is None or shutil.which("sbatch") is None):
            raise UsageError("--launcher slurm needs Slurm's sbatch and srun on PATH: run the sweep on the "
                             "cluster's login node, or use --launcher local")


def parse_slurm_opts(items: list[str]) -> dict[str, str]:
    """``["exclude=node3", "mail-type=END"]`` -> {"exclude": "node3", "mail_type": "END"}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--slurm-opt expects KEY=VALUE (an sbatch option without its dashes, e.g. "
                             f"exclude=node3), got '{item}'")
        out[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    return out


def make_executor(launcher: Launcher, folder: str | Path) -> Any:
    """The submitit executor for ``launcher``, its parameters set (nothing is submitted)."""
    import submitit

    launcher.check_available()
    folder = Path(folder)
    if launcher.kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=launcher.timeout_min, gpus_per_node=launcher.gpus,
                                   tasks_per_node=1)
        return executor
    executor = submitit.SlurmExecutor(folder=folder)
    extra = dict(launcher.slurm_opts)
    for key in ("account", "qos", "constraint"):
        if getattr(launcher, key):
            extra[key] = getattr(launcher, key)
    params: dict[str, Any] = {"time": launcher.timeout_min, "nodes": 1, "ntasks_per_node": 1,
                              "cpus_per_task": launcher.cpus, "signal_delay_s": 120,
                              "job_name": "piebench"}
    if launcher.gpus:
        params["gpus_per_node"] = launcher.gpus
    if launcher.mem_gb:
        params["mem"] = f"{launcher.mem_gb:g}GB"
    if launcher.partition:
        params["partition"] = launcher.partition
    if extra:
        params["additional_parameters"] = extra
    executor.update_parameters(**params)
    return executor


def torchrun_argv(gpus: int, cfg_path: str | Path, runs_dir: str | Path) -> list[str]:
    """The command a job asking for ``gpus`` > 1 GPUs runs: torchrun over this module."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
            "-m", "piebench.launch", str(cfg_path), str(runs_dir)]


def run_or_reuse(cfg: dict, runs_dir: str | Path, progress: bool = False) -> tuple[str, Path, dict]:
    """Reuse a finished run of ``cfg``'s run key, else resume an unfinished one, else run it."""
    runs_dir = Path(runs_dir)
    key = C.run_key(cfg)
    existing = find_runs(runs_dir, key) if runs_dir.exists() else []
    for run_dir, rec in reversed(existing):
        if rec.get("status") == "finished":
            return "cached", run_dir, rec
    status = "resumed" if existing else "ran"
    run_dir, rec = run_experiment(cfg, runs_dir, resume=True, progress=progress)
    return status, run_dir, rec



class SweepJob:
    """One planned run as a submitit job: reuse, resume or run it; requeued on preemption."""

    def __init__(self, cfg: dict, runs_dir: str | Path, gpus: int = 0) -> None:
        self.cfg = copy.deepcopy(cfg)  # its own copy: the caller may go on changing the dict it passed
        self.runs_dir = str(runs_dir)
        self.gpus = gpus

    def __call__(self) -> dict[str, Any]:
        try:
            if self.gpus > 1:
                return self._torchrun()
            status, run_dir, _ = run_or_reuse(copy.deepcopy(self.cfg), self.runs_dir)
            return {"status": status, "run_dir": str(run_dir)}
        except PiebenchError as err:
            return {"status": "failed", "reason": str(err)}

    def _torchrun(self) -> dict[str, Any]:
        key = C.run_key(self.cfg)
        before = find_runs(Path(self.runs_dir), key) if Path(self.runs_dir).exists() else []
        for run_dir, rec in reversed(before):
            if rec.get("status") == "finished":
                return {"status": "cached", "run_dir": str(run_dir)}
        cfg_path = Path(self.runs_dir) / ".submitit" / f"config-{key}.json"
        cfg_path.parent.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(json.dumps(self.cfg))
        proc = subprocess.run(torchrun_argv(self.gpus, cfg_path, self.runs_dir), check=False)
        done = [d for d, rec in find_runs(Path(self.runs_dir), key) if rec.get("status") == "finished"]
        if proc.returncode != 0 or not done:
            return {"status": "failed", "reason": f"torchrun exited with {proc.returncode}; see the job's log"}
        return {"status": "resumed" if before else "ran", "run_dir": str(done[-1])}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Preempted or timed out: requeue this job; the next attempt resumes from the run's checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(SweepJob(self.cfg, self.runs_dir, self.gpus))


def _job_failure(job: Any, err: BaseException) -> str:
    text = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    last = text[-1].strip() if text else type(err).__name__
    if "has not produced any output" in str(err) or "UncompletedJobError" in type(err).__name__:
        last = f"job {job.job_id} ended without a result (killed or out of time)"
    return f"{last}; log {job.paths.stderr}; rerun the same command to resume it"


def run_jobs(pending: list[tuple[Any, dict]], launcher: Launcher, runs_dir: str | Path,
             echo: Callable[[str], None] = print, poll_s: float = 0.5) -> None:
    """Run each ``(SweepItem, cfg)`` as a job and fill in the items' status, run dir and record."""
    runs_dir = Path(runs_dir)
    todo = []
    for item, cfg in pending:  # a finished run needs no job (the job would only find it cached)
        done = [(d, r) for d, r in find_runs(runs_dir, C.run_key(cfg)) if r.get("status") == "finished"] \
            if runs_dir.exists() else []
        if done:
            item.status, item.run_dir, item.record = "cached", done[-1][0], done[-1][1]
            echo(f"piebench: {_tag(item)}: cached")
        else:
            todo.append((item, cfg))
    pending = todo
    if not pending:
        return
    runs_dir.mkdir(parents=True, exist_ok=True)
    executor = make_executor(launcher, launcher.folder or runs_dir / ".submitit")
    limit = launcher.max_parallel or (max(1, (os.cpu_count() or 1) // launcher.cpus) if launcher.kind == "local"
                                      else len(pending))
    queue = list(pending)
    running: list[tuple[Any, Any]] = []
    try:
        _drive(executor, queue, running, limit, launcher, runs_dir, echo, poll_s)
    except KeyboardInterrupt:
        ids = " ".join(str(job.job_id) for _, job in running)
        if launcher.kind == "local":
            # our processes: SIGTERM, which each job's controller forwards to its run, which
            # checkpoints at the end of its step and stops
            for _, job in running:
                proc = getattr(job, "_process", None)
                proc.send_signal(signal.SIGTERM) if proc is not None else job.cancel()
            err = RunFailed("sweep interrupted; its jobs were told to stop at their next step (checkpointed); "
                            "rerun the same command to resume them")
        else:
            err = RunFailed(f"sweep interrupted; its Slurm jobs keep running ({ids}; cancel with scancel {ids}); "
                            "rerun the same command later to collect them")
        err.exit_code = 130
        raise err from None


def _drive(executor: Any, queue: list, running: list, limit: int, launcher: Launcher, runs_dir: Path,
           echo: Callable[[str], None], poll_s: float) -> None:
    while queue or running:
        while queue and len(running) < limit:
            item, cfg = queue.pop(0)
            job = executor.submit(SweepJob(cfg, runs_dir, launcher.gpus))
            echo(f"piebench: {_tag(item)}: submitted as {launcher.kind} job {job.job_id}")
            running.append((item, job))
        done = [(item, job) for item, job in running if job.done()]
        if not done:
            time.sleep(poll_s)
            continue
        for item, job in done:
            running.remove((item, job))
            try:
                result = job.result()
            except Exception as err:  # noqa: BLE001 - the job failed or was killed: say where its log is
                item.status, item.reason = "failed", _job_failure(job, err)
            else:
                item.status = result["status"]
                item.reason = result.get("reason", "")
                if result.get("run_dir"):
                    item.run_dir = Path(result["run_dir"])
                    item.record = load_record(item.run_dir / "record.json")
            echo(f"piebench: {_tag(item)}: {item.status}{f' ({item.reason})' if item.reason else ''}")


def _tag(item: Any) -> str:
    return f"{item.encoder} + {item.enhancer}{' (blind)' if item.blind else ''}, seed {item.seed}"


def _worker(cfg_path: str, runs_dir: str) -> None:
    """Entry point of each torchrun process of a several-GPU job: errors are one line in the job's log."""
    cfg = json.loads(Path(cfg_path).read_text())
    try:
        run_experiment(cfg, runs_dir, resume=True, progress=False)
    except PiebenchError as err:
        print(f"piebench: error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


if __name__ == "__main__":  # python -m piebench.launch CONFIG.json RUNS_DIR (under torchrun)
    _worker(sys.argv[1], sys.argv[2])
