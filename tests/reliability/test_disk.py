"""Disk full and read-only runs directories: a clear one-line error before training, no run dir.

Real filesystems, not mocks: the tests mount small tmpfs filesystems (they run as root in CI;
``chmod`` would not do: root writes through it). Where mounting is not permitted each test runs
its fallback instead -- never a skip -- with a fault the kernel still produces without privileges:
writes into ``/dev/full`` (ENOSPC) for the write probe, the real free space for the space check,
``chmod`` (not root) or an existing read-only mount such as ``/sys`` (root) for the read-only
case, and ``prlimit(RLIMIT_FSIZE)`` on the running child (EFBIG) for the disk filling mid-run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from rel_helpers import (
    RUN_ARGS,
    Child,
    error_lines,
    find_run_dir,
    loadable_ckpt_steps,
    loss_log,
    piebench,
    plugin_env,
    read_record,
    wait_until,
)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, readonly: bool = False):
    """A tmpfs of ``size`` mounted at ``path``, or None where mounting is not allowed (the caller
    then runs its fallback)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    if os.environ.get("PIEBENCH_TEST_NO_MOUNT"):  # to exercise the fallbacks on a machine that can mount
        yield None
        return
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _probe_error(runs: Path, need_bytes: int = 0) -> str:
    """The one line ``probe_writable`` (run's pre-training check) gives for ``runs``, in this process."""
    from piebench.errors import RunFailed
    from piebench.runs import probe_writable

    with pytest.raises(RunFailed) as err:
        probe_writable(runs, need_bytes=need_bytes)
    assert not runs.is_dir() or all(p.is_symlink() for p in runs.iterdir())  # no probe file left behind
    return str(err.value)


def _read_only_dir() -> Path | None:
    """A directory on an existing read-only mount (e.g. /sys in a container), or None."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point, options = fields[4], fields[5].split(",")
        if "ro" in options and Path(point).is_dir() and not point.startswith("/proc"):
            return Path(point)
    return None


def _refused_before_training(res: subprocess.CompletedProcess, runs: Path, words: tuple[str, ...]) -> str:
    assert res.returncode == 1, res.stderr
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert not [p for p in runs.rglob("*") if p.is_dir() and p.name not in (".locks",)], "a run dir was created"
    return lines[0]


def test_full_disk_fails_the_write_probe(tmp_path: Path):
    with tmpfs(tmp_path / "mnt", "32k") as mnt:
        if mnt is None:  # fallback: the probe file is /dev/full, where every write fails with ENOSPC
            runs = tmp_path / "runs"
            runs.mkdir()
            (runs / f".write-probe-{os.getpid()}").symlink_to("/dev/full")
            line = _probe_error(runs)
            assert "cannot write to runs directory" in line and "No space left on device" in line
            return
        runs = mnt / "runs"
        res = piebench(*RUN_ARGS, "--quiet", "--runs-dir", str(runs))
        _refused_before_training(res, runs, ("cannot write to runs directory", "No space left on device"))


def test_too_little_space_for_the_checkpoints_is_refused_before_training(tmp_path: Path):
    with tmpfs(tmp_path / "mnt", "1m") as mnt:  # the 64 KiB probe fits; two ~4 MB checkpoints do not
        if mnt is None:  # fallback: this disk's real free space against a need larger than it
            import shutil

            runs = tmp_path / "runs"
            line = _probe_error(runs, need_bytes=shutil.disk_usage(tmp_path).free + 2**30)
            assert "MiB free" in line and "needs about" in line and "--runs-dir" in line
            return
        runs = mnt / "runs"
        res = piebench(*RUN_ARGS, "--quiet", "--runs-dir", str(runs))
        line = _refused_before_training(res, runs, ("MiB free", "needs about"))
        assert "--runs-dir" in line


def test_read_only_runs_directory_is_refused_before_training(tmp_path: Path):
    with tmpfs(tmp_path / "ro", "1m", readonly=True) as mnt:
        if mnt is None:  # fallback: chmod stops a non-root user; root gets an existing read-only mount
            if os.geteuid() != 0:
                (tmp_path / "locked").mkdir(mode=0o555)
                line = _probe_error(tmp_path / "locked" / "runs")
                assert "Permission denied" in line
                return
            ro = _read_only_dir()
            assert ro is not None, "no read-only mount to test against (and tmpfs cannot be mounted)"
            line = _probe_error(ro / "piebench-runs")
            assert "Read-only file system" in line
            return
        runs = mnt / "runs"
        res = piebench(*RUN_ARGS, "--quiet", "--runs-dir", str(runs))
        _refused_before_training(res, runs, ("Read-only file system",))


def test_disk_filling_up_mid_run_fails_cleanly_and_resumes(tmp_path: Path, plugin_root: Path, reference_run: dict):
    """Another program fills the disk after the step-8 checkpoint: the next write fails in one line,
    the checkpoints already written stay, and once space is freed ``--resume`` finishes the run."""
    with tmpfs(tmp_path / "mnt", "64m") as mnt:
        runs, ev = (mnt or tmp_path) / "runs", tmp_path / "events.jsonl"
        child = Child([*RUN_ARGS, "--quiet", "--runs-dir", str(runs)], plugin_env(plugin_root, ev), tmp_path / "c")
        run_dir = wait_until(child, lambda: (d := find_run_dir(runs)) and (d / "checkpoints/ckpt-0000008.pt").exists()
                             and d, "the step-8 checkpoint")
        filler = (mnt or tmp_path) / "filler"
        if mnt is not None:
            with open(filler, "wb", buffering=0) as fh:  # fill the disk to the last block
                for block in (1 << 20, 4096, 1):
                    with contextlib.suppress(OSError):
                        while fh.write(b"\0" * block):
                            pass
        else:  # fallback: the child may no longer write files over 64 KiB (EFBIG, "File too large")
            import resource

            resource.prlimit(child.proc.pid, resource.RLIMIT_FSIZE, (65536, 65536))
        rc = child.wait(300)
        stderr = child.stderr()
        assert rc == 1, stderr[-2000:]
        lines = error_lines(stderr)
        assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
        fault = "No space left on device" if mnt is not None else "File too large"
        assert fault in lines[0] and "--resume" in lines[0] and "writing the run failed" in lines[0], lines[0]
        assert "internal error" not in lines[0]
        kept = loadable_ckpt_steps(run_dir / "checkpoints")
        assert kept and max(kept) >= 8
        if mnt is None:  # (a full disk may not even take the small record.json)
            assert read_record(run_dir)["status"] == "failed"
        filler.unlink(missing_ok=True)
        res = piebench(*RUN_ARGS, "--quiet", "--resume", "--runs-dir", str(runs), env=plugin_env(plugin_root, ev))
        assert res.returncode == 0, res.stderr[-3000:]
        final = read_record(run_dir)
        assert final["status"] == "finished" and final["resumed_from_step"] == max(kept)
        assert loss_log(run_dir) == loss_log(reference_run["run_dir"])
        assert final["metrics"] == reference_run["record"]["metrics"]
