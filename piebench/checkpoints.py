"""Checkpoint files of a run directory, readable without the trainer (``enhance``, resume)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch


def latest_checkpoint(ckpt_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, or None; each damaged one skipped is a warning line."""
    for path in sorted(ckpt_dir.glob("ckpt-*.pt"), reverse=True):
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
