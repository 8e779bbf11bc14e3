"""The evaluation loop: every model is scored on the same frozen reference manifest.

For each test photo and reference draw, every user's Preference is computed from that
user's manifest references and the photo is enhanced under each of them. That gives the
fidelity metrics per (photo, user), the identity baseline, and the control matrices
``d(out_u, t_v)`` from which preference sensitivity (own preference vs others') and the
steering score follow. Per-image values are kept so that paired statistics need no rerun.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from .interfaces import Encoder, Enhancer


@dataclass
class EvalResult:
    """Per-image rows, control matrices and embeddings of one evaluation."""

    per_image: pd.DataFrame
    mse_out_tgt: np.ndarray  # [G, U, U]: d(out_u, t_v) per (photo, draw) group, NaN where missing
    mse_tgt_tgt: np.ndarray  # [G, U, U]: d(t_u, t_v)
    group_photos: np.ndarray  # [G] photo id of each group
    embeddings: np.ndarray  # [M, D] encoder.embed of test targets (draw 0)
    embedding_users: np.ndarray
    embedding_photos: np.ndarray
    vectors: np.ndarray  # [M, D] preference vectors: one per (photo, user, reference draw)
    vector_users: np.ndarray
    vector_photos: np.ndarray
    unavailable: dict[str, str] = field(default_factory=dict)
    vector_draws: np.ndarray | None = None  # [M] the reference draw of each vector (None: all draw 0)


def _mse_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[U, U]`` per-image mean squared error between every row of a and every row of b."""
    return torch.stack([((a[i : i + 1] - b) ** 2).flatten(1).mean(1) for i in range(a.shape[0])])


@torch.no_grad()
def evaluate(encoder: Encoder, enhancer: Enhancer, dataset: Any, manifest: dict, *,
             metrics: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
             pairs: bool, device: str = "cpu", progress: bool = True,
             unavailable: dict[str, str] | None = None, full: bool = False,
             full_resolution_path: bool = False) -> EvalResult:
    """Score ``encoder`` + ``enhancer`` on every (photo, user, draw) of ``manifest``.

    ``full``: test photos at their own resolution (``dataset.full_versions``), enhanced one user
    at a time in one pass when ``full_resolution_path`` (curves, LUTs, grids) and otherwise in
    blended tiles (:func:`~piebench.personalize.enhance_full`); references, the encoder's query
    and the embeddings of the targets stay at the store's size.
    """
    from tqdm import tqdm

    from .data.manifest import eval_batches
    from .metrics.fidelity import psnr_from_mse
    from .personalize import enhance_full

    encoder.eval()
    enhancer.eval()
    users = dataset.users
    U = len(users)
    rows: list[dict[str, Any]] = []
    mot, mtt, gphotos = [], [], []
    emb, emb_u, emb_p, vec, vec_u, vec_p, vec_d = [], [], [], [], [], [], []
    n_groups = len(manifest["entries"]) * int(manifest["draws"])
    bar = tqdm(total=n_groups, desc="evaluate", unit="photo", disable=not progress, leave=False)
    for photo, draw, batch in eval_batches(dataset, manifest, pairs=pairs, device=device, full=full):
        pref = encoder(batch.refs)
        if full:
            out = torch.cat([enhance_full(enhancer, batch.input[i : i + 1], pref.take([i]),
                                          full_resolution=full_resolution_path).float()
                             for i in range(batch.input.shape[0])]).clamp(0, 1)
        else:
            out = enhancer(batch.input, pref).float().clamp(0, 1)
        target = batch.target.float()
        values = {name: fn(out, target).detach().double().cpu().numpy() for name, fn in metrics.items()}
        identity = metrics["psnr"](batch.input.float(), target).double().cpu().numpy() if "psnr" in metrics else None
        d_out = _mse_matrix(out, target).double().cpu().numpy()  # [u_out, v_tgt]
        d_tgt = _mse_matrix(target, target).double().cpu().numpy()
        psnr_m = psnr_from_mse(d_out)
        uid = batch.user.cpu().numpy()
        n = len(uid)
        for i, u in enumerate(uid):
            others = [j for j in range(n) if j != i]
            row = {"photo": int(photo), "scene": dataset.photos[photo].scene, "draw": int(draw), "user": int(u),
                   "user_name": users[u].name, "seen": bool(users[u].seen)}
            for name, val in values.items():
                row[name] = float(val[i])
            if identity is not None:
                row["identity_psnr"] = float(identity[i])
            # own preference vs every other user's preference, scored against u's target
            row["sensitivity"] = float(psnr_m[i, i] - psnr_m[others, i].mean()) if others else float("nan")
            rows.append(row)
        full_out = np.full((U, U), np.nan)
        full_tgt = np.full((U, U), np.nan)
        full_out[np.ix_(uid, uid)] = d_out
        full_tgt[np.ix_(uid, uid)] = d_tgt
        mot.append(full_out)
        mtt.append(full_tgt)
        gphotos.append(photo)
        if draw == 0:  # the targets do not change with the draw
            emb.append(encoder.embed(batch.extras.get("store_target", target)).float().cpu().numpy())
            emb_u.append(uid)
            emb_p.append(np.full(n, photo))
        vec.append(pref.vector.float().cpu().numpy())  # what the enhancer received, every draw
        vec_u.append(uid)
        vec_p.append(np.full(n, photo))
        vec_d.append(np.full(n, draw))
        bar.update(1)
    bar.close()

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0,))

    return EvalResult(
        per_image=pd.DataFrame(rows), mse_out_tgt=np.stack(mot), mse_tgt_tgt=np.stack(mtt),
        group_photos=np.asarray(gphotos), embeddings=cat(emb), embedding_users=cat(emb_u),
        embedding_photos=cat(emb_p), vectors=cat(vec), vector_users=cat(vec_u), vector_photos=cat(vec_p),
        unavailable=dict(unavailable or {}), vector_draws=cat(vec_d),
    )


def summarize(result: EvalResult, metric_names: list[str], seed: int = 0) -> dict[str, Any]:
    """Means per group (all / seen / unseen users) with bootstrap CIs clustered by scene.

    A scene (the source photograph) is the unit of content: crops and reference draws of one
    photograph are not independent, so every CI resamples whole scenes and says over how many
    (``n_scenes``; photos stand in for scenes in rows without a ``scene`` column). PSNR columns
    follow the 100 dB convention (:func:`~piebench.metrics.fidelity.cap_psnr`).
    """
    from .metrics.fidelity import cap_psnr
    from .stats import bootstrap_ci

    df = result.per_image.copy()
    for col in [c for c in df.columns if "psnr" in c and pd.api.types.is_numeric_dtype(df[c])]:
        df[col] = cap_psnr(df[col])
    unit = "scene" if "scene" in df else "photo"
    summary: dict[str, Any] = {}
    for group, sel in (("all", np.ones(len(df), bool)), ("seen", df["seen"].to_numpy()),
                       ("unseen", ~df["seen"].to_numpy())):
        part = df[sel]
        if part.empty:
            continue
        g: dict[str, Any] = {"n_images": int(len(part)), "n_photos": int(part["photo"].nunique()),
                             "n_scenes": int(part[unit].nunique()), "n_users": int(part["user"].nunique())}

        def ci_of(vals: np.ndarray, part: pd.DataFrame = part) -> dict[str, Any]:
            keep = np.isfinite(vals)
            clusters = part[unit].to_numpy()[keep]
            ci = bootstrap_ci(vals[keep], clusters=clusters, seed=seed)
            return {"mean": float(ci.mean), "ci": [float(ci.lo), float(ci.hi)], "n_scenes": int(len(set(clusters)))}

        for name in [*metric_names, "identity_psnr", "sensitivity"]:
            if name not in part or part[name].isna().all():
                continue
            g[name] = ci_of(part[name].to_numpy(dtype=float))
        if "psnr" in g and "identity_psnr" in g:
            g["gain_over_identity"] = ci_of((part["psnr"] - part["identity_psnr"]).to_numpy(dtype=float))
        summary[group] = g
    per_user = df.groupby("user_name", sort=False)
    summary["per_user"] = {
        str(name): {"seen": bool(part["seen"].iloc[0]),
                    **{m: float(part[m].mean()) for m in [*metric_names, "identity_psnr", "sensitivity"]
                       if m in part and part[m].notna().any() and np.isfinite(part[m]).all()}}
        for name, part in per_user}
    for name, why in result.unavailable.items():
        summary.setdefault("unavailable", {})[name] = why
    return summary
