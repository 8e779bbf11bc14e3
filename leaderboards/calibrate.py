"""A/A calibration on committed records: how often each procedure calls one configuration
"different" from itself (seed splits of the same entry), at a nominal 5 %.

    python leaderboards/calibrate.py                      # leaderboards/records/smoke
    python leaderboards/calibrate.py path/to/records/smoke

Per protocol version and user group it prints:

- old: the per-image paired bootstrap over photos (seeds ignored), seed i against seed j;
- new: the seeds-and-scenes comparison (:func:`piebench.stats.compare_cells`), k against k
  seeds for every split the entries' seeds allow (2 against 2 needs 4 seeds; a side of 1 seed
  gives "needs >= 2 seeds", never a verdict);
- pooled (a diagnostic where entries have 3 seeds): 2 seeds against 1 with the seed variance
  pooled over both halves (Student), which is valid only because in an A/A both halves are one
  configuration; it checks the new variance model on real runs where 2 against 2 is impossible.
"""

from __future__ import annotations

import sys
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import stats as st

from piebench.leaderboard import collect
from piebench.stats import aa_false_positives, paired_diff
from piebench.verdicts import entry_cells, run_items

RECORDS = Path(__file__).resolve().parent / "records" / "smoke"


def _old(dirs: list[str], group: str) -> list[bool]:
    """Seed i vs seed j per item, bootstrap over photos: the old leaderboard.paired_delta."""
    out = []
    for a, b in combinations(dirs, 2):
        ia, ib = run_items(a, group), run_items(b, group)
        m = ia[["value"]].rename(columns={"value": "value_a"}).join(ib[["value"]].rename(columns={"value": "value_b"}),
                                                                  how="inner")
        photos = m.index.get_level_values("photo").to_numpy()
        out.append(paired_diff(m["value_a"], m["value_b"], clusters=photos).excludes_zero)
    return out


def _pooled_2v1(cells: np.ndarray, w: np.ndarray) -> list[bool]:
    """2 seeds against 1, seed variance pooled over both halves (df = 1), scenes as in the new test."""
    out, g = [], w.size
    for i in range(cells.shape[0]):
        a, b = cells[[j for j in range(cells.shape[0]) if j != i]], cells[[i]]
        ma, mb = a @ w, b @ w
        diff = ma.mean() - mb.mean()
        dev = a.mean(0) - b.mean(0) - diff
        v_scene = g / (g - 1) * float(((w * dev) ** 2).sum())
        v_seed = float(((ma - ma.mean()) ** 2).sum()) * (1 / len(ma) + 1 / len(mb))  # pooled ss / 1 df
        var = v_scene + v_seed
        if var <= 0:
            continue
        df = var ** 2 / (v_scene ** 2 / (g - 1) + v_seed ** 2 / 1)
        out.append(abs(diff) > st.t.ppf(0.975, df) * np.sqrt(var))
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else RECORDS
    df = collect(root)
    for version, part in df.groupby("version"):
        entries = [list(r.sort_values("seed")["run_dir"]) for _, r in
                   part.groupby(["encoder", "enhancer", "train_hash", "model_versions"])]
        for group in ("seen", "unseen"):
            items = [[run_items(d, group) for d in dirs] for dirs in entries]
            cells, w, scenes, _ = entry_cells(items)
            varied = [c for c in cells if np.ptp(c, axis=0).max() > 0]
            old01 = [_old(d[:2], group)[0] for d in entries if len(d) >= 2]
            old_all = sum((_old(d, group) for d in entries), [])
            false, total = aa_false_positives(varied, w)
            needs = sum(c.shape[0] * (c.shape[0] - 1) // 2 + c.shape[0] for c in varied if c.shape[0] < 4)
            pooled = sum((_pooled_2v1(c, w) for c in varied if c.shape[0] == 3), [])
            print(f"v{version} {group} ({len(scenes)} test scenes, {len(entries)} entries):")
            print(f"  old, seed 0 vs seed 1: {sum(old01)} of {len(old01)} 'significant'; "
                  f"every seed pair: {sum(old_all)} of {len(old_all)}")
            print(f"  new, 2 vs 2 splits: {false} of {total} 'different'; 1 vs 1 and 2 vs 1 splits of entries "
                  f"with < 4 seeds: {needs} answered 'needs >= 2 seeds' (no verdict)")
            if pooled:
                print(f"  diagnostic, 2 vs 1 with pooled seed variance: {sum(pooled)} of {len(pooled)} 'different'")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
