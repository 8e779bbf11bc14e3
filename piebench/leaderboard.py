"""Results tables: one run's summary, and leaderboards over a runs directory.

Leaderboards group records by evaluation spec (protocol name, version and evaluation hash):
results from different specs are never mixed in one table. Within a table, runs that differ
only by seed are one row: mean +- 95% CI over seeds (t-interval).

Paired statistics come from each run's ``per_image.csv`` (rows keyed by photo, user, draw):
the gain over the blind twin (same config with ``--blind``), the entries statistically
indistinguishable from the best PSNR (marked ``*``), and the table's minimum detectable effect
(from seed-to-seed differences). MP/s comes from the bench records in ``<runs>/bench``.
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
    ("steering", "steering ↑"), ("gain_vs_blind", "gain ↑"), ("user_recall", "user R@1 ↑"),
]
HIGHER_IS_BETTER = {"psnr": True, "psnr_q8": True, "ssim": True, "ssim_down": True, "delta_e": False,
                    "lpips": False, "sensitivity": True, "steering": True, "gain_vs_blind": True,
                    "user_recall": True, "identity_psnr": True}


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


# -- paired per-image statistics ----------------------------------------------------------------
#: Columns that identify one evaluated item in per_image.csv.
ITEM_KEYS = ("photo", "user", "draw")


def twin_key(run_dir: str | Path, record: dict) -> str:
    """What a run and its blind twin share: the config without ``blind``, overrides and device."""
    from .config import canonical_hash

    cfg_path = Path(run_dir) / "config.json"
    try:
        import json

        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        cfg = {"encoder": record.get("encoder"), "enhancer": record.get("enhancer"), "seed": record.get("seed"),
               "eval_hash": record.get("protocol", {}).get("eval_hash"),
               "overrides": sorted(record.get("overrides", []))}
        return canonical_hash(cfg)
    cfg = {k: v for k, v in cfg.items() if k not in ("overrides", "device", "blind") and not k.startswith("_")}
    if isinstance(cfg.get("encoder"), dict):  # the runner notes where the weights came from: not config
        cfg["encoder"] = {k: v for k, v in cfg["encoder"].items() if k != "pretrained_from"}
    return canonical_hash(cfg)


def load_per_image(run_dir: str | Path) -> pd.DataFrame | None:
    """A run's per-image rows (PSNR columns under the 100 dB convention), or None when it has none."""
    from .metrics.fidelity import cap_psnr

    path = Path(run_dir) / "per_image.csv"
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    for col in [c for c in df.columns if "psnr" in c and pd.api.types.is_numeric_dtype(df[c])]:
        df[col] = cap_psnr(df[col])  # records written before the cap may hold inf
    return df


def _group_rows(df: pd.DataFrame, group: str) -> pd.DataFrame:
    if group == "all" or "seen" not in df:
        return df
    seen = df["seen"].astype(str).str.lower().isin(["true", "1"])
    return df[seen] if group == "seen" else df[~seen]


def paired_delta(pairs: list[tuple[str | Path, str | Path]], metric: str = "psnr",
                 groups: tuple[str, ...] = ("seen", "unseen"), seed: int = 0) -> dict[str, dict[str, Any]]:
    """CI of the mean per-image difference ``a - b`` over run pairs ``(a, b)``, per user group.

    Items are paired by (photo, user, draw) within each pair and pooled over pairs (e.g. seeds);
    the bootstrap resamples photos. Groups without paired items are left out.
    """
    from .stats import paired_diff

    frames: dict[str, list[pd.DataFrame]] = {g: [] for g in groups}
    for i, (a, b) in enumerate(pairs):
        da, db = load_per_image(a), load_per_image(b)
        if da is None or db is None or metric not in da or metric not in db:
            continue
        for g in groups:
            ga, gb = _group_rows(da, g), _group_rows(db, g)
            m = ga[[*ITEM_KEYS, metric]].merge(gb[[*ITEM_KEYS, metric]], on=list(ITEM_KEYS), suffixes=("_a", "_b"))
            m = m[np.isfinite(m[f"{metric}_a"]) & np.isfinite(m[f"{metric}_b"])]
            if len(m):
                frames[g].append(m.assign(pair=i))
    out = {}
    for g, parts in frames.items():
        if not parts:
            continue
        m = pd.concat(parts, ignore_index=True)
        ci = paired_diff(m[f"{metric}_a"].to_numpy(float), m[f"{metric}_b"].to_numpy(float),
                         clusters=m["photo"].to_numpy(), seed=seed)
        out[g] = {"mean": ci.mean, "ci": [ci.lo, ci.hi], "n": ci.n, "n_photos": ci.n_clusters,
                  "excludes_zero": ci.excludes_zero}
    return out


def blind_gain(run_dir: str | Path, twin_dir: str | Path, metric: str = "psnr") -> dict[str, dict[str, Any]]:
    """Gain over the blind twin: model - twin per image, paired, bootstrap CI over photos."""
    return paired_delta([(run_dir, twin_dir)], metric)


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
    from .bench import iter_bench_records

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
            "blind": bool(rec.get("blind")), "twin_key": twin_key(run_dir, rec),
            "enhancer_name": rec["enhancer"]["name"],
            "enhancer_configuration": rec["enhancer"].get("configuration", ""),
            "device": (rec.get("environment") or {}).get("device", "cpu"),
            "model_versions": model_versions_label(rec),
        }
        for group in ("seen", "unseen"):
            g = rec.get("metrics", {}).get(group, {})
            for key, _ in COLUMNS:
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


def leaderboard_tables(df: pd.DataFrame, paired: bool = True) -> list[tuple[dict, pd.DataFrame]]:
    """(spec, table) per evaluation spec; rows aggregate seeds as mean ± CI.

    With ``paired`` (and per_image.csv files in the run directories) PSNR cells of the best
    entry and of every entry statistically indistinguishable from it end in ``*``, and
    ``spec["notes"]`` explains the marks and gives the table's minimum detectable effect.
    """
    out = []
    if df.empty:
        return out
    for (proto, version, ehash), part in df.groupby(["protocol", "version", "eval_hash"], sort=True):
        rows, run_dirs = [], []
        # runs of another architecture version are another entry, never extra seeds
        several = (part.groupby(["encoder", "enhancer"])["model_versions"].nunique() > 1).any()
        for (enc, enh, ovr, ver), runs in part.groupby(["encoder", "enhancer", "overrides", "model_versions"],
                                                       sort=True):
            row = {"encoder": enc, "enhancer": enh}
            if several:
                row["versions"] = ver
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
            if "mp_s" in runs and runs["mp_s"].notna().any():
                row["MP/s ↑"] = f"{runs['mp_s'].dropna().iloc[0]:.2f}"
            rows.append(row)
            run_dirs.append(list(runs.sort_values("seed")["run_dir"]))
        table = pd.DataFrame(rows)
        notes = []
        if paired and "run_dir" in part:
            notes = _mark_ties(table, run_dirs) + _mde_notes(run_dirs)
            if "MP/s ↑" in table:
                notes.append("MP/s ↑: forward-pass megapixels per second at 1080p from `piebench bench` "
                             "(batch 1, no amp), on the run's device type.")
        if "_psnr:seen" in table:
            table = table.sort_values("_psnr:seen", ascending=False)
        order = ["encoder", "enhancer", "versions", "overrides", "seeds",
                 *(f"{h} {g}" for _, h in COLUMNS for g in ("seen", "unseen")), "params", "MP/s ↑"]
        cols = [c for c in order if c in table.columns]
        cols += [c for c in table.columns if c not in cols and not c.startswith("_")]
        table = table[cols].reset_index(drop=True)
        table = table.astype(object).where(table.notna(), "–")
        spec = {"protocol": proto, "version": int(version), "eval_hash": ehash,
                "ranking": bool(part["ranking"].iloc[0])}
        if notes:
            spec["notes"] = notes
        out.append((spec, table))
    return out


def _row_items(dirs: list[str], group: str, metric: str = "psnr") -> pd.Series | None:
    """Per-item ``metric`` of one table row, averaged over its seeds, indexed by (photo, user, draw)."""
    parts = []
    for d in dirs:
        df = load_per_image(d)
        if df is None or metric not in df:
            return None
        g = _group_rows(df, group)
        parts.append(g.set_index(list(ITEM_KEYS))[metric])
    if not parts:
        return None
    joined = pd.concat(parts, axis=1, join="inner")
    return joined.mean(axis=1) if len(joined) else None


def _mark_ties(table: pd.DataFrame, run_dirs: list[list[str]], metric: str = "psnr") -> list[str]:
    """Append `` *`` to the PSNR cells tied with the best (paired per-image bootstrap over photos)."""
    from .stats import indistinguishable_from_best

    header = dict(COLUMNS)[metric]
    marked = False
    for group in ("seen", "unseen"):
        col = f"{header} {group}"
        if col not in table or len(table) < 2:
            continue
        series = {i: _row_items(d, group, metric) for i, d in enumerate(run_dirs)}
        series = {i: v for i, v in series.items() if v is not None and pd.notna(table.at[i, f"_{metric}:{group}"])}
        if len(series) < 2:
            continue
        aligned = pd.concat(series, axis=1, join="inner").dropna()
        aligned = aligned[np.isfinite(aligned).all(axis=1)]
        photos = aligned.index.get_level_values("photo").to_numpy()
        if len(np.unique(photos)) < 2:
            continue
        ties = indistinguishable_from_best({str(i): aligned[i].to_numpy(float) for i in aligned.columns},
                                           clusters=photos)
        for key, tie in ties.items():
            if tie.indistinguishable:
                table.at[int(key), col] = f"{table.at[int(key), col]} *"
                marked = True
    if not marked:
        return []
    return ["`*` best PSNR and every entry statistically indistinguishable from it: the paired 95% bootstrap "
            "CI (over photos) of the per-image difference to the best includes 0."]


def _mde_notes(run_dirs: list[list[str]], metric: str = "psnr") -> list[str]:
    """The minimum detectable effect per user group, from seed-to-seed per-image differences."""
    from .stats import minimum_detectable_effect

    notes = []
    for group in ("seen", "unseen"):
        mdes = []
        for dirs in run_dirs:
            if len(dirs) < 2:
                continue
            a, b = _row_items(dirs[:1], group, metric), _row_items(dirs[1:2], group, metric)
            if a is None or b is None:
                continue
            d = pd.concat([a, b], axis=1, join="inner").dropna()
            d = d[np.isfinite(d).all(axis=1)]
            photos = d.index.get_level_values("photo").to_numpy()
            if len(np.unique(photos)) >= 2:
                mdes.append(minimum_detectable_effect((d.iloc[:, 0] - d.iloc[:, 1]).to_numpy(float), photos))
        if mdes:
            notes.append(f"minimum detectable effect ({metric.upper()}, {group} users): {float(np.median(mdes)):.2f} dB "
                         f"between two single-seed runs (alpha 0.05, power 0.8; median over {len(mdes)} "
                         f"configurations of their seed-to-seed per-image differences)")
    if not notes:
        notes.append("minimum detectable effect: needs two seeds of one configuration")
    return notes


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
        body = tabulate(table, headers="keys", tablefmt="github", showindex=False)
        notes = "".join(f"\n\n{n}" for n in spec.get("notes", []))
        parts.append(head + "\n\n" + body + notes)
    return "\n\n".join(parts) + "\n"
