"""Preference control: does the output follow the preference it is given?

For P photos and U users, ``out[p, u]`` is the enhancer's output for photo p under user u's
preference and ``tgt[p, v]`` is user v's retouch of photo p (both ``[P, U, 3, H, W]`` in
[0, 1], torch or numpy). Distance matrices are indexed ``[p, u, v] = d(out[p, u], tgt[p, v])``:
rows are preferences given, columns are targets.

- :func:`mse_matrix`, :func:`psnr_matrix`: the [P, U, U] matrices (``target_matrix`` gives
  d(t_u, t_v), the users' own disagreement).
- :func:`steering_score`: how much of the gap between users the outputs reproduce (1 = all,
  0 = none), with a bootstrap CI over clusters (in a run's record: scenes).
- :func:`control_accuracy`: how often a target's closest output is the one made for it.
- :func:`sensitivity`: PSNR gain of the right preference over the others, per (photo, user).
- :func:`control_heatmap`: the mean PSNR matrix as a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..figures import FONT_PT, new_figure, save
from ..stats import CI
from .fidelity import psnr_from_mse

__all__ = [
    "Steering", "control_accuracy", "control_heatmap", "mse_matrix", "psnr_matrix", "sensitivity",
    "steering_score", "target_matrix",
]


def _stack(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 5 or t.shape[2] != 3:
        raise UsageError(f"{name} must be [P, U, 3, H, W] (photos, users, RGB), got {list(t.shape)}")
    return t


def mse_matrix(out: Any, tgt: Any) -> np.ndarray:
    """``[P, U, U]`` float64: ``[p, u, v]`` = per-image mean squared error of out[p, u] vs tgt[p, v]."""
    o, t = _stack(out, "out"), _stack(tgt, "tgt")
    if o.shape != t.shape:
        raise UsageError(f"out {list(o.shape)} and tgt {list(t.shape)} must have the same shape")
    t64 = t.double()
    rows = [(o[:, u:u + 1].double() - t64).pow(2).mean(dim=(2, 3, 4)) for u in range(o.shape[1])]
    return torch.stack(rows, dim=1).cpu().numpy()


def psnr_matrix(out: Any, tgt: Any) -> np.ndarray:
    """``[P, U, U]`` PSNR in dB (data range 1) of out[p, u] vs tgt[p, v], capped at 100 dB where equal."""
    return psnr_from_mse(mse_matrix(out, tgt))


def target_matrix(tgt: Any) -> np.ndarray:
    """``[P, U, U]`` MSE between users' targets, d(t_u, t_v): the denominator of :func:`steering_score`."""
    return mse_matrix(tgt, tgt)


def _square(m: Any, name: str) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 2:
        raise UsageError(f"{name} must be [P, U, U] (or [U, U]) with at least two users, got {a.shape}")
    return a


@dataclass(frozen=True)
class Steering:
    """Steering scores: ``pairs`` [U, U] (nan on the diagonal and where users' targets agree),
    ``per_user`` [U] (mean over v of pairs[u, v]: how well u's preference pulls away from others),
    ``score``: CI of the mean over pairs, bootstrap over clusters of rows (``score.n_clusters``)."""

    pairs: np.ndarray
    per_user: np.ndarray
    score: CI


def _pair_scores(d_out: np.ndarray, d_tgt: np.ndarray) -> np.ndarray:
    """S[u, v] = (E d(out_u, t_v) - E d(out_v, t_v)) / E d(t_u, t_v) for u != v (E over photos)."""
    e_out, e_tgt = d_out.mean(0), d_tgt.mean(0)
    num = e_out - np.diag(e_out)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(e_tgt > 0, num / e_tgt, np.nan)
    np.fill_diagonal(s, np.nan)
    return s


def steering_score(d_out_tgt: Any, d_tgt_tgt: Any, *, clusters: Any = None, cluster_name: str = "photos",
                   n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> Steering:
    """How far outputs move between users, relative to how far the users' targets are apart.

    For u != v: S[u, v] = (E_p d(out_u, t_v) - E_p d(out_v, t_v)) / E_p d(t_u, t_v), with d the
    MSE matrices of :func:`mse_matrix` and :func:`target_matrix`. 1: out_u lands as far from t_v
    as t_u is (follows the preference fully); 0: the preference changes nothing. For
    out_u = x + eps (t_u - x), S[u, v] + S[v, u] = 2 eps exactly, so the score is eps. The
    score is the mean over ordered pairs with distinct targets.

    Its CI resamples ``clusters`` (one id per row of the matrices, e.g. the scene of each
    (photo, draw) group, so that draws and crops of one photograph move together; named
    ``cluster_name`` in the CI's method); without, every row is its own cluster.
    """
    d_out, d_tgt = _square(d_out_tgt, "d_out_tgt"), _square(d_tgt_tgt, "d_tgt_tgt")
    if d_out.shape != d_tgt.shape:
        raise UsageError(f"d_out_tgt {d_out.shape} and d_tgt_tgt {d_tgt.shape} must have the same shape")
    pairs = _pair_scores(d_out, d_tgt)
    if np.isnan(pairs).all():
        raise UsageError("every pair of users has identical targets: steering is undefined")
    mean = float(np.nanmean(pairs))
    n_rows = d_out.shape[0]
    codes = (np.arange(n_rows) if clusters is None
             else np.unique(np.asarray(clusters), return_inverse=True)[1].reshape(-1))
    if codes.shape != (n_rows,):
        raise UsageError(f"clusters must give one id per row ({n_rows}), got {np.shape(clusters)}")
    members = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)]
    n_c = len(members)
    if n_c > 1:
        rng = np.random.default_rng(seed)
        boots = np.empty(n_boot)
        for i in range(n_boot):
            idx = np.concatenate([members[c] for c in rng.integers(0, n_c, n_c)])
            s = _pair_scores(d_out[idx], d_tgt[idx])
            boots[i] = np.nanmean(s) if not np.isnan(s).all() else np.nan
        lo, hi = np.nanquantile(boots, [alpha / 2, 1 - alpha / 2])
    else:
        lo = hi = mean
    score = CI(mean, float(lo), float(hi), int(n_rows), int(n_c), None,
               f"ratio of means over {n_rows} rows, bootstrap over {n_c} {cluster_name}")
    with np.errstate(invalid="ignore"):
        per_user = np.array([np.nanmean(r) if not np.isnan(r).all() else np.nan for r in pairs])
    return Steering(pairs=pairs, per_user=per_user, score=score)


def control_accuracy(psnr: Any) -> float:
    """Fraction of (photo, target v) whose best-matching output is out_v (strictly; ties fail).

    ``psnr``: [P, U, U] (or a mean [U, U]) indexed [p, u = preference, v = target]. Chance is 1/U.
    """
    m = _square(psnr, "psnr")
    u = m.shape[1]
    diag = m[:, np.arange(u), np.arange(u)]                    # [P, U]: PSNR(out_v, t_v)
    others = np.where(np.eye(u, dtype=bool)[None], -np.inf, m).max(axis=1)  # best u != v per column
    return float((diag > others).mean())


def sensitivity(psnr: Any) -> np.ndarray:
    """``[P, U]``: PSNR(out_u, t_u) - mean_{v != u} PSNR(out_v, t_u), in dB (0 = preference ignored)."""
    m = _square(psnr, "psnr")
    u = m.shape[1]
    diag = m[:, np.arange(u), np.arange(u)]
    off = (m.sum(axis=1) - diag) / (u - 1)                      # column means without the diagonal
    return diag - off


def control_heatmap(psnr_matrix_mean: Any, user_names: Sequence[str], path: str | Path,
                    title: str = "PSNR (dB): output under preference (row) vs target (column)") -> Path:
    """Write the mean [U, U] PSNR matrix as an annotated heatmap PNG; returns the path.

    Shown at its natural size in the report: cells of 46 px, user names on both axes and
    every text at least 11 px (:mod:`piebench.figures`); values are written in the cells (46 px)
    up to 14 users, beyond that the cells are 30 px.
    """
    m = np.asarray(psnr_matrix_mean, dtype=np.float64)
    if m.ndim == 3:
        m = m.mean(0)
    names = list(user_names)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(names):
        raise UsageError(f"control_heatmap needs a [U, U] matrix and U names, got {m.shape} and {len(names)}")
    u = len(names)
    label_px = 7 * max((len(n) for n in names), default=4) + 60  # room for the longest user name
    cell = 46 if u <= 14 else 30  # values are written in the cells up to 14 users
    fig = new_figure(max(560, cell * u + label_px + 130), max(460, cell * u + label_px + 70))
    ax = fig.add_subplot(1, 1, 1)
    finite = m[np.isfinite(m)]
    im = ax.imshow(np.where(np.isfinite(m), m, np.nan), cmap="viridis",
                   vmin=finite.min() if finite.size else None, vmax=finite.max() if finite.size else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(u), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=FONT_PT)
    ax.set_yticks(range(u), names, fontsize=FONT_PT)
    ax.set_xlabel("target of user", fontsize=FONT_PT + 1)
    ax.set_ylabel("output under preference of user", fontsize=FONT_PT + 1)
    if u <= 14:
        for i in range(u):
            for j in range(u):
                ax.text(j, i, f"{m[i, j]:.1f}", ha="center", va="center", fontsize=8.5,
                        color="white" if i != j else "black", fontweight="bold" if i == j else "normal")
    ax.set_title(title, fontsize=FONT_PT + 1)
    fig.tight_layout()
    return save(fig, path)
