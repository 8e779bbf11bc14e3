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
from tqdm import tqdm

from .data.manifest import eval_batches
from .errors import UsageError
from .full_resolution import enhance_each
from .interfaces import Encoder, Enhancer
from .metrics.fidelity import cap_psnr, psnr_from_mse
from .stats import bootstrap_ci


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
    vector_draws: np.ndarray  # [M] the reference draw of each vector
    unavailable: dict[str, str] = field(default_factory=dict)


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
    blended tiles (:func:`~piebench.full_resolution.enhance_full`); references, the encoder's
    query and the embeddings of the targets stay at the store's size.
    """
    encoder.eval()
    enhancer.eval()
    parts = _Parts()
    n_groups = len(manifest["entries"]) * int(manifest["draws"])
    bar = tqdm(total=n_groups, desc="evaluate", unit="photo", disable=not progress, leave=False)
    for photo, draw, batch in eval_batches(dataset, manifest, pairs=pairs, device=device, full=full):
        pref = encoder(batch.refs)
        if full:
            out = enhance_each(enhancer, batch.input, pref, full_resolution=full_resolution_path)
        else:
            out = enhancer(batch.input, pref).float().clamp(0, 1)
        target = batch.target.float()
        uid = batch.user.cpu().numpy()
        d_out = _mse_matrix(out, target).double().cpu().numpy()  # [u_out, v_tgt]
        parts.rows.extend(_rows(dataset, photo, draw, uid, out, target, batch.input.float(), metrics, d_out))
        parts.add_group(photo, uid, d_out, _mse_matrix(target, target).double().cpu().numpy(), len(dataset.users))
        if draw == 0:  # the targets do not change with the draw
            parts.add_embeddings(encoder.embed(batch.extras.get("store_target", target)), uid, photo)
        parts.add_vectors(pref.vector, uid, photo, draw)  # what the enhancer received, every draw
        bar.update(1)
    bar.close()
    return parts.result(unavailable)


def _rows(dataset: Any, photo: int, draw: int, uid: np.ndarray, out: torch.Tensor, target: torch.Tensor,
          inputs: torch.Tensor, metrics: dict[str, Callable], d_out: np.ndarray) -> list[dict[str, Any]]:
    """The per-image rows of one (photo, draw) group: metrics, identity PSNR, sensitivity."""
    users = dataset.users
    values = {name: fn(out, target).detach().double().cpu().numpy() for name, fn in metrics.items()}
    identity = metrics["psnr"](inputs, target).double().cpu().numpy() if "psnr" in metrics else None
    psnr_m = psnr_from_mse(d_out)
    rows = []
    for i, u in enumerate(uid):
        others = [j for j in range(len(uid)) if j != i]
        row = {"photo": int(photo), "scene": dataset.photos[photo].scene, "draw": int(draw), "user": int(u),
               "user_name": users[u].name, "seen": bool(users[u].seen)}
        for name, val in values.items():
            row[name] = float(val[i])
        if identity is not None:
            row["identity_psnr"] = float(identity[i])
        # own preference vs every other user's preference, scored against u's target
        row["sensitivity"] = float(psnr_m[i, i] - psnr_m[others, i].mean()) if others else float("nan")
        rows.append(row)
    return rows


@dataclass
class _Parts:
    """What :func:`evaluate` accumulates group by group, stacked into an :class:`EvalResult`."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    mot: list[np.ndarray] = field(default_factory=list)
    mtt: list[np.ndarray] = field(default_factory=list)
    gphotos: list[int] = field(default_factory=list)
    emb: list[list[np.ndarray]] = field(default_factory=lambda: [[], [], []])  # embeddings, users, photos
    vec: list[list[np.ndarray]] = field(default_factory=lambda: [[], [], [], []])  # vectors, users, photos, draws

    def add_group(self, photo: int, uid: np.ndarray, d_out: np.ndarray, d_tgt: np.ndarray, n_users: int) -> None:
        """The ``[U, U]`` control matrices of one group, NaN for users without this photo."""
        full_out, full_tgt = np.full((n_users, n_users), np.nan), np.full((n_users, n_users), np.nan)
        full_out[np.ix_(uid, uid)] = d_out
        full_tgt[np.ix_(uid, uid)] = d_tgt
        self.mot.append(full_out)
        self.mtt.append(full_tgt)
        self.gphotos.append(photo)

    def add_embeddings(self, emb: torch.Tensor, uid: np.ndarray, photo: int) -> None:
        for part, value in zip(self.emb, (emb.float().cpu().numpy(), uid, np.full(len(uid), photo)), strict=True):
            part.append(value)

    def add_vectors(self, vectors: torch.Tensor, uid: np.ndarray, photo: int, draw: int) -> None:
        n = len(uid)
        for part, value in zip(self.vec, (vectors.float().cpu().numpy(), uid, np.full(n, photo), np.full(n, draw)),
                               strict=True):
            part.append(value)

    def result(self, unavailable: dict[str, str] | None) -> EvalResult:
        emb, emb_u, emb_p = (_cat(p) for p in self.emb)
        vec, vec_u, vec_p, vec_d = (_cat(p) for p in self.vec)
        return EvalResult(
            per_image=pd.DataFrame(self.rows), mse_out_tgt=np.stack(self.mot), mse_tgt_tgt=np.stack(self.mtt),
            group_photos=np.asarray(self.gphotos), embeddings=emb, embedding_users=emb_u, embedding_photos=emb_p,
            vectors=vec, vector_users=vec_u, vector_photos=vec_p, unavailable=dict(unavailable or {}),
            vector_draws=vec_d)


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0,))


def summarize(result: EvalResult, metric_names: list[str], seed: int = 0) -> dict[str, Any]:
    """Means per group (all / seen / unseen users) with bootstrap CIs clustered by scene.

    A scene (the source photograph) is the unit of content: crops and reference draws of one
    photograph are not independent, so every CI resamples whole scenes and says over how many
    (``n_scenes``; photos stand in for scenes in rows without a ``scene`` column). PSNR columns
    follow the 100 dB convention (:func:`~piebench.metrics.fidelity.cap_psnr`).
    """
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


# -- sharded evaluation (torchrun): rank r scores manifest entries r, r + W, ... -------------------
def gather_results(dist: Any, result: EvalResult | None, manifest: dict[str, Any]) -> EvalResult | None:
    """The one-process :class:`EvalResult` of ``manifest`` from every rank's result of its
    shard (``dist.shard_manifest``; None for an empty shard): on rank 0, None elsewhere.
    ``dist`` is the run's :class:`~piebench.distributed.DistContext` (it only communicates)."""
    if not dist.active:
        return result
    parts = dist.all_gather_object(result)
    return merge_eval(parts, manifest) if dist.is_main else None


def merge_eval(parts: list[EvalResult | None], manifest: dict[str, Any]) -> EvalResult:
    """One :class:`EvalResult` in manifest order from the ranks' shard results
    (rank r evaluated entries r, r + W, ...)."""
    parts = [p for p in parts if p is not None]  # a rank with no entries (more ranks than photos)
    order = {int(e["photo"]): i for i, e in enumerate(manifest["entries"])}
    if len(order) != len(manifest["entries"]):
        raise UsageError("the reference manifest lists a photo twice; sharded evaluation needs one entry per photo")

    def by_photo(photos: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
        key = np.array([order[int(p)] for p in photos], np.int64)
        perm = np.argsort(key, kind="stable")
        return [a[perm] for a in arrays]

    def cat(name: str) -> np.ndarray:
        arrays = [getattr(p, name) for p in parts if len(getattr(p, name))]
        return np.concatenate(arrays) if arrays else getattr(parts[0], name)

    df = pd.concat([p.per_image for p in parts], ignore_index=True)
    if len(df):
        df = df.assign(_k=df["photo"].map(order)).sort_values(["_k", "draw"], kind="stable")
        df = df.drop(columns="_k").reset_index(drop=True)
    gp = cat("group_photos")
    mot, mtt, gp = by_photo(gp, cat("mse_out_tgt"), cat("mse_tgt_tgt"), gp)
    emb, emb_u, emb_p = by_photo(cat("embedding_photos"), cat("embeddings"), cat("embedding_users"),
                                 cat("embedding_photos"))
    vec, vec_u, vec_p, vec_d = by_photo(cat("vector_photos"), cat("vectors"), cat("vector_users"), cat("vector_photos"),
                                        cat("vector_draws"))
    unavailable: dict[str, str] = {}
    for p in parts:
        unavailable.update(p.unavailable)
    return EvalResult(per_image=df, mse_out_tgt=mot, mse_tgt_tgt=mtt, group_photos=gp, embeddings=emb,
                      embedding_users=emb_u, embedding_photos=emb_p, vectors=vec, vector_users=vec_u,
                      vector_photos=vec_p, unavailable=unavailable, vector_draws=vec_d)
