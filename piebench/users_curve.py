"""The training-users curve: how well a model personalises for people it never trained on, as
a function of how many people it trained on.

For each count ``k`` the protocol's dataset trains on its first ``k`` training users (the
dataset plugin names the parameter in its ``training_users_param`` field: ``train_users`` for
pie-synth, ``seen_users`` for fivek) and every point is scored on the same held-out users --
the dataset's own unseen users (pie-synth's u00..., fivek-loeo's held-out expert), never the
training users a smaller count leaves out. Their
preferences come from their references alone; references and test photos are disjoint, as in
every evaluation.

Per point: the mean PSNR over the held-out users with a scene-clustered bootstrap CI (pooled
over seeds), the seed t-interval, and the difference to the smallest count paired per seed and
per (photo, user, draw), with its interval over seeds and test scenes
(:func:`piebench.stats.compare_cells`; "needs >= 2 seeds" with one seed). Runs are reused or resumed like
a sweep's.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from . import config as C
from .build import build_dataset
from .errors import UsageError
from .plugins import get_registry
from .runs import atomic_write_json, atomic_write_text
from .stats import bootstrap_ci, compare_cells, seeds_summary
from .sweep import SweepItem, _execute
from .verdicts import entry_cells

KEYS = ["photo", "user_name", "draw"]


@dataclass
class UsersCurve:
    """The runs per count, the held-out users scored, and one summary row per count."""

    items: dict[int, list[SweepItem]]
    held_out: list[str]
    points: list[dict[str, Any]]
    settings: dict[str, Any]


def parse_counts(text: str) -> list[int]:
    """``"2,4,8"`` -> [2, 4, 8] (sorted, distinct, each >= 1)."""
    try:
        counts = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise UsageError(f"--counts expects comma-separated integers (e.g. 2,4,8,12), got '{text}'") from None
    if not counts or counts[0] < 1:
        raise UsageError(f"--counts needs at least one count >= 1, got '{text}'")
    return counts


def training_users_param(dataset: str) -> str:
    """The parameter of dataset plugin ``dataset`` that sets its number of training users."""
    param = get_registry().get("dataset", dataset).training_users_param
    if not param:
        raise UsageError(f"dataset '{dataset}' cannot vary its number of training users (its plugin declares no "
                         "training_users_param); use pie-synth or fivek")
    return str(param)


def _held_out(items: dict[int, list[SweepItem]], unseen: set[str]) -> list[str]:
    """The dataset's own unseen users that are unseen in every finished run (by name)."""
    common = set(unseen)
    for runs in items.values():
        for it in runs:
            if it.run_dir is not None and it.status != "failed":
                df = pd.read_csv(it.run_dir / "per_image.csv", usecols=["user_name", "seen"])
                common &= set(df.loc[~df["seen"].astype(bool), "user_name"])
    return sorted(common)


def _dataset_unseen(cfg: dict) -> set[str]:
    """Names of the users the protocol's dataset holds out of training (without the count)."""
    return {u.name for u in build_dataset(cfg, get_registry()).users if not u.seen}


def _rows(item: SweepItem, held_out: list[str]) -> pd.DataFrame:
    """The held-out users' rows of one run; a non-finite PSNR is an error, never dropped."""
    df = pd.read_csv(item.run_dir / "per_image.csv")
    df = df[df["user_name"].isin(held_out)].copy()
    bad = int((~np.isfinite(df["psnr"].to_numpy(float))).sum())
    if bad:
        raise UsageError(f"{item.run_dir / 'per_image.csv'}: {bad} non-finite PSNR values; evaluate the run again "
                         f"with a piebench that caps PSNR")
    df["seed"] = item.seed
    if "scene" not in df:
        df["scene"] = df["photo"]
    return df


def _delta(runs: list[pd.DataFrame], base: list[pd.DataFrame]) -> dict[str, Any] | None:
    """``runs - base`` paired per seed and per (photo, user, draw), over seeds and scenes."""
    def items(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"scene": df["scene"].astype(str).to_numpy(), "value": df["psnr"].to_numpy(float)},
                            index=pd.MultiIndex.from_frame(df[KEYS]))

    a = {int(df["seed"].iloc[0]): items(df) for df in runs if len(df)}
    b = {int(df["seed"].iloc[0]): items(df) for df in base if len(df)}
    seeds = sorted(set(a) & set(b))
    got = entry_cells([[a[s] for s in seeds], [b[s] for s in seeds]]) if seeds else None
    if got is None:
        return None
    (ca, cb), w, _, n = got
    return compare_cells(ca, cb, w, items=n, paired_seeds=True).as_dict()


def users_curve(protocol: str, encoder: str, enhancer: str, counts: list[int], *, seeds: list[int],
                steps: int | None = None, sets: list[str] = (), runs_dir: str | Path = "runs", device: str = "cpu",
                dataset_arg: str | None = None, progress: bool = False,
                echo: Callable[[str], None] = print) -> UsersCurve:
    """Run ``encoder`` + ``enhancer`` at each training-user count over ``seeds`` and summarise."""
    kw = {"encoder": encoder, "enhancer": enhancer, "steps": steps, "device": device, "dataset": dataset_arg}
    base_cfg = C.resolve(protocol, **kw, sets=list(sets))
    dataset = base_cfg["eval"]["dataset"]
    param = training_users_param(dataset)
    unseen = _dataset_unseen(base_cfg)
    if not unseen:
        raise UsageError(f"dataset '{dataset}' holds no user out of training, so there is no one to score the "
                         "curve on; give it unseen users (pie-synth: eval.data.unseen_users > 0; fivek: "
                         "eval.data.unseen_users, as in fivek-loeo)")
    cfgs = {}
    for k in counts:  # resolve everything first: a bad value fails before any training
        for seed in seeds:
            cfgs[k, seed] = C.resolve(protocol, **kw, seed=seed, sets=[*sets, f"eval.data.{param}={k}"])
        _dataset_unseen(cfgs[k, seeds[0]])  # a count the dataset refuses fails here, before any training
    runs_dir = Path(runs_dir)
    items: dict[int, list[SweepItem]] = {}
    for k in counts:
        items[k] = []
        for seed in seeds:
            item = SweepItem(encoder, enhancer, seed, label=f"{param}={k}")
            _execute(item, cfgs[k, seed], runs_dir, progress, echo)
            items[k].append(item)
    held_out = _held_out(items, unseen)
    if not held_out:
        raise UsageError(f"no run of the curve finished, or none kept {', '.join(sorted(unseen))} unseen; "
                         f"see the runs under {runs_dir}")
    frames = {k: [_rows(it, held_out) for it in runs if it.run_dir is not None and it.status != "failed"]
              for k, runs in items.items()}
    base_k = counts[0]
    points = []
    for k in counts:
        point: dict[str, Any] = {"count": k, "runs": [it.status for it in items[k]]}
        if not frames[k]:
            points.append(point)
            continue
        df = pd.concat(frames[k])
        ci = bootstrap_ci(df["psnr"].to_numpy(), clusters=df["scene"].astype(str).to_numpy())
        point["psnr"] = ci.as_dict()
        per_seed = df.groupby("seed")["psnr"].mean()
        point["seeds"] = seeds_summary(per_seed.to_numpy()).as_dict()
        point["identity_psnr"] = float(df["identity_psnr"].mean()) if "identity_psnr" in df else None
        delta = _delta(frames[k], frames[base_k]) if k != base_k else None
        if delta is not None:
            point["delta_vs_first"] = delta
        points.append(point)
    settings = {"protocol": protocol, "dataset": dataset_arg or dataset, "param": param, "encoder": encoder, "enhancer": enhancer,
                "counts": counts, "seeds": seeds, "steps": steps, "sets": list(sets), "device": device,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    return UsersCurve(items=items, held_out=held_out, points=points, settings=settings)


def _fmt(ci: dict | None, digits: int = 2, sign: bool = False) -> str:
    if not ci or not isinstance(ci.get("mean"), int | float) or not math.isfinite(ci["mean"]):
        return "–"
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    if not all(isinstance(ci.get(k), int | float) and math.isfinite(ci[k]) for k in ("lo", "hi")):
        return f.format(ci["mean"]) + (f" ({ci['verdict']})" if ci.get("verdict") else "")
    return f"{f.format(ci['mean'])} [{f.format(ci['lo'])}, {f.format(ci['hi'])}]"


def curve_table(curve: UsersCurve) -> str:
    """Markdown: one row per count with the held-out users' PSNR and the paired gain over the first count."""
    s = curve.settings
    rows = []
    for p in curve.points:
        rows.append({"training users": p["count"], "held-out PSNR ↑ [95% CI, scenes]": _fmt(p.get("psnr")),
                     "over seeds [95% t]": _fmt(p.get("seeds")),
                     f"Δ vs {curve.points[0]['count']} [95% CI]": ("" if p is curve.points[0]
                                                                   else _fmt(p.get("delta_vs_first"), sign=True)),
                     "identity": "–" if p.get("identity_psnr") is None else f"{p['identity_psnr']:.2f}",
                     "runs": ", ".join(p["runs"])})
    head = (f"Training-users curve of {s['encoder']} + {s['enhancer']} on {s['protocol']} ({s['dataset']}."
            f"{s['param']}), seeds {', '.join(map(str, s['seeds']))}; scored on the users held out at every "
            f"count: {', '.join(curve.held_out)}. Δ is paired per (seed, photo, user, draw), its interval over seeds "
            f"and test scenes.")
    return head + "\n\n" + tabulate(rows, headers="keys", tablefmt="github")


def plot_curve(curve: UsersCurve, path: Path) -> None:
    """PNG: held-out PSNR against the number of training users, with CI bars and the identity line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [p for p in curve.points if p.get("psnr")]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    x = [p["count"] for p in pts]
    y = [p["psnr"]["mean"] for p in pts]
    err = np.array([[p["psnr"]["mean"] - p["psnr"]["lo"], p["psnr"]["hi"] - p["psnr"]["mean"]] for p in pts]).T
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label="held-out users")
    ident = [p["identity_psnr"] for p in pts if p.get("identity_psnr") is not None]
    if ident:
        ax.axhline(float(np.mean(ident)), color="grey", linestyle="--", label="identity")
    s = curve.settings
    ax.set_xlabel(f"training users ({s['param']})")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{s['encoder']} + {s['enhancer']}, {s['protocol']}", fontsize=9)
    ax.set_xticks(x)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_curve(curve: UsersCurve, out_dir: str | Path) -> tuple[Path, Path, Path]:
    """Write ``<stem>.md``, ``<stem>.json`` and ``<stem>.png`` into ``out_dir`` (each atomically)."""
    s = curve.settings
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"users-curve-{s['protocol']}-{s['encoder']}+{s['enhancer']}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    md, js, png = stem.with_suffix(".md"), stem.with_suffix(".json"), stem.with_suffix(".png")
    atomic_write_text(md, curve_table(curve) + "\n")
    atomic_write_json(js, {"kind": "users-curve", "settings": s, "held_out": curve.held_out, "points": curve.points,
                           "runs": {str(k): [{"seed": it.seed, "status": it.status, "reason": it.reason,
                                              "run_dir": str(it.run_dir) if it.run_dir else None} for it in v]
                                    for k, v in curve.items.items()}})
    plot_curve(curve, png)
    return md, js, png
