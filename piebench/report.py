"""A static HTML report: leaderboard, per-run figures, training curves and an image grid.

The page is one self-contained file (``index.html``): styles inline, every image a ``data:``
URI, nothing fetched from anywhere. Per run it shows the run's results table and alarms, the
figures the evaluation wrote (control heat map, t-SNE, reference-count curve when present),
the training curves drawn from ``train_log.jsonl``, and, for a few test photos, an image grid:
input | each user's target | the output under each user's preference, computed by rebuilding
the models from the run's ``config.json`` and latest checkpoint, with the references of the
run's frozen ``manifest.json``.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ._version import __version__
from .build import build_dataset, build_models
from .checkpoints import latest_checkpoint
from .columns import REPORT_DIAGNOSTICS, display_columns, metric_keys
from .data.manifest import eval_batches, load_manifest
from .errors import UsageError
from .figures import FONT_PT, legend_outside, min_text_px, new_figure, png_bytes
from .leaderboard import collect, leaderboard_tables
from .outputs import OutputPlan, refuse_overlap, replaced_message
from .plugins import get_manager, get_registry
from .runs import atomic_write_text, iter_records, load_record, read_json

_GROUPS = ("seen", "unseen", "all")


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _array_png(img: np.ndarray, min_side: int = 96) -> bytes:
    """PNG bytes of an ``[H, W, 3]`` image in [0, 1] or uint8, enlarged (nearest) to ``min_side``."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
    pil = Image.fromarray(np.ascontiguousarray(a))
    scale = max(1, int(np.ceil(min_side / max(1, min(pil.size)))))
    if scale > 1:
        pil = pil.resize((pil.size[0] * scale, pil.size[1] * scale), Image.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def _fig_png(fig: Any) -> bytes:
    return png_bytes(fig)


# -- per-run pieces ---------------------------------------------------------------------------------
def training_curves(run_dir: Path) -> bytes | None:
    """PNG of the loss terms per step from ``train_log.jsonl`` (None when no step was logged)."""
    path = run_dir / "train_log.jsonl"
    if not path.exists():
        return None
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    if not entries:
        return None

    skip = {"step", "stage", "time_s"}
    terms = sorted({k for e in entries for k, v in e.items()
                    if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)})
    fig = new_figure(560, 340)  # the legend goes to the right of the axes
    ax = fig.add_subplot(1, 1, 1)
    steps = [e["step"] for e in entries]
    for term in terms:
        xs = [s for s, e in zip(steps, entries, strict=True) if term in e]
        ys = [e[term] for e in entries if term in e]
        ax.plot(xs, ys, label=term, lw=1.5 if term == "loss" else 1.0)
    for i in range(1, len(entries)):
        if entries[i].get("stage") != entries[i - 1].get("stage"):
            ax.axvline(entries[i]["step"] - 0.5, color="grey", ls=":", lw=1)
    values = [e[t] for e in entries for t in terms if t in e]
    if values and min(values) > 0 and max(values) / min(values) > 10:  # log only when it spans a decade
        from matplotlib.ticker import FormatStrFormatter, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("step")
    ax.set_ylabel("weighted loss")
    ax.set_title("training curves (dotted: stage boundary)", fontsize=FONT_PT + 1)
    legend_outside(ax, title="loss term")
    return _fig_png(fig)


def _figures(run_dir: Path, record: dict) -> list[dict[str, str]]:
    """Every PNG figure the evaluation recorded (plus any reference-count curve found on disk)."""
    figs = dict((record.get("metrics") or {}).get("figures") or {})
    for path in sorted(run_dir.glob("*.png")):
        if path.name not in figs.values() and (("ref" in path.stem and "count" in path.stem) or "curve" in path.stem):
            figs[path.stem] = path.name
    out = []
    for name, rel in figs.items():
        path = run_dir / rel
        if path.suffix.lower() == ".png" and path.is_file():
            out.append(_figure_entry(name.replace("_", " "), path.read_bytes()))
    return out


def _figure_entry(title: str, png: bytes) -> dict[str, Any]:
    """A figure for the template: shown at its natural size; ``min_text_px`` as recorded by
    :func:`piebench.figures.save` (empty for a PNG made elsewhere)."""
    px = min_text_px(png)
    return {"title": title, "src": png_data_uri(png), "min_text_px": f"{px:.1f}" if px else ""}


#: Width at which the before/after view shows each photo (CSS pixels).
BEFORE_AFTER_PX = 300


def before_after(grid: dict[str, Any]) -> list[dict[str, str]]:
    """Per user of the image grid, the first photo with that user's target and output:
    {"user", "photo", "input", "target", "output"} (images as data URIs)."""
    out = []
    for i, user in enumerate(grid.get("users") or []):
        for row in grid.get("rows") or []:
            target, output = row["targets"][i], row["outputs"][i]
            if target and output:
                out.append({"user": user, "photo": row["photo"], "input": row["input"], "target": target,
                            "output": output})
                break
    return out


def _fmt_metric(m: Any, digits: int) -> str:
    if not isinstance(m, dict) or "mean" not in m or m["mean"] is None:
        return "–"
    cell = f"{m['mean']:.{digits}f}"
    ci = m.get("ci")
    if ci and all(isinstance(c, int | float) for c in ci):
        cell += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return cell


def run_table(record: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): one row per user group with mean [95% CI] per metric."""
    metrics = record.get("metrics") or {}
    computed = metric_keys(metrics.get(g) for g in _GROUPS)
    present = [(c.key, c.heading, c.digits) for c in display_columns(REPORT_DIAGNOSTICS, get_registry(), computed)
               if any(c.key in (metrics.get(g) or {}) for g in _GROUPS)]
    rows = []
    for g in _GROUPS:
        group = metrics.get(g)
        if not group:
            continue
        rows.append([f"{g} ({group.get('n_users', '?')} users)", *(_fmt_metric(group.get(k), d) for k, _, d in present)])
    return ["users", *(h for _, h, _ in present)], rows


def grid_entries(entries: list[dict], dataset: Any, photos: int) -> list[dict]:
    """Up to ``photos`` manifest entries, the first of each scene in manifest order (then repeats of
    scenes only when there are fewer scenes than ``photos``), so a grid never shows one photograph twice."""
    scenes = [dataset.photos[int(e["photo"])].scene for e in entries]
    first = [i for i, s in enumerate(scenes) if s not in scenes[:i]]
    rest = [i for i in range(len(entries)) if i not in set(first)]
    return [entries[i] for i in (first + rest)[:photos]]


def image_grid(run_dir: Path, photos: int = 3, max_users: int = 6, device: str = "cpu") -> dict[str, Any]:
    """Input | targets | outputs for ``photos`` manifest photos of distinct scenes (:func:`grid_entries`)
    and up to ``max_users`` users.

    Returns {"users": [...], "rows": [{"photo", "input", "targets", "outputs"}], "note"} with
    images as data URIs; models are rebuilt from config.json and the latest checkpoint.
    """
    cfg = read_json(run_dir / "config.json")
    registry = get_manager().registry
    dataset = build_dataset(cfg, registry)
    torch.manual_seed(int(cfg.get("seed", 0)))
    encoder, enhancer = build_models(cfg, registry, dataset)
    found = latest_checkpoint(run_dir / "checkpoints")
    note = ""
    if found:
        encoder.load_state_dict(found[1]["encoder"])
        enhancer.load_state_dict(found[1]["enhancer"])
        note = f"weights from {found[0].name}"
    elif any(p.requires_grad for p in [*encoder.parameters(), *enhancer.parameters()]):
        note = "no checkpoint found: trainable parts are at their initialisation"
    else:
        note = "training-free models (no checkpoint needed)"
    encoder.to(device).eval()
    enhancer.to(device).eval()
    manifest = load_manifest(run_dir / "manifest.json")
    sub = {**manifest, "entries": grid_entries(manifest["entries"], dataset, photos), "draws": 1}
    pairs = "inputs" in encoder.requires
    seen = [u.id for u in dataset.users if u.seen]
    unseen = [u.id for u in dataset.users if not u.seen]
    half = max(1, max_users // 2) if unseen else max_users
    chosen = seen[:half] + unseen[: max_users - len(seen[:half])]
    rows = []
    with torch.no_grad():
        for photo, _, batch in eval_batches(dataset, sub, pairs=pairs, device=device):
            out = enhancer(batch.input, encoder(batch.refs)).float().clamp(0, 1).cpu()
            users = batch.user.cpu().tolist()
            pos = {u: i for i, u in enumerate(users)}

            def img(t: Any) -> str:
                return png_data_uri(_array_png(t.permute(1, 2, 0).numpy()))

            rows.append({"photo": dataset.photos[photo].name,
                         "input": img(batch.input[0].float().cpu()),
                         "targets": [img(batch.target[pos[u]].float().cpu()) if u in pos else None for u in chosen],
                         "outputs": [img(out[pos[u]]) if u in pos else None for u in chosen]})
    return {"users": [f"{dataset.users[u].name} ({'seen' if dataset.users[u].seen else 'unseen'})" for u in chosen],
            "rows": rows, "note": note}


def run_section(run_dir: Path, record: dict, photos: int = 3, max_users: int = 6, device: str = "cpu") -> dict:
    """Everything the template shows for one run."""
    headers, rows = run_table(record)
    curves = training_curves(run_dir)
    section = {
        "title": f"{record['encoder']['name']} + {record['enhancer']['name']}"
                 f"{' (blind)' if record.get('blind') else ''}, seed {record.get('seed')}",
        "run_dir": str(run_dir), "status": record.get("status"),
        "overrides": ", ".join(record.get("overrides", [])) or "none",
        "parameters": {k: f"{v:,}" for k, v in (record.get("parameters") or {}).items()},
        "alarms": (record.get("metrics") or {}).get("alarms", []),
        "notes": record.get("notes", []),
        "headers": headers, "rows": rows, "figures": _figures(run_dir, record),
        "curves": _figure_entry("training curves", curves) if curves else None, "grid": None, "grid_error": None,
        "before_after": [], "before_after_px": BEFORE_AFTER_PX,
    }
    if photos > 0:
        try:
            section["grid"] = image_grid(run_dir, photos, max_users, device)
            section["before_after"] = before_after(section["grid"])
        except Exception as err:  # noqa: BLE001 - a report must still render without the grid
            section["grid_error"] = f"{type(err).__name__}: {err}"
            print(f"piebench: warning: image grid of {run_dir} not drawn: {err}", file=sys.stderr)
    return section


# -- the page -----------------------------------------------------------------------------------------
def select_runs(runs_dir: str | Path, protocol: str, max_runs: int) -> list[tuple[Path, dict]]:
    """One finished run per (encoder, enhancer, blind, overrides) of ``protocol``: the lowest seed."""
    best: dict[tuple, tuple[Path, dict]] = {}
    for run_dir, rec in iter_records(runs_dir):
        if rec.get("status") != "finished" or rec["protocol"]["name"] != protocol:
            continue
        key = (rec["protocol"].get("eval_hash"), rec["encoder"]["name"], rec["enhancer"]["name"], rec.get("blind"),
               tuple(rec.get("overrides", [])))
        if key not in best or rec["seed"] < best[key][1]["seed"]:
            best[key] = (run_dir, rec)
    return [best[k] for k in sorted(best, key=str)][:max_runs]


def build_report(out_dir: str | Path, *, run_dirs: list[str | Path] = (), protocol: str | None = None,
                 runs_dir: str | Path | None = None, max_runs: int = 12, photos: int = 3, max_users: int = 6,
                 device: str = "cpu", command: str = "", overwrite: bool = False) -> Path:
    """Write ``out_dir/index.html`` for ``run_dirs`` or for every configuration of ``protocol``.

    The leaderboard ranks the runs named and, with ``runs_dir``, the runs under it: never a
    folder above a run. ``out_dir`` must lie outside every run and runs directory read; an
    existing ``index.html`` is replaced only with ``overwrite``.
    """
    from jinja2 import Environment, PackageLoader, select_autoescape

    if not run_dirs and not protocol:
        raise UsageError("give a RUN_DIR or --protocol P")
    runs: list[tuple[Path, dict]] = []
    if run_dirs:
        for d in run_dirs:
            d = Path(d)
            if not (d / "record.json").is_file():
                raise UsageError(f"{d} is not a run directory (no record.json)")
            runs.append((d, load_record(d / "record.json")))
        protocol = protocol or runs[0][1]["protocol"]["name"]
        root = Path(runs_dir) if runs_dir else None
        if root is not None and not root.is_dir():
            raise UsageError(f"runs directory not found: {root}; pass an existing --runs-dir")
    else:
        root = Path(runs_dir or "runs")
        if not root.is_dir():
            raise UsageError(f"runs directory not found: {root}; pass --runs-dir")
        runs = select_runs(root, protocol, max_runs)
        if not runs:
            raise UsageError(f"no finished runs of protocol '{protocol}' under {root}")
    refuse_overlap(out_dir, "--out", [("RUN_DIR", d) for d, _ in runs] + [("--runs-dir", root)], around=False)
    plan = OutputPlan(out_dir, overwrite)
    out = plan.add("index.html")
    replaced = plan.check()
    frames = [collect(root, protocol)] if root is not None else []
    frames += [collect(d, protocol) for d in run_dirs]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not df.empty:  # a run named and also under --runs-dir counts once
        df = df[~df["run_dir"].map(lambda p: str(Path(p).resolve())).duplicated()]
    tables = []
    for spec, table in leaderboard_tables(df):
        bounds = spec.pop("bounds", None)  # oracles, baselines, blind twins: shown, never ranked
        tables.append({"spec": spec, "headers": list(table.columns),
                       "rows": [[str(v) for v in row] for row in table.itertuples(index=False)],
                       "bounds": None if bounds is None else {
                           "headers": list(bounds.columns),
                           "rows": [[str(v) for v in row] for row in bounds.itertuples(index=False)]}})
    sections = [run_section(d, rec, photos, max_users, device) for d, rec in runs]
    env = Environment(loader=PackageLoader("piebench", "templates"), autoescape=select_autoescape(["html"]))
    html = env.get_template("report.html").render(
        title=f"piebench report: {protocol}", protocol=protocol, tables=tables, runs=sections,
        generated=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), version=__version__,
        command=command, runs_root=str(root) if root is not None else ", ".join(str(d) for d in run_dirs),
        ba_px=BEFORE_AFTER_PX)
    atomic_write_text(out, html)
    out.chmod(0o644)  # a page to share, not a private temp file
    if replaced:
        print(replaced_message(replaced), file=sys.stderr)
    return out
