"""Disk full and read-only runs directories: a clear one-line error before training, no run dir.

Real filesystems, not mocks: the tests mount small tmpfs filesystems (they run as root in CI;
where mounting is not permitted they are skipped, and the unit-level fallbacks below still run).
``chmod`` would not do: root writes through it.
"""

from __future__ import annotations

import contextlib
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
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


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
        runs = mnt / "runs"
        res = piebench(*RUN_ARGS, "--quiet", "--runs-dir", str(runs))
        _refused_before_training(res, runs, ("cannot write to runs directory", "No space left on device"))


def test_too_little_space_for_the_checkpoints_is_refused_before_training(tmp_path: Path):
    with tmpfs(tmp_path / "mnt", "1m") as mnt:  # the 64 KiB probe fits; two ~4 MB checkpoints do not
        runs = mnt / "runs"
        res = piebench(*RUN_ARGS, "--quiet", "--runs-dir", str(runs))
        line = _refused_before_training(res, runs, ("MiB free", "needs about"))
        assert "--runs-dir" in line


def test_read_only_runs_directory_is_refused_before_training(tmp_path: Path):
    with tmpfs(tmp_path / "ro", "1m", readonly=True) as mnt:
        runs = mnt / "runs"
        res = piebench(*RUN_ARGS, "--quiet", "--runs-dir", str(runs))
        _refused_before_training(res, runs, ("Read-only file system",))


def test_disk_filling_up_mid_run_fails_cleanly_and_resumes(tmp_path: Path, plugin_root: Path, reference_run: dict):
    """Another program fills the disk after the step-8 checkpoint: the next write fails in one line,
    the checkpoints already written stay, and once space is freed ``--resume`` finishes the run."""
    with tmpfs(tmp_path / "mnt", "64m") as mnt:
        runs, ev = mnt / "runs", tmp_path / "events.jsonl"
        child = Child([*RUN_ARGS, "--quiet", "--runs-dir", str(runs)], plugin_env(plugin_root, ev), tmp_path / "c")
        run_dir = wait_until(child, lambda: (d := find_run_dir(runs)) and (d / "checkpoints/ckpt-0000008.pt").exists()
                             and d, "the step-8 checkpoint")
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as fh:  # fill the disk to the last block
            for block in (1 << 20, 4096, 1):
                with contextlib.suppress(OSError):
                    while fh.write(b"\0" * block):
                        pass
        rc = child.wait(300)
        stderr = child.stderr()
        assert rc == 1, stderr[-2000:]
        lines = error_lines(stderr)
        assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
        assert "No space left on device" in lines[0] and "--resume" in lines[0], lines[0]
        assert "internal error" not in lines[0]
        kept = loadable_ckpt_steps(run_dir / "checkpoints")
        assert kept and max(kept) >= 8
        filler.unlink()
        res = piebench(*RUN_ARGS, "--quiet", "--resume", "--runs-dir", str(runs), env=plugin_env(plugin_root, ev))
        assert res.returncode == 0, res.stderr[-3000:]
        final = read_record(run_dir)
        assert final["status"] == "finished" and final["resumed_from_step"] == max(kept)
        assert loss_log(run_dir) == loss_log(reference_run["run_dir"])
        assert final["metrics"] == reference_run["record"]["metrics"]
