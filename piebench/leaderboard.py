"""Results tables: one run's summary, and leaderboards over a runs directory.

Leaderboards group records by evaluation spec (protocol name, version and evaluation hash):
results from different specs are never mixed in one table, and the newest protocol version
comes first. Within a table an entry (row) is one training recipe (``train_hash``, overrides
included) and one pair of model versions; its seeds give mean +- 95% CI (t-interval). Seeds
of one entry from different commits are flagged (refused with ``strict``). Oracles, baselines
and blind twins are a separate "bounds and baselines" table: never ranked, never starred.

Verdicts come from each run's ``per_image.csv`` through :mod:`piebench.verdicts` (seeds and
test scenes are the samples): the entries tied with the best PSNR (``*``), the table's minimum
detectable effect and A/A false-positive rate, the oracles' encoder gaps, the gain over the
blind twin. MP/s comes from the bench records in ``<runs>/bench``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from .benchfiles import iter_bench_records
from .columns import LEADERBOARD_DIAGNOSTICS, RUN_TABLE_DIAGNOSTICS, Column, display_columns, metric_keys
from .errors import UsageError
from .hashing import canonical_hash
from .plugins import get_registry
from .runs import iter_records
from .verdicts import (
    ITEM_KEYS,
    blind_gain,
    calibration_notes,
    load_per_image,
    oracle_gaps,
    paired_delta,
    table_items,
    ties_with_best,
)

__all__ = ["ITEM_KEYS", "board_columns", "blind_gain", "bound_kind", "collect", "leaderboard_tables", "load_per_image",
           "paired_delta", "render_markdown", "run_summary_table", "twin_key"]

_GROUPS = ("seen", "unseen")


def board_columns(df: pd.DataFrame | None = None) -> list[Column]:
    """The leaderboard's value columns: every installed metric, metrics of ``df``'s records that
    are not installed here, then the leaderboard's diagnostics (:mod:`piebench.columns`)."""
    present = [] if df is None else [c.split(":", 1)[0] for c in df.columns if c.endswith((":seen", ":unseen"))]
    return display_columns(LEADERBOARD_DIAGNOSTICS, get_registry(), present)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _metric(group: dict, name: str) -> dict | None:
    value = group.get(name)
    return value if isinstance(value, dict) and "mean" in value else None


def run_summary_table(record: dict) -> str:
    """The table ``piebench run`` prints: one row per user group, CIs where computed; a column per
    metric the run computed (or found unavailable), headed by its registered label and direction."""
    metrics = record.get("metrics", {})
    proto = record["protocol"]
    title = (f"{record['encoder']['name']} + {record['enhancer']['name']}{' (blind)' if record.get('blind') else ''}"
             f" on {proto['name']} v{proto['version']}, seed {record['seed']}")
    if not proto.get("ranking", True):
        title += "  [sanity check, not a ranking]"
    unavailable = metrics.get("unavailable", {})
    computed = metric_keys(metrics.get(g) for g in ("seen", "unseen", "all"))
    columns = [c for c in display_columns(RUN_TABLE_DIAGNOSTICS, get_registry(), computed)
               if c.key in computed or c.key in unavailable or not c.metric]
    rows = []
    for group in ("seen", "unseen", "all"):
        g = metrics.get(group)
        if not g:
            continue
        row = {"users": f"{group} ({g.get('n_users', '?')})"}
        for col in columns:
            m = _metric(g, col.key)
            row[col.heading] = _fmt(m["mean"], col.digits) if m else (
                "unavailable" if col.key in unavailable else "–")
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


# -- paired per-image statistics: piebench.verdicts -------------------------------------------
def twin_key(run_dir: str | Path, record: dict) -> str:
    """What a run and its blind twin share: the config without ``blind``, overrides and device."""
    cfg_path = Path(run_dir) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        cfg = {"encoder": record.get("encoder"), "enhancer": record.get("enhancer"), "seed": record.get("seed"),
               "eval_hash": record.get("protocol", {}).get("eval_hash"),
               "overrides": sorted(record.get("overrides", []))}
        return canonical_hash(cfg)
    cfg = {k: v for k, v in cfg.items() if k not in ("overrides", "device", "blind", "resolved") and not k.startswith("_")}
    if isinstance(cfg.get("encoder"), dict):  # the runner notes where the weights came from: not config
        cfg["encoder"] = {k: v for k, v in cfg["encoder"].items() if k != "pretrained_from"}
    return canonical_hash(cfg)


def _add_blind_gains(df: pd.DataFrame) -> None:
    """Fill ``gain_vs_blind:<group>`` from each run's blind twin where the record has none."""
    twins = df[df["blind"]]
    for idx, row in df[~df["blind"]].iterrows():
        match = twins[(twins["twin_key"] == row["twin_key"]) & (twins["eval_hash"] == row["eval_hash"])]
        if match.empty:
            continue
        gain = blind_gain(row["run_dir"], match.iloc[-1]["run_dir"])
        for group, ci in gain.items():
            col = f"gain_vs_blind:{group}"
            if col not in df or pd.isna(df.at[idx, col]):
                df.at[idx, col] = ci["mean"]


def throughput_lookup(runs_dir: str | Path, size: str = "1080p") -> dict[tuple[str, str, str], float]:
    """(enhancer, configuration, device) -> MP/s at ``size`` from the latest plain bench record
    (no amp, no compile, batch 1, encoder excluded)."""
    out = {}
    for rec in iter_bench_records(runs_dir):
        st = rec.get("settings", {})
        if st.get("amp") or st.get("compile") or st.get("batch", 1) != 1 or st.get("with_encoder"):
            continue
        for r in rec.get("results", []):
            if r.get("size") == size:
                dev = str(st.get("device", "cpu")).split(":")[0]
                out[(rec["enhancer"]["name"], rec["enhancer"]["configuration"], dev)] = float(r["mp_per_s"])
    return out


def _add_throughput(df: pd.DataFrame, runs_dir: str | Path) -> None:
    table = throughput_lookup(runs_dir)
    df["mp_s"] = [table.get((n, c, str(d).split(":")[0]), table.get((n, c, "cpu"), np.nan))
                  for n, c, d in zip(df["enhancer_name"], df["enhancer_configuration"], df["device"], strict=True)]


def model_versions_label(record: dict) -> str:
    """``"v1 / v2"``: the encoder's and the enhancer's registered versions in a run record."""
    plugins = record.get("plugins") or {}
    versions = [(plugins.get(f"{kind}:{record[kind]['name']}") or {}).get("version", "?")
                for kind in ("encoder", "enhancer")]
    return " / ".join(f"v{v}" for v in versions)


#: Bounds and baselines when the registry does not know a plugin (records of uninstalled plugins):
#: encoders that read the answer, enhancers that learn nothing per user.
FALLBACK_BOUNDS = {"encoder": {"oracle-id", "oracle-params"}, "enhancer": {"identity", "transfer"}}


def _declares(kind: str, name: str, role: str) -> bool:
    try:
        return get_registry().get(kind, name).role == role
    except UsageError:
        return name in FALLBACK_BOUNDS[kind]


def bound_kind(record: dict) -> str:
    """Why a run is a bound or baseline ("blind twin", "oracle", "baseline"), or "" for a ranked model.

    Oracle encoders register ``role="oracle"``, baseline enhancers ``role="baseline"``; plugins the registry does not know fall back to :data:`FALLBACK_BOUNDS`.
    """
    if record.get("blind"):
        return "blind twin"
    if _declares("encoder", record["encoder"]["name"], "oracle"):
        return "oracle"
    if _declares("enhancer", record["enhancer"]["name"], "baseline"):
        return "baseline"
    return ""


def collect(runs_dir: str | Path, protocol: str | None = None) -> pd.DataFrame:
    """One row per finished record under ``runs_dir`` (optionally one protocol)."""
    rows = []
    base_keys = [c.key for c in board_columns()]  # the registry's columns: the same for every record
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
            "overrides": ", ".join(rec.get("overrides", [])), "git_commit": rec.get("git_commit") or "unknown",
            "seed": rec["seed"], "run_dir": str(run_dir), "bound": bound_kind(rec),
            "params": sum((rec.get("parameters") or {}).values()) or None,
            "blind": bool(rec.get("blind")), "twin_key": twin_key(run_dir, rec),
            "enhancer_name": rec["enhancer"]["name"],
            "enhancer_configuration": rec["enhancer"].get("configuration", ""),
            "device": (rec.get("environment") or {}).get("device", "cpu"),
            "model_versions": model_versions_label(rec),
        }
        groups = {group: rec.get("metrics", {}).get(group) or {} for group in _GROUPS}
        keys = dict.fromkeys([*base_keys, *metric_keys(groups.values())])
        for group, g in groups.items():
            for key in keys:
                m = _metric(g, key)
                row[f"{key}:{group}"] = m["mean"] if m else np.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        _add_blind_gains(df)
        _add_throughput(df, runs_dir)
    return df


def _mean_ci(values: pd.Series) -> tuple[float, float]:
    vals = values.dropna().to_numpy(dtype=float)
    if len(vals) == 0:
        return float("nan"), float("nan")
    if len(vals) == 1:
        return float(vals[0]), float("nan")
    from scipy import stats

    half = stats.t.ppf(0.975, len(vals) - 1) * vals.std(ddof=1) / math.sqrt(len(vals))
    return float(vals.mean()), float(half)


#: An entry (one table row): evaluation spec (the table) + training recipe + model versions.
ENTRY_KEYS = ["encoder", "enhancer", "train_hash", "model_versions"]


def _entry_row(runs: pd.DataFrame, show: dict[str, bool]) -> dict:
    """One entry's cells: mean ± 95% t-interval over its seeds per metric and user group."""
    first = runs.iloc[0]
    row = {"encoder": first["encoder"], "enhancer": first["enhancer"]}
    if show["versions"]:
        row["versions"] = first["model_versions"]
    if show["recipe"]:
        row["recipe"] = first["train_hash"][:8]
    if show["overrides"]:
        row["overrides"] = first["overrides"] or "–"
    mixed = runs["git_commit"].nunique() > 1
    row["seeds"] = f"{len(runs)} †" if mixed else len(runs)
    for c in board_columns(runs):
        for group in _GROUPS:
            col = f"{c.key}:{group}"
            if col not in runs or runs[col].isna().all():
                continue
            mean, half = _mean_ci(runs[col])
            row[f"{c.heading} {group}"] = _fmt(mean, c.digits) + ("" if math.isnan(half) else f" ± {_fmt(half, c.digits)}")
            row[f"_{c.key}:{group}"] = mean
    if runs["params"].notna().any():
        row["params"] = f"{runs['params'].dropna().iloc[0] / 1e6:.2f} M"
    if "mp_s" in runs and runs["mp_s"].notna().any():
        row["MP/s ↑"] = f"{runs['mp_s'].dropna().iloc[0]:.2f}"
    if first["bound"]:
        row["kind"] = first["bound"]
    return row


def _entries(part: pd.DataFrame, strict: bool) -> tuple[list[pd.DataFrame], dict[str, bool], list[str]]:
    """The table's entries (runs per row), which optional columns to show, and the entries whose
    seeds come from different commits (refused with ``strict``)."""
    entries = [runs.sort_values("seed") for _, runs in part.groupby(ENTRY_KEYS, sort=True)]
    pairs = part.groupby(["encoder", "enhancer"])
    show = {"versions": bool((pairs["model_versions"].nunique() > 1).any()),
            "recipe": bool((part.groupby(["encoder", "enhancer", "model_versions"])["train_hash"].nunique() > 1).any()),
            "overrides": bool(part["overrides"].astype(bool).any())}
    mixed = [f"{r['encoder'].iloc[0]}+{r['enhancer'].iloc[0]} ({', '.join(sorted(c[:8] for c in r['git_commit'].unique()))})"
             for r in entries if r["git_commit"].nunique() > 1]
    if strict and mixed:
        raise UsageError(f"--strict: {len(mixed)} entries have seeds from different commits: {'; '.join(mixed)}; "
                         "rerun them at one commit, or leave out --strict to see them flagged")
    return entries, show, mixed


def leaderboard_tables(df: pd.DataFrame, paired: bool = True, strict: bool = False) -> list[tuple[dict, pd.DataFrame]]:
    """(spec, ranked table) per evaluation spec, newest protocol version first.

    An entry (row) is one training recipe (``train_hash``, overrides included) and one pair of
    model versions; its seeds give mean ± 95% t-interval. Oracles, baselines and blind twins go
    to ``spec["bounds"]`` (a table shown for reference: never ranked, never starred). With
    ``paired`` (per_image.csv in the run directories) the ranked PSNR cells tied with the best end
    in ``*`` and ``spec["notes"]`` give the MDE and A/A false-positive rate (over seeds and
    scenes), ``spec["scenes"]`` the test scenes. ``strict`` refuses entries whose seeds come from
    different commits (otherwise flagged †).
    """
    out = []
    if df.empty:
        return out
    df = df.assign(_order=-df["version"].astype(int))
    for (proto, _, ehash), part in df.groupby(["protocol", "_order", "eval_hash"], sort=True):
        entries, show, mixed = _entries(part, strict)
        table = pd.DataFrame([_entry_row(runs, show) for runs in entries])
        cols = board_columns(part)
        spec = {"protocol": proto, "version": int(part["version"].iloc[0]), "eval_hash": ehash,
                "ranking": bool(part["ranking"].iloc[0])}
        notes = []
        if paired:
            notes, spec["scenes"], gaps = _verdicts(table, [list(r["run_dir"]) for r in entries],
                                                    [r["bound"].iloc[0] for r in entries], cols)
            if gaps:
                spec["bounds_notes"] = gaps
        if mixed:
            notes.append(f"† seeds from different commits: {'; '.join(mixed)} (`--strict` refuses them).")
        if "MP/s ↑" in table:
            notes.append("MP/s ↑: forward-pass megapixels per second at 1080p from `piebench bench` "
                         "(batch 1, no amp), on the run's device type.")
        if notes:
            spec["notes"] = notes
        bounds = table["kind"].notna() if "kind" in table else pd.Series(False, index=table.index)
        if bounds.any():
            spec["bounds"] = _finish(table[bounds], cols)
        out.append((spec, _finish(table[~bounds].drop(columns="kind", errors="ignore"), cols)))
    return out


def _finish(table: pd.DataFrame, columns: list[Column]) -> pd.DataFrame:
    """Sorted by seen PSNR, display columns in order, empty cells as "–", all-empty columns dropped."""
    if "_psnr:seen" in table:
        table = table.sort_values("_psnr:seen", ascending=False, kind="stable")
    order = ["kind", "encoder", "enhancer", "versions", "recipe", "overrides", "seeds",
             *(f"{c.heading} {g}" for c in columns for g in _GROUPS), "params", "MP/s ↑"]
    cols = [c for c in order if c in table.columns and table[c].notna().any()]
    cols += [c for c in table.columns if c not in cols and not c.startswith("_") and table[c].notna().any()]
    table = table[cols].reset_index(drop=True)
    return table.astype(object).where(table.notna(), "–")


def _verdicts(table: pd.DataFrame, run_dirs: list[list[str]], kinds: list[str], columns: list[Column],
              metric: str = "psnr") -> tuple[list[str], list[str], list[str]]:
    """Mark ``*`` ties with the best ranked entry (``kinds[i] == ""``) in ``table``; the notes,
    the test scenes and the oracles' encoder gaps."""
    header = next(c.heading for c in columns if c.key == metric)
    ranked = [not k for k in kinds]
    labels = [f"{e}+{h}" for e, h in zip(table["encoder"], table["enhancer"], strict=True)]
    notes, scenes, marked, gaps = [], set(), False, []
    for group in ("seen", "unseen"):
        col = f"{header} {group}"
        got = table_items(run_dirs, group, metric)
        if got is None or col not in table:
            continue
        idx, (cells, w, names, _) = got
        scenes |= set(names)
        rank = [ranked[i] for i in idx]
        ties = ties_with_best(cells, w, rank) if sum(rank) >= 2 else None
        for j in (ties or (None, []))[1]:
            table.at[idx[j], col] = f"{table.at[idx[j], col]} *"
            marked = True
        notes += calibration_notes(cells, w, rank, group, metric)
        gaps += oracle_gaps(cells, w, [labels[i] for i in idx], [table.at[i, "enhancer"] for i in idx],
                            [kinds[i] for i in idx], group, metric)
    head = []
    if marked:
        head.append("`*` best PSNR among the ranked entries of >= 2 seeds and every entry not distinguishable "
                    "from it: the 95% interval of the difference to the best, over seeds and test scenes, "
                    "includes 0. An entry of 1 seed gets no mark: a verdict needs >= 2 seeds.")
    return head + notes, sorted(scenes), gaps


def render_markdown(tables: list[tuple[dict, pd.DataFrame]]) -> str:
    """Markdown for ``piebench leaderboard``: per spec the ranked table, its notes, then its bounds."""
    if not tables:
        return "No finished runs found."
    parts = []
    for spec, table in tables:
        head = f"## {spec['protocol']} v{spec['version']} (eval spec {spec['eval_hash']})"
        if not spec["ranking"]:
            head += "\n\nA sanity check, not a ranking: differences here are within run-to-run noise."
        if spec.get("scenes"):
            names = f": {', '.join(spec['scenes'])}" if len(spec["scenes"]) <= 12 else ""
            head += f"\n\nRests on {len(spec['scenes'])} test scenes{names}."
        body = tabulate(table, headers="keys", tablefmt="github", showindex=False) if len(table) else "(no ranked entry)"
        notes = "".join(f"\n\n{n}" for n in spec.get("notes", []))
        bounds = ""
        if "bounds" in spec:
            bounds = ("\n\n### Bounds and baselines\n\nFor reference, never ranked or starred: oracles read the "
                      "answer, baselines and blind twins learn nothing per user.\n\n"
                      + tabulate(spec["bounds"], headers="keys", tablefmt="github", showindex=False)
                      + "".join(f"\n\n{n}" for n in spec.get("bounds_notes", [])))
        parts.append(head + "\n\n" + body + notes + bounds)
    return "\n\n".join(parts) + "\n"
