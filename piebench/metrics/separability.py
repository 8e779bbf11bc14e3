"""Are per-image style embeddings separated by user? (scikit-learn based)

Inputs are ``emb`` [M, D] (numpy or torch), ``users`` [M] and ``photos`` [M] (any hashable
ids). All users retouch the same photos, so content dominates raw embeddings: a user's
neighbour is usually another user's version of the *same photo*. The metrics below therefore
never let a same-photo item stand in for "another user's style":

- :func:`silhouette_cosine`: silhouette with cosine distance; the neighbour-cluster distance
  b(i) ignores items of i's photo (see its docstring for exactly what is excluded).
- :func:`recall_at_1`: nearest neighbour among items of *other photos* only.
- :func:`linear_probe`: logistic regression, train/test split by photo.
- :func:`nmi_kmeans`: k-means (k = #users) vs users, NMI (no exclusion possible; content-biased).
- :func:`ridge_probe`: preference vectors -> users' true parameters, grouped CV R^2.
- :func:`tsne_plot`: a t-SNE picture coloured by user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = [
    "linear_probe", "nmi_kmeans", "recall_at_1", "recall_at_1_chance", "ridge_probe",
    "separability_report", "silhouette_cosine", "tsne_plot",
]


def _prepare(emb: Any, users: Any, photos: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(float64 embeddings [M,D], integer user codes [M], integer photo codes [M] or None)."""
    if hasattr(emb, "detach"):
        emb = emb.detach().cpu().numpy()
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2:
        raise UsageError(f"embeddings must be [M, D], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise UsageError("embeddings contain non-finite values")
    m = x.shape[0]

    def codes(ids: Any, name: str) -> np.ndarray:
        a = np.asarray(ids.detach().cpu().numpy() if hasattr(ids, "detach") else ids)
        if a.shape != (m,):
            raise UsageError(f"{name} must give one id per embedding ({m}), got shape {a.shape}")
        return np.unique(a, return_inverse=True)[1].reshape(-1)

    u = codes(users, "users")
    if len(np.unique(u)) < 2:
        raise UsageError("separability needs at least two users")
    return x, u, (codes(photos, "photos") if photos is not None else None)


def _cosine_distances(x: np.ndarray) -> np.ndarray:
    from sklearn.metrics.pairwise import cosine_distances

    return cosine_distances(x)


def silhouette_cosine(emb: Any, users: Any, photos: Any) -> float:
    """Mean silhouette (cosine distance) of the user labels, content-controlled.

    For item i of user u and photo p: a(i) is the mean distance to the other items of u (as in
    sklearn). b(i) is the smallest, over users v != u, mean distance from i to v's items *that
    are not of photo p*: same-photo items of other users are excluded from the neighbour-cluster
    distances (nothing else is). Users with no item left for i are skipped; an item with no
    user left, or whose user has a single item, scores 0 (sklearn's convention for singletons).
    With all photos distinct this is ``sklearn.metrics.silhouette_score(metric="cosine")``.
    """
    x, u, p = _prepare(emb, users, photos)
    n_users = int(u.max()) + 1
    d = _cosine_distances(x)
    onehot = np.eye(n_users)[u]                      # [M, U]
    counts = onehot.sum(0)                           # items per user
    own = (d @ onehot)[np.arange(len(u)), u]
    a = own / np.maximum(counts[u] - 1, 1)
    keep = (p[:, None] != p[None, :]).astype(np.float64)  # 0 for same-photo pairs
    sums, cnt = (d * keep) @ onehot, keep @ onehot   # [M, U]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_other = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.inf)
    mean_other[np.arange(len(u)), u] = np.inf
    b = mean_other.min(1)
    valid = np.isfinite(b) & (counts[u] > 1)
    s = np.zeros(len(u))
    denom = np.maximum(a, b)
    ok = valid & (denom > 0)
    s[ok] = (b[ok] - a[ok]) / denom[ok]
    return float(s.mean())


def nmi_kmeans(emb: Any, users: Any, seed: int = 0) -> float:
    """NMI between k-means clusters (k = #users, on L2-normalised embeddings) and the users."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.preprocessing import normalize

    x, u, _ = _prepare(emb, users)
    k = int(u.max()) + 1
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(normalize(x))
    return float(normalized_mutual_info_score(u, labels))


def _other_photo_mask(p: np.ndarray) -> np.ndarray:
    mask = p[:, None] != p[None, :]
    if not mask.any(1).all():
        raise UsageError("every item needs items of other photos (a single photo leaves no neighbour)")
    return mask


def recall_at_1(emb: Any, users: Any, photos: Any) -> float:
    """Fraction of items whose cosine nearest neighbour among *other photos* has the same user.

    The item itself and every item of its photo (any user) are excluded from the search.
    """
    from sklearn.preprocessing import normalize

    x, u, p = _prepare(emb, users, photos)
    mask = _other_photo_mask(p)
    z = normalize(x)
    sim = np.where(mask, z @ z.T, -np.inf)
    return float((u[sim.argmax(1)] == u).mean())


def recall_at_1_chance(users: Any, photos: Any) -> float:
    """Expected :func:`recall_at_1` of a random neighbour among the same allowed candidates."""
    u = np.unique(np.asarray(users), return_inverse=True)[1].reshape(-1)
    p = np.unique(np.asarray(photos), return_inverse=True)[1].reshape(-1)
    mask = _other_photo_mask(p)
    same = (u[:, None] == u[None, :]) & mask
    return float((same.sum(1) / mask.sum(1)).mean())


def linear_probe(emb: Any, users: Any, photos: Any, seed: int = 0, test_size: float = 0.3) -> dict[str, float]:
    """Logistic regression predicting the user, split by photo (no photo in both train and test).

    Returns ``{"accuracy", "chance", "n_train", "n_test"}``; chance is the majority-user rate of
    the test split (1/#users when balanced).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, u, p = _prepare(emb, users, photos)
    if len(np.unique(p)) < 2:
        raise UsageError("the linear probe needs at least two photos to split train/test by photo")
    train, test = next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed).split(x, u, p))
    if len(np.unique(u[train])) < 2:
        raise UsageError("the probe's training split has a single user; use more photos per user")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(x[train], u[train])
    acc = float((clf.predict(x[test]) == u[test]).mean())
    chance = float(np.bincount(u[test]).max() / len(test))
    return {"accuracy": acc, "chance": chance, "n_train": int(len(train)), "n_test": int(len(test))}


def ridge_probe(vectors: Any, true_params: Any, param_names: Sequence[str], groups: Any,
                n_splits: int = 5) -> dict[str, float]:
    """Out-of-fold R^2 per attribute of RidgeCV from preference vectors to true user parameters.

    ``vectors`` [M, D], ``true_params`` [M, K] (column k named ``param_names[k]``), ``groups``
    [M] (e.g. user ids: no group is in train and test at once). GroupKFold with
    ``min(n_splits, #groups)`` folds; features standardised; alphas 1e-3..1e3. Also returns the
    mean over attributes under ``"mean"``.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import GroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if hasattr(vectors, "detach"):
        vectors = vectors.detach().cpu().numpy()
    x = np.asarray(vectors, dtype=np.float64)
    y = np.asarray(true_params, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    names = list(param_names)
    if x.ndim != 2 or y.ndim != 2 or y.shape[0] != x.shape[0] or y.shape[1] != len(names):
        raise UsageError(f"ridge_probe needs vectors [M,D], true_params [M,{len(names)}] "
                         f"(one column per name); got {x.shape} and {y.shape}")
    g = np.asarray(groups)
    n_groups = len(np.unique(g))
    if g.shape != (x.shape[0],) or n_groups < 2:
        raise UsageError("ridge_probe needs one group id per vector and at least two groups")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    pred = cross_val_predict(model, x, y, groups=g, cv=GroupKFold(n_splits=min(n_splits, n_groups)))
    pred = pred[:, None] if pred.ndim == 1 else pred
    scores = {n: float(r2_score(y[:, k], pred[:, k])) for k, n in enumerate(names)}
    scores["mean"] = float(np.mean(list(scores.values())))
    return scores


def tsne_plot(emb: Any, users: Any, path: str | Path, title: str = "", seed: int = 0,
              user_names: Mapping[Any, str] | None = None) -> Path:
    """Write a t-SNE (cosine, perplexity min(30, (M-1)/3)) scatter coloured by user as a PNG."""
    from sklearn.manifold import TSNE

    from ..figures import FONT_PT, legend_outside, new_figure, save

    x, _, _ = _prepare(emb, users)
    raw = np.asarray(users.detach().cpu().numpy() if hasattr(users, "detach") else users)
    m = x.shape[0]
    if m < 5:
        raise UsageError(f"t-SNE needs at least 5 embeddings, got {m}")
    perplexity = float(min(30.0, max(1.0, (m - 1) / 3.0)))
    # Exact gradients below ~1,000 points: far faster than Barnes-Hut's per-iteration overhead there.
    xy = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed,
              method="exact" if m <= 1000 else "barnes_hut", max_iter=500).fit_transform(x)
    labels = np.unique(raw)
    fig = new_figure(520, 460)  # the legend goes to the right of the axes and widens the image
    ax = fig.add_subplot(1, 1, 1)
    cmap = _user_colours(len(labels))
    for k, label in enumerate(labels):
        sel = raw == label
        name = (user_names or {}).get(label, str(label))
        ax.scatter(xy[sel, 0], xy[sel, 1], s=16, label=name, color=cmap[k])
    ax.set_title(title or f"t-SNE of {m} embeddings (perplexity {perplexity:.0f})", fontsize=FONT_PT + 1)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(labels) <= 40:
        legend_outside(ax, title="user", markerscale=1.3, ncol=1 if len(labels) <= 20 else 2)
    return save(fig, path)


def _user_colours(n: int) -> list[Any]:
    """``n`` distinguishable colours (tab10, then tab20, then a continuous map)."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](i / max(1, n - 1)) for i in range(n)]


def separability_report(emb: Any, users: Any, photos: Any, seed: int = 0) -> dict[str, float]:
    """Every separability number for one set of embeddings, as a flat JSON-ready dict."""
    from sklearn.metrics import silhouette_score

    x, u, p = _prepare(emb, users, photos)
    probe = linear_probe(x, u, p, seed=seed)
    return {
        "silhouette_cosine": silhouette_cosine(x, u, p),
        "silhouette_cosine_unmasked": float(silhouette_score(x, u, metric="cosine")),
        "nmi_kmeans": nmi_kmeans(x, u, seed=seed),
        "recall_at_1": recall_at_1(x, u, p),
        "recall_at_1_chance": recall_at_1_chance(u, p),
        "probe_accuracy": probe["accuracy"],
        "probe_chance": probe["chance"],
        "n_items": int(x.shape[0]),
        "n_users": int(u.max()) + 1,
        "n_photos": int(p.max()) + 1,
    }
