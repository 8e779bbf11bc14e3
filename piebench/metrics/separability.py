"""Are users told apart? Separability of embeddings or preference vectors by user (scikit-learn based)

Inputs are ``emb`` [M, D] (numpy or torch), ``users`` [M] and ``photos`` [M] (any hashable
ids of the *content*: pass scene ids, not crop ids, because crops of one photograph share their
content). All users retouch the same photos, so content dominates raw embeddings: a user's
neighbour is usually another user's version of the *same photo*. The metrics below therefore
never let a same-content item stand in for "another user's style":

- :func:`silhouette_cosine`: silhouette with cosine distance; the neighbour-cluster distance
  b(i) ignores items of i's photo (see its docstring for exactly what is excluded).
- :func:`recall_at_1`: nearest neighbour among items of *other photos* only;
  :func:`user_recall` adds its chance level and a CI over users (the headline figure).
- :func:`linear_probe`: logistic regression, train/test split by photo.
- :func:`nmi_kmeans`: k-means (k = #users) vs users, NMI (no exclusion possible; content-biased).
- :func:`ridge_probe`: preference vectors -> users' true parameters, R^2 on held-out users with
  the ridge penalty chosen by nested group CV, next to its chance level from shuffled users.
- :func:`tsne_plot`: a t-SNE picture coloured by user.

Why the silhouette and recall@1 disagree: the silhouette compares an item's mean distance to
its own user with its mean distance to the *nearest* other user. pie-synth's users are drawn
around shared style archetypes, so most users have a near-twin whose items sit as close as their
own; the silhouette is then near 0 or negative even when every item's single nearest neighbour
is its own user's. Recall@1 asks the question the enhancer needs answered (is the nearest
preference the same user's?), so it is the headline figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..figures import FONT_PT, legend_outside, new_figure, save
from ..stats import bootstrap_ci

__all__ = [
    "linear_probe", "nmi_kmeans", "recall_at_1", "recall_at_1_chance", "ridge_probe",
    "separability_report", "silhouette_cosine", "tsne_plot", "user_recall",
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
    xn = normalize(x)
    distinct, same = np.unique(xn.round(12), axis=0, return_inverse=True)
    if len(distinct) < k:  # fewer distinct points than users (a blind encoder): each point is a cluster
        labels = same.ravel()
    else:
        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(xn)
    return float(normalized_mutual_info_score(u, labels))


def _other_photo_mask(p: np.ndarray) -> np.ndarray:
    mask = p[:, None] != p[None, :]
    if not mask.any(1).all():
        raise UsageError("every item needs items of other photos (a single photo leaves no neighbour)")
    return mask


def _recall_hits(x: np.ndarray, u: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per item: 1.0 when its cosine nearest neighbour among other photos has the same user."""
    from sklearn.preprocessing import normalize

    mask = _other_photo_mask(p)
    z = normalize(x)
    sim = np.where(mask, z @ z.T, -np.inf)
    return (u[sim.argmax(1)] == u).astype(np.float64)


def recall_at_1(emb: Any, users: Any, photos: Any) -> float:
    """Fraction of items whose cosine nearest neighbour among *other photos* has the same user.

    The item itself and every item of its photo (any user) are excluded from the search.
    """
    return float(_recall_hits(*_prepare(emb, users, photos)).mean())


def user_recall(emb: Any, users: Any, photos: Any, seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """Recall@1 (:func:`recall_at_1`) with its chance level and a 95% CI: ``{"mean", "ci",
    "chance", "n_items", "n_users"}``.

    The CI resamples users (each with all its items; the candidate set stays the full one): the
    users are the sample the question "are users told apart?" generalises over.
    """
    x, u, p = _prepare(emb, users, photos)
    ci = bootstrap_ci(_recall_hits(x, u, p), clusters=u, n_boot=n_boot, seed=seed)
    return {"mean": float(ci.mean), "ci": [float(ci.lo), float(ci.hi)], "chance": recall_at_1_chance(u, p),
            "n_items": int(len(u)), "n_users": int(u.max()) + 1}


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


def _ridge_path(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Ridge predictions ``[A, n_te, K]`` for every alpha (features standardised on the training
    rows, intercept unpenalised), from one SVD of the training rows."""
    mu, sd = xtr.mean(0), xtr.std(0)
    sd[sd == 0] = 1.0
    a, b = (xtr - mu) / sd, (xte - mu) / sd
    ym = ytr.mean(0)
    u_, s_, vt = np.linalg.svd(a, full_matrices=False)
    uty = u_.T @ (ytr - ym)
    return np.stack([b @ (vt.T @ ((s_ / (s_ ** 2 + al))[:, None] * uty)) + ym for al in alphas])


def _r2(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R^2 per column (sklearn's r2_score, raw values)."""
    from sklearn.metrics import r2_score

    return np.atleast_1d(r2_score(y, pred, multioutput="raw_values"))


def _nested_ridge(x: np.ndarray, y: np.ndarray, g: np.ndarray, n_splits: int, inner_splits: int,
                  alphas: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold predictions on held-out groups; each outer fold picks its alpha by an inner
    GroupKFold on its own training groups (the mean R^2 over columns decides)."""
    from sklearn.model_selection import GroupKFold

    pred, chosen = np.zeros_like(y), []
    for tr, te in GroupKFold(n_splits=min(n_splits, len(np.unique(g)))).split(x, y, g):
        inner = GroupKFold(n_splits=min(inner_splits, len(np.unique(g[tr]))))
        oof = np.zeros((len(alphas), len(tr), y.shape[1]))
        for itr, ite in inner.split(x[tr], y[tr], g[tr]):
            oof[:, ite] = _ridge_path(x[tr][itr], y[tr][itr], x[tr][ite], alphas)
        best = alphas[int(np.argmax([_r2(y[tr], o).mean() for o in oof]))]
        pred[te] = _ridge_path(x[tr], y[tr], x[te], np.array([best]))[0]
        chosen.append(float(best))
    return pred, chosen


def ridge_probe(vectors: Any, true_params: Any, param_names: Sequence[str], groups: Any, n_splits: int = 5,
                inner_splits: int = 4, shuffles: int = 10, seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """R^2 of a linear map from preference vectors to the users' true parameters, on held-out users.

    ``vectors`` [M, D], ``true_params`` [M, K] (column k named ``param_names[k]``, one row per
    vector, equal within a group), ``groups`` [M] (user ids). Outer GroupKFold over users
    (``min(n_splits, #users)`` folds): no user is in train and test at once. The ridge penalty is
    chosen *inside* each outer training set by GroupKFold over its users (nested CV; alphas
    1e-2..1e6 on standardised features): choosing it by leave-one-row-out, as RidgeCV does,
    keeps a user's other vectors in training, rewards memorising users and picks a penalty far
    too small for users never seen. Parameters that do not vary across users are left out
    (``constant``). Returns R^2 per parameter, ``mean`` (over parameters), its 95% ``ci``
    (bootstrap over users of the out-of-fold squared errors, the total variance held fixed), ``chance`` / ``chance_hi`` (mean and
    95th percentile of ``mean`` with the users' parameters shuffled among users, ``shuffles``
    times), ``alphas`` (chosen per outer fold), ``n_points`` and ``n_users``.

    On held-out users, predicting the training users' mean scores a *negative* R^2 (the held-out
    users' mean differs from it), so the chance level, not 0, is the floor to compare with.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # small matrices: idle BLAS threads only spin on shared cores
        return _ridge_probe(vectors, true_params, param_names, groups, n_splits, inner_splits, shuffles, seed,
                            n_boot)


def _ridge_probe(vectors: Any, true_params: Any, param_names: Sequence[str], groups: Any, n_splits: int,
                 inner_splits: int, shuffles: int, seed: int, n_boot: int) -> dict[str, Any]:
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().cpu().numpy()
    x = np.asarray(vectors, dtype=np.float64)
    y = np.asarray(true_params, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    names = list(param_names)
    if x.ndim != 2 or y.ndim != 2 or y.shape[0] != x.shape[0] or y.shape[1] != len(names):
        raise UsageError(f"ridge_probe needs vectors [M,D], true_params [M,{len(names)}] "
                         f"(one column per name); got {x.shape} and {y.shape}")
    g = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    n_groups = int(g.max()) + 1 if g.size else 0
    if g.shape != (x.shape[0],) or n_groups < 3:
        raise UsageError("ridge_probe needs one group (user) id per vector and at least three users")
    table = np.stack([y[g == k][0] for k in range(n_groups)])  # [users, K]
    vary = table.std(0) > 1e-9
    if not vary.any():
        raise UsageError("ridge_probe: no parameter varies across the users")
    alphas = np.logspace(-2, 6, 17)
    pred, chosen = _nested_ridge(x, table[g][:, vary], g, n_splits, inner_splits, alphas)
    y_v = table[g][:, vary]
    per = _r2(y_v, pred)
    out: dict[str, Any] = {n: float(r) for n, r in zip([n for n, v in zip(names, vary, strict=True) if v], per,
                                                       strict=True)}
    out["mean"] = float(per.mean())
    rng = np.random.default_rng(seed)
    sq_err, total = (y_v - pred) ** 2, y_v.var(0)
    boots = []
    for _ in range(n_boot):  # resample users with their out-of-fold errors; the total variance stays fixed
        idx = np.concatenate([np.flatnonzero(g == k) for k in rng.integers(0, n_groups, n_groups)])
        boots.append(float((1.0 - sq_err[idx].mean(0) / total).mean()))
    lo, hi = np.quantile(boots, [0.025, 0.975])
    out["ci"] = [float(lo), float(hi)]
    chance = []
    for _ in range(shuffles):  # the same probe when parameters carry no information about the user
        y_s = table[rng.permutation(n_groups)][g][:, vary]
        chance.append(float(_r2(y_s, _nested_ridge(x, y_s, g, n_splits, inner_splits, alphas)[0]).mean()))
    out["chance"] = float(np.mean(chance)) if chance else float("nan")
    out["chance_hi"] = float(np.quantile(chance, 0.95)) if chance else float("nan")
    out["alphas"] = chosen
    out["constant"] = [n for n, v in zip(names, vary, strict=True) if not v]
    out["n_points"], out["n_users"] = int(x.shape[0]), n_groups
    return out


def tsne_plot(emb: Any, users: Any, path: str | Path, title: str = "", seed: int = 0,
              user_names: Mapping[Any, str] | None = None) -> Path:
    """Write a t-SNE (cosine, perplexity min(30, (M-1)/3)) scatter coloured by user as a PNG."""
    from sklearn.manifold import TSNE

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


def separability_report(emb: Any, users: Any, photos: Any, seed: int = 0) -> dict[str, Any]:
    """Every separability number for one set of embeddings (or preference vectors), JSON-ready.

    ``photos``: content ids (pass scenes); each figure comes with its chance level, recall@1
    also with a 95% CI over users (``recall_at_1_ci``).
    """
    from sklearn.metrics import silhouette_score

    x, u, p = _prepare(emb, users, photos)
    probe = linear_probe(x, u, p, seed=seed)
    recall = user_recall(x, u, p, seed=seed)
    return {
        "recall_at_1": recall["mean"],
        "recall_at_1_ci": recall["ci"],
        "recall_at_1_chance": recall["chance"],
        "probe_accuracy": probe["accuracy"],
        "probe_chance": probe["chance"],
        "silhouette_cosine": silhouette_cosine(x, u, p),
        "silhouette_cosine_unmasked": float(silhouette_score(x, u, metric="cosine")),
        "silhouette_chance": 0.0,
        "nmi_kmeans": nmi_kmeans(x, u, seed=seed),
        "n_items": int(x.shape[0]),
        "n_users": int(u.max()) + 1,
        "n_photos": int(p.max()) + 1,
    }
