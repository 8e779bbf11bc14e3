"""Preference diagnostics computed in every run's evaluation.

Answers two questions from one evaluation pass plus a few probe passes:

* does the preference carry the user's taste? -- separability by user of the preference vectors
  the enhancer receives and of the encoder's per-image embeddings (same-scene neighbours
  excluded; each figure with its chance level), a ridge probe to the users' true parameters
  (pie-synth; nested CV, chance from shuffled users), a t-SNE plot;
* how many references does it need? -- PSNR as N goes 1, 3, 5, 10 (``eval.refs_curve``, in
  protocols with enough images);
* does the enhancer follow it? -- the steering score (1 = follows fully, 0 = ignores), the
  control matrix heat map and accuracy, and probe passes that swap only the vector, only the
  maps, or feed random vectors, so an enhancer wired to nothing is told apart from an encoder
  whose vectors collapsed. When both the steering and the sensitivity intervals include 0
  the record carries an alarm in plain words.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .build import build_dataset
from .data.manifest import build_manifest, eval_batches
from .errors import UsageError
from .evaluate import evaluate
from .figures import legend_outside, new_figure, save
from .interfaces import Preference
from .metrics import psnr
from .metrics.control import control_accuracy, control_heatmap, steering_score
from .metrics.fidelity import psnr_from_mse
from .metrics.separability import ridge_probe, separability_report, tsne_plot
from .plugins import get_registry
from .runs import atomic_write_json, git_commit, load_record


def _group_users(dataset: Any, group: str) -> np.ndarray:
    if group == "all":
        return np.arange(dataset.num_users)
    return np.array(dataset.user_ids(seen=(group == "seen")), dtype=int)


def steering_for(result: Any, users: np.ndarray, seed: int, scenes: Any = None) -> dict[str, Any] | None:
    """Steering score + control accuracy for one user group, or None if undefined.

    ``scenes``: the scene of each (photo, draw) group of ``result``; the CI resamples scenes
    (every draw and crop of a photograph together). Without, it resamples photos."""
    if len(users) < 2:
        return None
    d_out = result.mse_out_tgt[:, users][:, :, users]
    d_tgt = result.mse_tgt_tgt[:, users][:, :, users]
    keep = ~np.isnan(d_out).any(axis=(1, 2))
    if keep.sum() < 1:
        return None
    clusters = np.asarray(scenes if scenes is not None else result.group_photos)[keep]
    unit = "scenes" if scenes is not None else "photos"
    try:
        st = steering_score(d_out[keep], d_tgt[keep], clusters=clusters, cluster_name=unit, seed=seed)
    except UsageError:
        return None
    psnr = psnr_from_mse(d_out[keep])
    return {"steering": {"mean": st.score.mean, "ci": [st.score.lo, st.score.hi], f"n_{unit}": st.score.n_clusters},
            "control_accuracy": control_accuracy(psnr), "control_chance": 1.0 / len(users)}


@torch.no_grad()
def probe_passes(comps: Any, manifest: dict, *, pairs: bool, device: str, max_groups: int = 6,
                 seed: int = 0) -> dict[str, float]:
    """How much the output moves when only the vector, only the maps, or a random vector changes.

    Each value is the mean absolute output change (in [0, 1] units) relative to the change
    when the whole Preference is swapped between users; ``vector_spread`` is the mean pairwise
    cosine distance between users' preference vectors (0 = encoder collapse).
    """
    gen = torch.Generator().manual_seed(seed)
    stats: dict[str, list[float]] = {"whole": [], "vector_only": [], "maps_only": [], "random_vector": [],
                                     "vector_spread": []}
    comps.encoder.eval()
    comps.enhancer.eval()
    for i, (_, _, batch) in enumerate(eval_batches(comps.dataset, manifest, pairs=pairs, device=device)):
        if i >= max_groups:
            break
        n = batch.input.shape[0]
        if n < 2:
            continue
        pref = comps.encoder(batch.refs)
        perm = torch.roll(torch.arange(n), 1)
        base = comps.enhancer(batch.input, pref).float().clamp(0, 1)

        def moved(p: Preference, x: torch.Tensor = batch.input, base: torch.Tensor = base) -> float:
            return float((comps.enhancer(x, p).float().clamp(0, 1) - base).abs().mean())

        stats["whole"].append(moved(pref.take(perm)))
        stats["vector_only"].append(moved(pref.replace(vector=pref.vector[perm.to(pref.vector.device)])))
        if pref.maps is not None:
            swapped = tuple(m[perm.to(m.device)] for m in pref.maps)
            stats["maps_only"].append(moved(pref.replace(maps=swapped)))
        rnd = torch.randn(pref.vector.shape, generator=gen).to(pref.vector)
        rnd = rnd / rnd.norm(dim=1, keepdim=True) * pref.vector.norm(dim=1, keepdim=True)
        stats["random_vector"].append(moved(pref.replace(vector=rnd)))
        v = torch.nn.functional.normalize(pref.vector.float(), dim=1)
        cos = v @ v.T
        stats["vector_spread"].append(float((1 - cos[~torch.eye(n, dtype=torch.bool)]).mean()))
    out = {k: float(np.mean(v)) for k, v in stats.items() if v}
    return out


def alarms(summary: dict[str, Any], probes: dict[str, float]) -> list[str]:
    """Plain-language warnings when the preference does not steer the output."""
    lines = []
    for group in ("seen", "unseen"):
        g = summary.get(group, {})
        st, se = g.get("steering"), g.get("sensitivity")
        if not st or not se:
            continue
        tol = 1e-6  # an output that does not move at all leaves only floating-point noise
        st_zero = st["ci"][0] <= tol and st["ci"][1] >= -tol
        se_zero = se["ci"][0] <= tol and se["ci"][1] >= -tol
        if st_zero and se_zero:
            if probes.get("vector_spread", 1.0) < 1e-4:
                why = "the encoder gives every user the same preference (encoder collapse)"
            elif probes.get("random_vector", 1.0) < 1e-6 and probes.get("maps_only", 0.0) < 1e-6:
                why = "the enhancer's output does not change with its preference input (disconnected)"
            else:
                why = "swapping preferences between users does not change the output measurably"
            lines.append(f"the enhancer ignores the preference for {group} users: steering and sensitivity "
                         f"confidence intervals include 0 ({why})")
    return lines


def separability_entries(result: Any, ds: Any, seed: int) -> dict[str, Any]:
    """``separability`` (per-image embeddings of the test targets), ``preference_separability``
    (the preference vectors the enhancer received) per user group, and ``probe_r2`` (pie-synth)."""
    sep: dict[str, Any] = {}
    pref_sep: dict[str, Any] = {}
    scene_of = np.array([p.scene for p in ds.photos])
    for group in ("seen", "unseen"):
        users = set(_group_users(ds, group).tolist())
        for into, x, who, photos in ((sep, result.embeddings, result.embedding_users, result.embedding_photos),
                                     (pref_sep, result.vectors, result.vector_users, result.vector_photos)):
            sel = np.array([u in users for u in who], bool)
            if sel.sum() >= 6 and len(set(who[sel].tolist())) >= 2:
                try:  # content = the scene of the test photo: crops of one photograph are not new content
                    into[group] = separability_report(x[sel], who[sel], scene_of[photos[sel].astype(int)], seed=seed)
                except Exception as err:  # noqa: BLE001
                    into[group] = {"error": str(err)}
    out: dict[str, Any] = {"separability": sep, "preference_separability": pref_sep}
    if getattr(ds, "user_params", None) is not None and len(result.vectors):
        y = np.asarray(ds.user_params)[result.vector_users.astype(int)]
        try:
            out["probe_r2"] = ridge_probe(result.vectors, y, ds.param_names, groups=result.vector_users, seed=seed)
        except Exception as err:  # noqa: BLE001
            out["probe_r2"] = {"error": str(err)}
    return out


def user_recall_entries(preference_separability: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The headline "are users told apart?" figure per user group (the leaderboard's user R@1)."""
    return {group: {"mean": v["recall_at_1"], "ci": v["recall_at_1_ci"], "chance": v["recall_at_1_chance"],
                    "on": "preference vectors; nearest neighbour from another test scene; CI over users"}
            for group, v in preference_separability.items() if "recall_at_1" in v}


def refresh_separability(run_dir: str | Path, write: bool = False) -> dict[str, Any]:
    """Recompute a finished run's separability entries from its ``control.npz`` and config (for
    records written before preference separability, user R@1 and the nested probe existed).

    Returns ``{"separability", "preference_separability", "probe_r2", "user_recall": {group: ...}}``;
    with ``write`` also puts them into ``record.json`` (atomically), with ``separability_refreshed``
    naming the code that computed them. Nothing else in the record changes.
    """
    from threadpoolctl import threadpool_limits

    run_dir = Path(run_dir)
    if not (run_dir / "control.npz").is_file() or not (run_dir / "config.json").is_file():
        raise UsageError(f"{run_dir} has no control.npz and config.json to recompute separability from")
    cfg = json.loads((run_dir / "config.json").read_text())
    with np.load(run_dir / "control.npz") as z:
        result = SimpleNamespace(**{k: z[k] for k in z.files})
    with threadpool_limits(limits=1):
        entries = separability_entries(result, build_dataset(cfg, get_registry()), int(cfg.get("seed", 0)))
    entries["user_recall"] = user_recall_entries(entries["preference_separability"])
    if write:
        record = load_record(run_dir / "record.json")
        metrics = record.setdefault("metrics", {})
        for key in ("separability", "preference_separability", "probe_r2"):
            metrics[key] = entries[key]
        for group, value in entries["user_recall"].items():
            metrics.setdefault(group, {})["user_recall"] = value
        metrics["separability_refreshed"] = {"git_commit": git_commit()}
        atomic_write_json(run_dir / "record.json", record)
    return entries


def reference_count_curve(comps: Any, cfg: dict, run_dir: Path, *, pairs: bool, device: str) -> dict[str, Any]:
    """PSNR as the number of references N grows (``eval.refs_curve``, e.g. [1, 3, 5, 10]).

    Each N gets its own frozen manifest (same seed and photos, one draw); a PNG plots seen and
    unseen users. Values of N that some user cannot supply are skipped and listed.
    """
    points, skipped = [], []
    for n in cfg["eval"]["refs_curve"]:
        try:
            manifest = build_manifest(comps.dataset, refs=int(n), draws=1, seed=cfg["eval"]["seed"],
                                      max_photos=cfg["eval"].get("max_photos"))
        except UsageError as err:
            skipped.append({"refs": int(n), "reason": str(err)})
            continue
        res = evaluate(comps.encoder, comps.enhancer, comps.dataset, manifest, metrics={"psnr": psnr},
                       pairs=pairs, device=device, progress=False)
        df = res.per_image[np.isfinite(res.per_image["psnr"])]
        point = {"refs": int(n)}
        for group, sel in (("seen", df["seen"]), ("unseen", ~df["seen"])):
            if sel.any():
                point[group] = float(df.loc[sel, "psnr"].mean())
        points.append(point)
    out: dict[str, Any] = {"points": points, "skipped": skipped}
    if points:
        fig = new_figure(480, 340)
        ax = fig.add_subplot(1, 1, 1)
        for group in ("seen", "unseen"):
            xs = [p["refs"] for p in points if group in p]
            if xs:
                ax.plot(xs, [p[group] for p in points if group in p], marker="o", label=f"{group} users")
        ax.set_xlabel("references per preference (N)")
        ax.set_ylabel("PSNR (dB)")
        legend_outside(ax)
        save(fig, run_dir / "refs_curve.png")
        out["figure"] = "refs_curve.png"
    return out


def run_diagnostics(result: Any, comps: Any, run_dir: Path, cfg: dict, manifest: dict | None = None,
                    device: str = "cpu") -> dict[str, Any]:
    """Every diagnostic of one evaluation, as record entries (figures written into run_dir).

    Numpy's BLAS runs on one thread here: the matrices are small, and idle BLAS threads spin on
    shared cores (the probes took 15x more CPU time with them)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _run_diagnostics(result, comps, run_dir, cfg, manifest, device)


def _run_diagnostics(result: Any, comps: Any, run_dir: Path, cfg: dict, manifest: dict | None,
                     device: str) -> dict[str, Any]:
    ds = comps.dataset
    seed = cfg["seed"]
    out: dict[str, Any] = {"figures": {}}
    groups = {}
    scenes = np.array([ds.photos[int(p)].scene for p in result.group_photos])
    for group in ("seen", "unseen", "all"):
        users = _group_users(ds, group)
        st = steering_for(result, users, seed, scenes=scenes)
        if st:
            groups[group] = st
    out["control"] = groups
    names = [u.name for u in ds.users]
    mean_psnr = psnr_from_mse(np.nanmean(result.mse_out_tgt, axis=0))
    try:
        out["figures"]["control_heatmap"] = str(control_heatmap(mean_psnr, names, run_dir / "control_heatmap.png")
                                                .relative_to(run_dir))
    except Exception as err:  # noqa: BLE001 - a figure must not fail the run
        print(f"piebench: warning: control heat map not drawn: {err}", file=sys.stderr)
    out.update(separability_entries(result, ds, seed))
    if len(result.embeddings) >= 5:
        try:
            path = tsne_plot(result.embeddings, result.embedding_users, run_dir / "tsne.png",
                             title=f"{cfg['encoder']['name']} embeddings of test targets", seed=seed,
                             user_names=dict(enumerate(names)))
            out["figures"]["tsne"] = str(path.relative_to(run_dir))
        except Exception as err:  # noqa: BLE001
            print(f"piebench: warning: t-SNE not drawn: {err}", file=sys.stderr)
    pairs = "inputs" in comps.encoder.requires
    if manifest is not None:
        out["probes"] = probe_passes(comps, manifest, pairs=pairs, device=device, seed=seed)
    if cfg["eval"].get("refs_curve"):
        curve = reference_count_curve(comps, cfg, run_dir, pairs=pairs, device=device)
        out["refs_curve"] = curve
        if "figure" in curve:
            out["figures"]["refs_curve"] = curve["figure"]
    return out
