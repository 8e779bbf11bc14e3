"""The run record (``RUN/record.json``): one object owns its fields and its atomic writes.

:class:`RunRecord` is the only writer of a run's record during the run. Every change goes
through a method named for what happened (:meth:`~RunRecord.start`, :meth:`~RunRecord.set_speed`,
:meth:`~RunRecord.resumed_from`, :meth:`~RunRecord.add_train_time`, :meth:`~RunRecord.set_results`,
:meth:`~RunRecord.finish`), and :meth:`~RunRecord.write` replaces the file atomically (a reader,
or a crash, sees the old record or the new one, never half of one). Only rank 0 of a
``torchrun`` job writes; on other ranks the same calls change the record in memory only.

The file's layout is the one leaderboards and archived records (``leaderboards/records/``) read;
keys are added, never renamed (:data:`piebench.runs.SCHEMA_VERSION` says which layout).

Lifecycle hooks see :attr:`RunRecord.data`: the record as a plain, live ``dict`` (a plugin reads
``run.record["status"]``; notes a plugin or the core appends to ``run.record["notes"]`` are
written with the record).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from ._version import __version__
from .runs import (
    SCHEMA_VERSION,
    atomic_write_bytes,
    atomic_write_json,
    environment,
    git_commit,
    load_record,
    now,
)

#: What a run can end as (``finished`` records are the ones leaderboards rank).
END_STATUSES = ("finished", "failed", "interrupted")


class RunRecord:
    """A run's ``record.json``: its fields in :attr:`data`, written only by rank 0.

    ``path`` is where :meth:`write` puts it (None: nowhere); ``rank``
    is this process's rank (ranks > 0 never write).
    """

    def __init__(self, data: dict[str, Any], path: str | Path | None = None, *, rank: int = 0) -> None:
        self.data = data
        self.path = Path(path) if path is not None else None
        self.rank = int(rank)

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def new(cls, cfg: dict[str, Any], *, key: str, eval_hash: str, train_hash: str, plugins: dict[str, Any],
            device: str, path: str | Path | None = None, rank: int = 0) -> RunRecord:
        """The record of a fresh run of the resolved configuration ``cfg`` (nothing written yet).

        Tables taken from ``cfg`` are copies: changing the record never changes the configuration.
        """
        data = {
            "schema_version": SCHEMA_VERSION,
            "piebench_version": __version__,
            "run_key": key,
            "protocol": {**cfg["protocol"], "eval_hash": eval_hash, "train_hash": train_hash},
            "encoder": copy.deepcopy(cfg["encoder"]),
            "enhancer": copy.deepcopy(cfg["enhancer"]),
            "blind": cfg["blind"],
            "seed": cfg["seed"],
            "overrides": list(cfg["overrides"]),
            "plugins": copy.deepcopy(plugins),
            "git_commit": git_commit(),
            "environment": environment(device),
            "status": "running",
            "created": now(),
            "timings": {},
            "compute": {},
            "metrics": {},
        }
        return cls(data, path, rank=rank)

    @classmethod
    def load(cls, path: str | Path, *, rank: int = 0) -> RunRecord:
        """The record at ``path`` (UsageError when it is malformed or from a newer piebench)."""
        return cls(load_record(path), path, rank=rank)

    # -- what happens during a run -----------------------------------------------------------
    def start(self, *, notes: list[str], pretrained_from: str, parameters: dict[str, int]) -> None:
        """The run (re)starts: status ``running``, the build notes, the encoder's weights, sizes."""
        self.data["status"] = "running"
        self.data["notes"] = list(notes)
        self.data["encoder"]["pretrained_from"] = pretrained_from
        self.data["parameters"] = dict(parameters)

    def set_speed(self, speed: dict[str, Any]) -> None:
        """How the run trains: data store, kernel, processes, precision settings."""
        self.data["speed"] = dict(speed)

    def resumed_from(self, step: int) -> None:
        """The step training continues from (0: from scratch)."""
        self.data["resumed_from_step"] = int(step)

    def add_train_time(self, seconds: float) -> None:
        """Add ``seconds`` of training to ``timings.train_s`` (a resumed run adds up its sessions)."""
        timings = self.data.setdefault("timings", {})
        timings["train_s"] = round(timings.get("train_s", 0) + seconds, 3)

    def set_results(self, metrics: dict[str, Any], *, metric_variants: dict[str, str], manifest_hash: str | None,
                    eval_s: float) -> None:
        """The evaluation's summary, the conventions of its metrics, the manifest it used, its time."""
        self.data["metrics"] = metrics
        self.data["metric_variants"] = dict(metric_variants)
        self.data["manifest_hash"] = manifest_hash
        self.data.setdefault("timings", {})["eval_s"] = round(eval_s, 3)

    def finish(self, status: str, *, compute: dict[str, Any], reason: str | None = None) -> None:
        """End the run as ``status`` (with ``reason`` unless finished) and write the record.

        A write that fails (a full disk) is a warning line, so the error that ended the run is the
        one the user sees.
        """
        if status not in END_STATUSES:
            raise ValueError(f"status must be one of {END_STATUSES}, got {status!r}")
        self.data["status"] = status
        if reason:
            self.data["reason"] = reason
        self.data["finished" if status == "finished" else "stopped"] = now()
        self.data["compute"] = {**compute, "wall_s": round(sum(self.data.get("timings", {}).values()), 3)}
        self.write_or_warn()

    def write_or_warn(self) -> None:
        """:meth:`write`, where a failed write (a full disk) is a warning line, not an error."""
        try:
            self.write()
        except OSError as err:
            print(f"piebench: warning: could not update {self.path}: {err.strerror or err}", file=sys.stderr)

    # -- files -------------------------------------------------------------------------------
    @property
    def writes(self) -> bool:
        """True when this process writes the record (rank 0 with a path)."""
        return self.rank == 0 and self.path is not None

    def write(self) -> None:
        """Replace the file atomically with :attr:`data` (strict JSON); nothing on ranks > 0."""
        if self.writes:
            atomic_write_json(self.path, self.data)

    def snapshot(self) -> bytes | None:
        """The file's bytes as they are now (None: no file), for :meth:`restore`."""
        if self.path is None or not self.path.exists():
            return None
        return self.path.read_bytes()

    def restore(self, snapshot: bytes | None) -> None:
        """Put back the file a :meth:`snapshot` saw (a refused resume leaves the run as it was)."""
        if self.writes and snapshot is not None:
            atomic_write_bytes(self.path, snapshot)


def plugins_used(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``record.plugins``: ``"<kind>:<name>"`` -> plugin, plugin version, component version and
    paper of every component a run built (encoder, enhancer, dataset, each loss, each metric),
    from what :mod:`piebench.build` noted in ``resolved``."""
    entries = [("encoder", resolved.get("encoder")), ("enhancer", resolved.get("enhancer")),
               ("dataset", resolved.get("dataset"))]
    entries += [("loss", e) for e in resolved.get("losses", {}).values()]
    entries += [("metric", e) for e in resolved.get("metrics", {}).values()]
    return {f"{kind}:{e['name']}": {"plugin": e["plugin"], "plugin_version": e["plugin_version"],
                                    "version": e["version"], "paper": e["paper"]}
            for kind, e in entries if e}
