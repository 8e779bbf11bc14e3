"""``piebench run --log tensorboard``: the run as TensorBoard event files in ``<run dir>/tensorboard``.

Per training step: every loss term (``loss/<term>``, ``loss/loss`` = the weighted total) and
every parameter group's learning rate (``lr/<group>``), the same numbers as ``train_log.jsonl``.
After evaluation: each metric's mean per user group (``eval/<group>/<metric>``), the figures the
evaluation wrote (control heat map, t-SNE, ... as images ``figures/<name>``), an image grid
(``image_grid``: per photo the input, then each user's target above the output under that
user's preference), and the preference vectors with their user names, user groups and photos
in the embedding projector. View with ``tensorboard --logdir runs``.

Inactive unless the run was started with ``--log tensorboard``. Needs the ``tensorboard``
package (``pip install 'piebench[tensorboard]'``). A tracker problem is a warning line; it never
fails a run.
"""

from __future__ import annotations

import base64
import io
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from piebench import hookimpl
from piebench.errors import UsageError
from piebench.report import image_grid

NAME = "tensorboard"
SUBDIR = "tensorboard"

#: run directory -> {"writer": SummaryWriter, "step": last global step}
_RUNS: dict[str, dict[str, Any]] = {}


def _check_installed(ctx: Any = None) -> str:
    """Refuse ``--log tensorboard`` in one line when the package is missing."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UsageError("--log tensorboard needs the tensorboard package: pip install 'piebench[tensorboard]' "
                         "(or pip install tensorboard)") from None
    return NAME


@hookimpl
def register_loggers(register):
    """Register the ``tensorboard`` tracker."""
    register(NAME, build=_check_installed, description="TensorBoard event files in <run dir>/tensorboard: "
             "losses, learning rates, metrics per user group, figures, image grid, preference embeddings",
             paper="TensorBoard (tensorflow/tensorboard)", configurations={}, version="1")


def _active(run: Any) -> bool:
    return NAME in (getattr(run, "loggers", None) or ())


def _warn(what: str, err: BaseException) -> None:
    print(f"piebench: warning: tensorboard logger: {what}: {type(err).__name__}: {err}", file=sys.stderr)


def _state(run: Any) -> dict[str, Any] | None:
    return _RUNS.get(str(run.run_dir))


@hookimpl
def on_run_start(run):
    """Open the writer; a resumed run drops events logged after its checkpoint by the dead attempt."""
    if not _active(run):
        return
    try:
        from torch.utils.tensorboard import SummaryWriter

        resumed = int(run.record.get("resumed_from_step") or 0)
        writer = SummaryWriter(log_dir=str(Path(run.run_dir) / SUBDIR), purge_step=resumed + 1 if resumed else None)
        _RUNS[str(run.run_dir)] = {"writer": writer, "step": resumed}
    except Exception as err:  # noqa: BLE001 - a tracker never fails a run
        _warn("could not open the event file", err)


@hookimpl
def on_step_end(run, stage, step, losses, lrs):
    """``loss/<term>``, ``lr/<group>`` and ``time/step_s`` at ``step``."""
    state = _state(run) if _active(run) else None
    if state is None:
        return
    writer = state["writer"]
    state["step"] = step
    for term, value in losses.items():
        if term == "time_s":
            writer.add_scalar("time/step_s", value, step)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            writer.add_scalar(f"loss/{term}", value, step)
    for group, lr in (lrs or {}).items():
        writer.add_scalar(f"lr/{group}", lr, step)


def _eval_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for group in ("seen", "unseen", "all"):
        for key, value in (metrics.get(group) or {}).items():
            mean = value.get("mean") if isinstance(value, dict) else value
            if isinstance(mean, int | float) and not isinstance(mean, bool) and math.isfinite(mean):
                out[f"eval/{group}/{key}"] = float(mean)
    return out


def _png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _grid_image(grid: dict[str, Any]) -> np.ndarray:
    """One picture of the report's image grid: per photo, input | targets (top) / outputs (bottom)."""
    def decode(uri: str | None) -> np.ndarray | None:
        return _png_array(base64.b64decode(uri.split(",", 1)[1])) if uri else None

    rows = []
    for row in grid["rows"]:
        inp = decode(row["input"])
        h, w = inp.shape[:2]
        blank = np.full((h, w, 3), 255, np.uint8)
        top = [inp] + [decode(t) if t else blank for t in row["targets"]]
        bottom = [blank] + [decode(o) if o else blank for o in row["outputs"]]
        rows += [np.concatenate([_fit(a, h, w) for a in top], 1), np.concatenate([_fit(a, h, w) for a in bottom], 1)]
    return np.concatenate(rows, 0)


def _fit(a: np.ndarray, h: int, w: int) -> np.ndarray:
    if a.shape[:2] == (h, w):
        return a

    return np.asarray(Image.fromarray(a).resize((w, h)))


@hookimpl
def on_eval_end(run, metrics):
    """Metrics per user group, the figures, the image grid and the preference embeddings."""
    state = _state(run) if _active(run) else None
    if state is None:
        return
    writer, step, run_dir = state["writer"], state["step"], Path(run.run_dir)
    for tag, value in _eval_scalars(metrics).items():
        writer.add_scalar(tag, value, step)
    for name, rel in (metrics.get("figures") or {}).items():
        try:
            if str(rel).lower().endswith(".png"):
                writer.add_image(f"figures/{name}", _png_array((run_dir / rel).read_bytes()), step, dataformats="HWC")
        except Exception as err:  # noqa: BLE001
            _warn(f"figure {name} not logged", err)
    try:
        writer.add_image("image_grid", _grid_image(image_grid(run_dir, photos=3, max_users=6)), step,
                         dataformats="HWC")
    except Exception as err:  # noqa: BLE001
        _warn("image grid not logged", err)
    try:
        _embeddings(writer, run_dir, step)
    except Exception as err:  # noqa: BLE001
        _warn("preference embeddings not logged", err)
    writer.flush()


def _embeddings(writer: Any, run_dir: Path, step: int) -> None:
    """The evaluation's preference vectors labelled by user name, user group and photo."""
    data = np.load(run_dir / "control.npz")
    vectors = np.asarray(data["vectors"], dtype=np.float32)
    if vectors.ndim != 2 or not len(vectors):
        return
    users = pd.read_csv(run_dir / "per_image.csv", usecols=["user", "user_name", "seen"]).drop_duplicates("user")
    name = dict(zip(users["user"], users["user_name"], strict=True))
    seen = dict(zip(users["user"], users["seen"], strict=True))
    meta = [[str(name.get(u, u)), "seen" if seen.get(u) else "unseen", str(p)]
            for u, p in zip(data["vector_users"].tolist(), data["vector_photos"].tolist(), strict=True)]
    writer.add_embedding(vectors, metadata=meta, metadata_header=["user", "group", "photo"], tag="preference",
                         global_step=step)


@hookimpl
def on_run_end(run, record):
    """Close the event file (finished, failed or interrupted)."""
    state = _RUNS.pop(str(run.run_dir), None)
    if state is None:
        return
    try:
        state["writer"].add_text("status", f"{record.get('status')}: {record.get('reason', '')}".strip(": "),
                                 state["step"])
        state["writer"].close()
    except Exception as err:  # noqa: BLE001
        _warn("could not close the event file", err)
