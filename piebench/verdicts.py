"""Verdicts between configurations, from their runs' per-image rows: over seeds and scenes.

A run's ``per_image.csv`` has one row per evaluated item, keyed by (photo, user, draw), with
the item's ``scene`` (its source photograph; crops of one photograph share it). Every
comparison of two configurations here -- leaderboard ties and MDE, ``ablate``, the
``users-curve`` deltas, the gain over the blind twin -- reduces each run to its mean per scene
over the items both sides share, and tests with :func:`piebench.stats.compare_cells` (seeds
and scenes are the units; see :func:`piebench.stats.crossed_variance` for why). With fewer than
2 seeds on a side the answer is "needs >= 2 seeds", never a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import UsageError
from .metrics.fidelity import cap_psnr
from .stats import Comparison, aa_false_positives, compare_cells, table_mde

#: Columns that identify one evaluated item in per_image.csv.
ITEM_KEYS = ("photo", "user", "draw")


def load_per_image(run_dir: str | Path) -> pd.DataFrame | None:
    """A run's per-image rows (PSNR columns under the 100 dB convention), or None when it has none."""
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


def group_rows(df: pd.DataFrame, group: str) -> pd.DataFrame:
    """The rows of user group ``seen``, ``unseen`` or ``all``."""
    if group == "all" or "seen" not in df:
        return df
    seen = df["seen"].astype(str).str.lower().isin(["true", "1"])
    return df[seen] if group == "seen" else df[~seen]


def run_items(run_dir: str | Path, group: str, metric: str = "psnr",
              keys: Sequence[str] = ITEM_KEYS) -> pd.DataFrame | None:
    """One run's items of ``group``: index ``keys``, columns ``scene`` and ``value``.

    Records without a ``scene`` column use the photo as its own scene. A non-finite value is an
    error (never silently dropped: that would bias the mean). None without per-image rows.
    """
    df = load_per_image(run_dir)
    if df is None or metric not in df or any(k not in df for k in keys):
        return None
    g = group_rows(df, group)
    values = g[metric].to_numpy(float)
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise UsageError(f"{Path(run_dir) / 'per_image.csv'}: {bad} non-finite {metric} values (e.g. an "
                         f"infinite PSNR); evaluate the run again with a piebench that caps PSNR")
    scene = g["scene"] if "scene" in g else g["photo"]
    return pd.DataFrame({"scene": scene.astype(str).to_numpy(), "value": values},
                        index=pd.MultiIndex.from_frame(g[list(keys)]))


def entry_cells(entries: Sequence[Sequence[pd.DataFrame]]) -> tuple[list[np.ndarray], np.ndarray, list[str], int] | None:
    """Per entry its (seeds x scenes) mean values on the items every run of every entry shares,
    the scenes' shares of those items, the scene names and the item count; None when no item is shared."""
    common = None
    for runs in entries:
        for r in runs:
            common = r.index if common is None else common.intersection(r.index)
    if common is None or len(common) == 0:
        return None
    scenes, inv = np.unique(entries[0][0].loc[common, "scene"].to_numpy(), return_inverse=True)
    counts = np.bincount(inv, minlength=len(scenes)).astype(float)
    cells = [np.stack([np.bincount(inv, weights=r.loc[common, "value"].to_numpy(), minlength=len(scenes)) / counts
                       for r in runs]) for runs in entries]
    return cells, counts / counts.sum(), [str(s) for s in scenes], len(common)


def compare_runs(runs_a: Sequence[str | Path], runs_b: Sequence[str | Path], *, metric: str = "psnr",
                 group: str = "seen", paired_seeds: bool = False,
                 keys: Sequence[str] = ITEM_KEYS) -> Comparison | None:
    """``a - b`` between two configurations given their runs (one per seed; with
    ``paired_seeds`` the i-th runs of both sides share a seed). None without shared items."""
    sides = [[run_items(d, group, metric, keys) for d in runs] for runs in (runs_a, runs_b)]
    if not all(sides) or any(r is None for side in sides for r in side):
        return None
    got = entry_cells(sides)
    if got is None:
        return None
    (a, b), w, _, n = got
    return compare_cells(a, b, w, items=n, paired_seeds=paired_seeds)


def paired_delta(pairs: list[tuple[str | Path, str | Path]], metric: str = "psnr",
                 groups: tuple[str, ...] = ("seen", "unseen"), paired_seeds: bool = True) -> dict[str, dict[str, Any]]:
    """``a - b`` per user group over run pairs ``(a, b)``, one pair per seed (the same seed on
    both sides: a recipe and one change of it). Items are paired by (photo, user, draw); the
    interval is over seeds and scenes (:class:`~piebench.stats.Comparison` as a dict, ``ci``
    None with fewer than 2 pairs). Groups without shared items are left out."""
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    out = {}
    for g in groups:
        c = compare_runs(a, b, metric=metric, group=g, paired_seeds=paired_seeds)
        if c is not None:
            out[g] = c.as_dict()
    return out


def blind_gain(runs: str | Path | Sequence[str | Path], twins: str | Path | Sequence[str | Path],
               metric: str = "psnr") -> dict[str, dict[str, Any]]:
    """Gain over the blind twin: model - twin per image, paired per seed (one twin per run)."""
    runs = [runs] if isinstance(runs, str | Path) else list(runs)
    twins = [twins] if isinstance(twins, str | Path) else list(twins)
    return paired_delta(list(zip(runs, twins, strict=True)), metric)


# -- a leaderboard table -------------------------------------------------------------------------
def table_items(run_dirs: list[list[str]], group: str,
                metric: str = "psnr") -> tuple[list[int], tuple[list[np.ndarray], np.ndarray, list[str], int]] | None:
    """Cells of every entry with per-image rows: (entry indices, :func:`entry_cells` result) or None."""
    items = {i: [run_items(d, group, metric) for d in dirs] for i, dirs in enumerate(run_dirs)}
    items = {i: v for i, v in items.items() if v and all(r is not None and len(r) for r in v)}
    got = entry_cells(list(items.values())) if items else None
    return (list(items), got) if got else None


def ties_with_best(cells: list[np.ndarray], w: np.ndarray, ranked: list[bool]) -> tuple[int, list[int]] | None:
    """(best, entries not distinguishable from it) among the ranked entries with >= 2 seeds (an
    entry of 1 seed gets no verdict); None without one. Seeds are unpaired: different models
    share nothing through a seed number."""
    ok = [r and c.shape[0] >= 2 for c, r in zip(cells, ranked, strict=True)]
    if not any(ok):
        return None
    best = int(np.argmax([float((c @ w).mean()) if k else -np.inf for c, k in zip(cells, ok, strict=True)]))
    tied = [i for i, c in enumerate(cells) if ok[i] and i != best and not compare_cells(c, cells[best], w).different]
    return best, [best, *tied]


def calibration_notes(cells: list[np.ndarray], w: np.ndarray, ranked: list[bool], group: str,
                      metric: str = "psnr") -> list[str]:
    """The table's MDE (between two ranked entries) and its A/A false-positive rate, one line."""
    g = w.size
    mde = table_mde([c for c, r in zip(cells, ranked, strict=True) if r], w)
    head = f"minimum detectable effect ({metric.upper()}, {group} users): "
    if mde is None:
        head += "needs two ranked entries of >= 2 seeds"
    else:
        head += (f"{mde[0]:.2f} dB between two entries of {mde[2]} seeds (alpha 0.05, power 0.8; over seeds and "
                 f"{g} test scenes; median over {mde[1]} pairs of entries)")
    varied = [c for c in cells if c.shape[0] >= 4 and np.ptp(c, axis=0).max() > 0]
    false, total = aa_false_positives(varied, w)
    aa = (f"A/A false-positive rate on this table's runs: {false} of {total} ({100 * false / total:.0f} %, "
          f"nominal 5 %; every entry with >= 4 seeds split 2 against 2)" if total else
          "A/A false-positive rate on this table's runs: needs an entry with >= 4 seeds (split 2 against 2)")
    return [f"{head}. {aa}."]


def oracle_gaps(cells: list[np.ndarray], w: np.ndarray, labels: list[str], enhancers: list[str],
                kinds: list[str], group: str, metric: str = "psnr") -> list[str]:
    """The encoder gap per oracle entry: oracle - the best ranked entry with the same enhancer
    (preferring entries of >= 2 seeds), over seeds and scenes; one line each."""
    out = []
    for i, kind in enumerate(kinds):
        peers = [j for j, k in enumerate(kinds) if not k and enhancers[j] == enhancers[i]]
        if kind != "oracle" or not peers:
            continue
        best = max(peers, key=lambda j: (cells[j].shape[0] >= 2, float((cells[j] @ w).mean())))
        c = compare_cells(cells[i], cells[best], w)
        interval = f"[{c.lo:+.2f}, {c.hi:+.2f}]" if c.decided else f"({c.verdict})"
        out.append(f"encoder gap ({metric.upper()}, {group} users): {labels[i]} - {labels[best]} (the best ranked "
                   f"encoder with {enhancers[i]}): {c.mean:+.2f} dB {interval}, over seeds and test scenes.")
    return out
