"""Results tables: one run's summary, and leaderboards over a runs directory.

Leaderboards group records by evaluation spec (protocol name, version and evaluation hash):
results from different specs are never mixed in one table. Within a table, runs that differ
only by seed are one row: mean +- 95% CI over seeds (t-interval).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .runs import iter_records

#: (record metric key, column header) in display order; arrows say which way is better.
COLUMNS = [
    ("psnr", "PSNR ↑"), ("psnr_q8", "PSNR q8 ↑"), ("ssim", "SSIM ↑"), ("ssim_down", "SSIM down ↑"),
    ("delta_e", "dE ↓"), ("lpips", "LPIPS ↓"), ("sensitivity", "sensitivity ↑"),
    ("steering", "steering ↑"), ("gain_vs_blind", "gain ↑"), ("silhouette", "silhouette ↑"),
]
HIGHER_IS_BETTER = {"psnr": True, "psnr_q8": True, "ssim": True, "ssim_down": True, "delta_e": False,
                    "lpips": False, "sensitivity": True, "steering": True, "gain_vs_blind": True,
                    "silhouette": True, "identity_psnr": True}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _metric(group: dict, name: str) -> dict | None:
    value = group.get(name)
    return value if isinstance(value, dict) and "mean" in value else None


def run_summary_table(record: dict) -> str:
    """The table ``piebench run`` prints: one row per user group, CIs where computed."""
    from tabulate import tabulate

    metrics = record.get("metrics", {})
    proto = record["protocol"]
    title = (f"{record['encoder']['name']} + {record['enhancer']['name']}{' (blind)' if record.get('blind') else ''}"
             f" on {proto['name']} v{proto['version']}, seed {record['seed']}")
    if not proto.get("ranking", True):
        title += "  [sanity check, not a ranking]"
    unavailable = metrics.get("unavailable", {})
    rows = []
    for group in ("seen", "unseen", "all"):
        g = metrics.get(group)
        if not g:
            continue
        row = {"users": f"{group} ({g.get('n_users', '?')})"}
        for key, header in [("psnr", "PSNR ↑"), ("psnr_q8", "PSNR q8 ↑"), ("ssim", "SSIM ↑"),
                            ("ssim_down", "SSIM down ↑"), ("delta_e", "dE ↓"), ("lpips", "LPIPS ↓"),
                            ("identity_psnr", "identity PSNR")]:
            m = _metric(g, key)
            row[header] = _fmt(m["mean"], 4 if "ssim" in key or key == "lpips" else 2) if m else (
                "unavailable" if key in unavailable else "–")
        s = _metric(g, "sensitivity")
        row["sensitivity dB [95% CI]"] = f"{s['mean']:+.2f} [{s['ci'][0]:+.2f}, {s['ci'][1]:+.2f}]" if s else "–"
        st = _metric(g, "steering")
        if st:
            row["steering [95% CI]"] = f"{st['mean']:.2f} [{st['ci'][0]:.2f}, {st['ci'][1]:.2f}]"
        rows.append(row)
    lines = [title, tabulate(rows, headers="keys", tablefmt="github")]
    for name, why in unavailable.items():
        lines.append(f"{name.upper()}: unavailable: {why}")
    for alarm in metrics.get("alarms", []):
        lines.append(f"ALARM: {alarm}")
    return "\n".join(lines)


def collect(runs_dir: str | Path, protocol: str | None = None) -> pd.DataFrame:
    """One row per finished record under ``runs_dir`` (optionally one protocol)."""
    rows = []
    for run_dir, rec in iter_records(runs_dir):
        if rec.get("status") != "finished":
            continue
        proto = rec["protocol"]
        if protocol and proto["name"] != protocol:
            continue
        row = {
            "protocol": proto["name"], "version": proto["version"], "eval_hash": proto.get("eval_hash", ""),
            "train_hash": proto.get("train_hash", ""), "ranking": proto.get("ranking", True),
            "encoder": rec["encoder"]["name"], "enhancer": rec["enhancer"]["name"] + (" (blind)" if rec.get("blind") else ""),
            "overrides": ", ".join(o for o in rec.get("overrides", []) if not o.startswith("steps=")) or "",
            "seed": rec["seed"], "run_dir": str(run_dir),
            "params": sum((rec.get("parameters") or {}).values()) or None,
        }
        for group in ("seen", "unseen"):
            g = rec.get("metrics", {}).get(group, {})
            for key, _ in COLUMNS:
                m = _metric(g, key)
                row[f"{key}:{group}"] = m["mean"] if m else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_ci(values: pd.Series) -> tuple[float, float]:
    vals = values.dropna().to_numpy(dtype=float)
    if len(vals) == 0:
        return float("nan"), float("nan")
    if len(vals) == 1:
        return float(vals[0]), float("nan")
    from scipy import stats

    half = stats.t.ppf(0.975, len(vals) - 1) * vals.std(ddof=1) / math.sqrt(len(vals))
    return float(vals.mean()), float(half)


def leaderboard_tables(df: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """(spec, table) per evaluation spec; rows aggregate seeds as mean ± CI."""
    out = []
    if df.empty:
        return out
    for (proto, version, ehash), part in df.groupby(["protocol", "version", "eval_hash"], sort=True):
        rows = []
        for (enc, enh, ovr), runs in part.groupby(["encoder", "enhancer", "overrides"], sort=True):
            row = {"encoder": enc, "enhancer": enh}
            if part["overrides"].astype(bool).any():
                row["overrides"] = ovr or "–"
            row["seeds"] = len(runs)
            for key, header in COLUMNS:
                for group in ("seen", "unseen"):
                    col = f"{key}:{group}"
                    if col not in runs or runs[col].isna().all():
                        continue
                    mean, half = _mean_ci(runs[col])
                    digits = 4 if key in ("ssim", "ssim_down", "lpips", "silhouette") else 2
                    cell = _fmt(mean, digits) + ("" if math.isnan(half) else f" ± {_fmt(half, digits)}")
                    row[f"{header} {group}"] = cell
                    row[f"_{key}:{group}"] = mean
            if runs["params"].notna().any():
                row["params"] = f"{runs['params'].dropna().iloc[0] / 1e6:.2f} M"
            rows.append(row)
        table = pd.DataFrame(rows)
        if "_psnr:seen" in table:
            table = table.sort_values("_psnr:seen", ascending=False)
        table = table[[c for c in table.columns if not c.startswith("_")]].reset_index(drop=True)
        spec = {"protocol": proto, "version": int(version), "eval_hash": ehash,
                "ranking": bool(part["ranking"].iloc[0])}
        out.append((spec, table))
    return out


def render_markdown(tables: list[tuple[dict, pd.DataFrame]]) -> str:
    """Markdown for ``piebench leaderboard``."""
    from tabulate import tabulate

    if not tables:
        return "No finished runs found."
    parts = []
    for spec, table in tables:
        head = f"## {spec['protocol']} v{spec['version']} (eval spec {spec['eval_hash']})"
        if not spec["ranking"]:
            head += "\n\nA sanity check, not a ranking: differences here are within run-to-run noise."
        parts.append(head + "\n\n" + tabulate(table, headers="keys", tablefmt="github", showindex=False))
    return "\n\n".join(parts) + "\n"
