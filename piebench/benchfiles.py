"""Bench records on disk: ``<runs>/bench/*.json``, written by ``piebench bench`` and read by the leaderboards.

A records-layer module (no models, no plugins), so that the leaderboard reads throughput
without importing the benchmark itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from .runs import atomic_write_json


def write_bench_record(record: dict[str, Any], runs_dir: str | Path = "runs") -> Path:
    """Write ``record`` atomically to ``<runs>/bench/<enhancer>-<config>-<device>-<stamp>.json``."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    s = record["settings"]
    dev = s["device"].replace(":", "")
    tags = "".join(f"-{t}" for t in (s["amp"], "cl" if s["channels_last"] else None,
                                     "compiled" if s["compile"] else None) if t)
    name = f"{record['enhancer']['name']}-{record['enhancer']['configuration']}-{dev}{tags}-{stamp}-{os.getpid()}.json"
    path = Path(runs_dir) / "bench" / name
    atomic_write_json(path, record)
    return path


def iter_bench_records(runs_dir: str | Path) -> list[dict[str, Any]]:
    """Every bench record under ``<runs>/bench`` (unreadable files skipped), oldest first."""
    out = []
    for path in sorted((Path(runs_dir) / "bench").glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("kind") == "bench":
            rec["_path"] = str(path)
            out.append(rec)
    return sorted(out, key=lambda r: r.get("created", ""))
