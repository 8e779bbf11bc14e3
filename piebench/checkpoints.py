"""Checkpoint files of a run directory (``RUN/checkpoints/ckpt-<step>.pt``), readable and
writable without the trainer: the trainer saves through :func:`write_checkpoint`, resume and
``enhance`` read through :func:`latest_checkpoint` / :func:`resume_state`.

A checkpoint is written atomically (a reader sees the old file or the new one) and only the
newest two are kept, so a file damaged by a crash always leaves an older one to fall back to.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import torch

from .errors import RunFailed
from .runs import atomic_write_bytes

#: Checkpoints kept in a run directory (the newest; older ones are deleted after each write).
KEEP = 2


def checkpoint_path(ckpt_dir: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives (names sort by step)."""
    return Path(ckpt_dir) / f"ckpt-{int(step):07d}.pt"


def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """Every checkpoint file of ``ckpt_dir``, oldest first (loadable or not)."""
    return sorted(Path(ckpt_dir).glob("ckpt-*.pt"))


def write_checkpoint(ckpt_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Save ``state`` as the checkpoint of ``step`` atomically; keep the newest :data:`KEEP`."""
    path = checkpoint_path(ckpt_dir, step)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    for old in checkpoint_files(ckpt_dir)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, or None; each damaged one skipped is a warning line."""
    for path in reversed(checkpoint_files(ckpt_dir)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - a damaged file: fall back to the previous one
            reason = " ".join(str(err).split())[:160] or type(err).__name__
            print(f"piebench: warning: checkpoint {path} cannot be loaded ({type(err).__name__}: {reason}); "
                  f"trying the one before", file=sys.stderr)
            continue
        if isinstance(state, dict):
            state["_path"] = str(path)  # for messages; never saved back
        return path, state
    return None


def resume_state(run_dir: Path) -> dict[str, Any] | None:
    """The newest loadable checkpoint of ``run_dir`` (None: it has none yet); refuses to start
    over silently when it has checkpoints and none of them loads."""
    found = latest_checkpoint(Path(run_dir) / "checkpoints")
    files = checkpoint_files(Path(run_dir) / "checkpoints")
    if found is None and files:
        raise RunFailed(f"none of the {len(files)} checkpoints of {run_dir} can be loaded (newest {files[-1].name} "
                        f"cannot be loaded, see the warnings); move them away to train this run again from step 0, "
                        f"or start a new run without --resume")
    return found[1] if found else None
