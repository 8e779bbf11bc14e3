"""Run directories and their files, written atomically (temp file, fsync, rename).

Layout: ``<runs>/<protocol>/<encoder>+<enhancer>[+blind]/<run-id>/`` holding ``record.json``,
``config.json``, ``manifest.json`` (the frozen evaluation references), ``per_image.csv``,
``train_log.jsonl``, ``checkpoints/`` (:mod:`piebench.checkpoints`) and figures. The record's
fields and writes during a run are :class:`piebench.record.RunRecord`'s.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import jsonio
from .columns import archive_columns
from .errors import RunFailed, UsageError

#: Version of the record.json layout; a record with a larger number needs a newer piebench.
SCHEMA_VERSION = 1


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | Path, obj: Any, *, non_finite: str = "null") -> None:
    """Strict JSON (:func:`piebench.jsonio.dumps`), atomically: NaN / inf become null or are refused."""
    atomic_write_bytes(path, (jsonio.dumps(obj, non_finite=non_finite, indent=2) + "\n").encode())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{path} is not valid JSON ({err}); it may be corrupt") from None


def record_problem(rec: dict[str, Any]) -> str | None:
    """What is malformed in a record's structure (a field of the wrong type), or None."""
    for key in ("protocol", "encoder", "enhancer"):
        if not isinstance(rec.get(key), dict) or not isinstance(rec[key].get("name"), str):
            return f"'{key}' is not a table with a name"
    if isinstance(rec.get("seed"), bool) or not isinstance(rec.get("seed"), int):
        return "'seed' is not an integer"
    if not isinstance(rec.get("status", ""), str):
        return "'status' is not text"
    for key in ("metrics", "timings", "compute", "parameters", "environment", "plugins", "speed"):
        if rec.get(key) is not None and not isinstance(rec[key], dict):
            return f"'{key}' is not a table"
    for group in ("seen", "unseen"):
        value = (rec.get("metrics") or {}).get(group)
        if value is not None and not isinstance(value, dict):
            return f"'metrics.{group}' is not a table"
    if not isinstance(rec.get("overrides", []), list):
        return "'overrides' is not a list"
    return None


def load_record(path: str | Path) -> dict[str, Any]:
    """A record.json, refusing one written by a newer piebench or a malformed one (UsageError)."""
    rec = read_json(path)
    if not isinstance(rec, dict) or "schema_version" not in rec:
        raise UsageError(f"{path} is not a piebench run record (no schema_version)")
    if isinstance(rec["schema_version"], int) and rec["schema_version"] <= SCHEMA_VERSION:
        problem = record_problem(rec)
        if problem:
            raise UsageError(f"{path} is malformed: {problem}; it may be corrupt or edited by hand")
    if not isinstance(rec["schema_version"], int) or rec["schema_version"] > SCHEMA_VERSION:
        raise UsageError(f"{path} was written by piebench {rec.get('piebench_version', '?')} (record schema "
                         f"{rec['schema_version']} > {SCHEMA_VERSION}); upgrade piebench to read it")
    return rec


def iter_records(runs_dir: str | Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every readable record under ``runs_dir`` (unreadable ones are skipped with a warning)."""
    for path in sorted(Path(runs_dir).rglob("record.json")):
        try:
            yield path.parent, load_record(path)
        except UsageError as err:
            print(f"piebench: warning: skipping {err}", file=sys.stderr)


def git_commit() -> str | None:
    """The git commit of the piebench source tree, if it is a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: str) -> dict[str, Any]:
    """torch / CUDA / device / threads for the record, with the machine's cores and its 1-minute
    load average when the record starts (how shared the machine was: timings depend on it)."""
    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "threads": torch.get_num_threads(), "device": device, "cuda": torch.version.cuda,
           "cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def probe_writable(runs_dir: Path, need_bytes: int = 0) -> None:
    """Fail early (before training) when the runs directory cannot be written or lacks ``need_bytes``."""
    if not runs_dir.parent.exists() and not runs_dir.exists():
        raise UsageError(f"runs directory's parent does not exist: {runs_dir.parent}; create it or choose "
                         f"another --runs-dir")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        probe = runs_dir / f".write-probe-{os.getpid()}"
        with open(probe, "wb") as fh:
            fh.write(b"x" * 65536)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as err:
        raise RunFailed(f"cannot write to runs directory {runs_dir}: {err.strerror or err}; free space or "
                        f"choose another --runs-dir") from None
    free = shutil.disk_usage(runs_dir).free
    if free < need_bytes:
        raise RunFailed(f"only {free / 2**20:.1f} MiB free in runs directory {runs_dir}; this run needs about "
                        f"{need_bytes / 2**20:.0f} MiB (its checkpoints and results); free space or choose another "
                        f"--runs-dir")


def run_group_dir(runs_dir: Path, cfg: dict) -> Path:
    name = f"{cfg['encoder']['name']}+{cfg['enhancer']['name']}" + ("+blind" if cfg.get("blind") else "")
    return runs_dir / cfg["protocol"]["name"] / name


def new_run_id(cfg: dict, key: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-s{cfg['seed']}-{key[:8]}-{os.getpid()}"


def find_runs(runs_dir: Path, key: str) -> list[tuple[Path, dict]]:
    """Runs with run key ``key`` under ``runs_dir``, oldest first."""
    return [(d, r) for d, r in iter_records(runs_dir) if r.get("run_key") == key]


@contextlib.contextmanager
def run_lock(runs_dir: Path, key: str, wait: bool = False) -> Iterator[None]:
    """An exclusive lock per run key, so two processes never run the same config at once.

    When another process holds it: fail at once, or with ``wait`` block until it is released
    (sweeps and ``--resume`` then reuse or continue what the other process left).
    """
    lock_dir = runs_dir / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{key}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise RunFailed(f"another piebench process is running the same configuration (run key {key}); "
                                f"wait for it, add --resume to wait and reuse its result, or use another "
                                f"--runs-dir") from None
            print(f"piebench: another process is running the same configuration (run key {key}); waiting for it",
                  file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- choosing a run's directory (the caller holds the run key's lock) ------------------------------
def choose_run_dir(cfg: dict, runs_dir: Path, key: str, resume: bool, resume_from: str | None) -> tuple[Path, bool]:
    """A new run directory (created), or the one to resume (``--resume-from`` or the newest
    unfinished run of ``key`` with ``--resume``); the flag says which (True: resume it)."""
    if resume_from:
        run_dir = Path(resume_from)
        if not (run_dir / "record.json").exists():
            raise UsageError(f"--resume-from {resume_from}: not a run directory (no record.json)")
        rec = load_record(run_dir / "record.json")
        if rec.get("run_key") != key:
            raise UsageError(f"--resume-from {resume_from}: that run has a different configuration "
                             f"(run key {rec.get('run_key')} != {key}); use the same flags it was started with")
        return run_dir, True
    if resume:
        for run_dir, rec in reversed(find_runs(runs_dir, key)):
            if rec.get("status") != "finished":
                return run_dir, True
    run_dir = run_group_dir(runs_dir, cfg) / new_run_id(cfg, key)
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir, False


def finished_run(runs_dir: Path, key: str) -> tuple[Path, dict] | None:
    """The newest finished run of ``key``, looked up under the lock (so one that another process
    finished while this one waited for the lock counts), announced on stderr."""
    for run_dir, rec in reversed(find_runs(runs_dir, key)):
        if rec.get("status") == "finished":
            print(f"piebench: {run_dir} has already finished this configuration; reusing it (run without "
                  f"--resume for a new run)", file=sys.stderr)
            return run_dir, rec
    return None


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete half-written temporary files a killed process left (the caller holds the run lock)."""
    for path in [*run_dir.glob(".*.tmp"), *run_dir.glob("checkpoints/.*.tmp"), run_dir / "per_image.csv.tmp"]:
        with contextlib.suppress(OSError):
            path.unlink()


def archive_records(runs_dir: str | Path, dest: str | Path, protocol: str | None = None) -> list[Path]:
    """Copy finished records (record.json + a trimmed per_image.csv) under ``dest``, keeping the
    layout ``<protocol>/<encoder>+<enhancer>/<run-id>/``: small files a leaderboard can be
    regenerated from (``leaderboards/records/`` in the repository). The trimmed per_image.csv
    keeps the photo/user ids, every metric and the per-image diagnostics
    (:func:`piebench.columns.archive_columns`)."""
    runs_dir, dest = Path(runs_dir), Path(dest)
    written = []
    for run_dir, rec in iter_records(runs_dir):
        if rec.get("status") != "finished" or (protocol and rec["protocol"]["name"] != protocol):
            continue
        target = dest / run_dir.relative_to(runs_dir)
        keep = {k: v for k, v in rec.items() if k not in ("environment",)}
        keep["environment"] = {k: v for k, v in rec.get("environment", {}).items() if k != "platform"}
        atomic_write_json(target / "record.json", keep)
        per_image = run_dir / "per_image.csv"
        if per_image.exists():
            df = pd.read_csv(per_image)
            df = df[archive_columns(df.columns, rec.get("metric_variants") or ())]
            atomic_write_text(target / "per_image.csv", df.to_csv(index=False, float_format="%.5f"))
        written.append(target)
    return written
