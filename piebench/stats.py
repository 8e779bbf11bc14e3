"""Paired and clustered statistics for benchmark results.

Items (per-image metric values) of one photo are correlated: the same photo retouched for
several users, or seen through several reference draws. Intervals therefore resample
*clusters* (photo ids) when ``clusters`` is given, and model comparisons are *paired* per item.

- :func:`bootstrap_ci`: percentile bootstrap of the mean (items or clusters).
- :func:`paired_diff`: CI of the mean per-item difference ``a - b``.
- :func:`seeds_summary`: mean, std and t-interval over training seeds.
- :func:`indistinguishable_from_best`: which models a paired CI cannot separate from the best.
- :func:`minimum_detectable_effect`: the smallest mean difference the protocol can resolve.

Comparing two *configurations* needs more: training noise lives in the seed, so seeds are
samples too. :func:`compare_cells` (one comparison), :func:`crossed_test` (vectorised) and
:func:`crossed_variance` (the variance over seeds and scenes, and why) give an interval that
is calibrated over seeds and scenes; :func:`aa_false_positives` measures that calibration on
real runs and :func:`table_mde` a table's minimum detectable effect between two entries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np

from .errors import UsageError

__all__ = [
    "CI", "Comparison", "Tie", "aa_false_positives", "bootstrap_ci", "compare_cells", "crossed_test",
    "crossed_variance", "detectable_effect", "indistinguishable_from_best", "minimum_detectable_effect",
    "paired_diff", "seeds_summary", "table_mde",
]

_MAX_CELLS = 4_000_000  # bootstrap weight matrix cells per chunk (memory bound)


@dataclass(frozen=True)
class CI:
    """A mean with a two-sided confidence interval [lo, hi].

    n: number of items; n_clusters: number of resampled clusters (== n for an item bootstrap,
    None for a t-interval over seeds); std: standard deviation of the values (ddof=1) where
    meaningful; method: how the interval was made.
    """

    mean: float
    lo: float
    hi: float
    n: int
    n_clusters: int | None = None
    std: float | None = None
    method: str = ""

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval is above or below zero."""
        return bool(self.lo > 0 or self.hi < 0)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the record stores this)."""
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def _values(values: Any, name: str = "values") -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise UsageError(f"{name} must be one-dimensional (one value per item), got shape {v.shape}")
    if v.size == 0:
        raise UsageError(f"{name} is empty: nothing to summarise")
    if not np.all(np.isfinite(v)):
        bad = int((~np.isfinite(v)).sum())
        raise UsageError(f"{name} has {bad} non-finite entries (e.g. PSNR of identical images is inf); "
                         f"drop or clip them first")
    return v


def _cluster_ids(clusters: Any, n: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n), n
    c = np.asarray(clusters)
    if c.shape != (n,):
        raise UsageError(f"clusters must give one id per item ({n}), got shape {c.shape}")
    _, ids = np.unique(c, return_inverse=True)
    ids = ids.reshape(-1)
    return ids, int(ids.max()) + 1


def _boot_means(v: np.ndarray, ids: np.ndarray, g: int, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` cluster-bootstrap resamples (each resample: g clusters with replacement)."""
    sums = np.bincount(ids, weights=v, minlength=g)
    counts = np.bincount(ids, minlength=g).astype(np.float64)
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CELLS // g)
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        draws = rng.integers(0, g, size=(k, g)) + g * np.arange(k)[:, None]
        w = np.bincount(draws.reshape(-1), minlength=k * g).reshape(k, g).astype(np.float64)
        out[start:start + k] = (w @ sums) / (w @ counts)
    return out


def bootstrap_ci(values: Any, *, clusters: Any = None, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> CI:
    """Percentile bootstrap CI of the mean of ``values``.

    With ``clusters`` (one id per item, e.g. photo ids) whole clusters are resampled with
    replacement and the resample's mean is the item-weighted mean of the chosen clusters;
    without, items are resampled. One cluster gives a zero-width interval.
    """
    v = _values(values)
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise UsageError(f"n_boot must be at least 1, got {n_boot}")
    ids, g = _cluster_ids(clusters, v.size)
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    method = f"percentile bootstrap over {'clusters' if clusters is not None else 'items'}, {n_boot} resamples"
    if g == 1:
        return CI(mean, mean, mean, int(v.size), 1, std, method)
    means = _boot_means(v, ids, g, n_boot, seed)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return CI(mean, float(lo), float(hi), int(v.size), g, std, method)


def _align(a: Any, b: Any, keys_a: Any, keys_b: Any, clusters: Any) -> tuple[np.ndarray, Any]:
    """``a - b`` per item, aligned by keys when given; clusters follow ``a``'s order."""
    va, vb = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if (keys_a is None) != (keys_b is None):
        raise UsageError("give both keys_a and keys_b, or neither (then a and b must be aligned)")
    if keys_a is None:
        if va.shape != vb.shape:
            raise UsageError(f"a ({va.size}) and b ({vb.size}) are not aligned; pass keys_a and keys_b")
        return va - vb, clusters
    ka, kb = list(keys_a), list(keys_b)
    if len(ka) != va.size or len(kb) != vb.size:
        raise UsageError("keys_a / keys_b must give one key per value of a / b")
    if len(set(ka)) != len(ka) or len(set(kb)) != len(kb):
        raise UsageError("keys must be unique per item (e.g. (photo, user) pairs)")
    only_a, only_b = set(ka) - set(kb), set(kb) - set(ka)
    if only_a or only_b:
        raise UsageError(f"a and b cover different items ({len(only_a)} keys only in a, {len(only_b)} only "
                         f"in b); compare models on the same items")
    pos_b = {k: i for i, k in enumerate(kb)}
    order = np.array([pos_b[k] for k in ka])
    return va - vb[order], clusters


def paired_diff(a: Any, b: Any, *, keys_a: Any = None, keys_b: Any = None, clusters: Any = None,
                n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> CI:
    """CI of the mean per-item difference ``a - b`` (paired on the same items).

    ``a`` and ``b`` are aligned arrays, or are aligned by ``keys_a`` / ``keys_b`` (unique,
    hashable, the same set on both sides). ``clusters`` follows ``a``'s order.
    """
    diff, clusters = _align(a, b, keys_a, keys_b, clusters)
    ci = bootstrap_ci(diff, clusters=clusters, n_boot=n_boot, alpha=alpha, seed=seed)
    return CI(ci.mean, ci.lo, ci.hi, ci.n, ci.n_clusters, ci.std, "paired " + ci.method)


def seeds_summary(per_seed_means: Sequence[float], alpha: float = 0.05) -> CI:
    """Mean, std (ddof=1) and Student-t interval over training seeds; lo/hi/std are nan for one seed."""
    from scipy import stats as st

    v = _values(per_seed_means, "per_seed_means")
    mean = float(v.mean())
    if v.size < 2:
        return CI(mean, math.nan, math.nan, 1, None, math.nan, "one seed: no interval")
    std = float(v.std(ddof=1))
    half = float(st.t.ppf(1 - alpha / 2, df=v.size - 1)) * std / math.sqrt(v.size)
    return CI(mean, mean - half, mean + half, int(v.size), None, std, f"t-interval over {v.size} seeds")


@dataclass(frozen=True)
class Tie:
    """One model against the best: ``diff`` is the paired CI of (model - best)."""

    name: str
    mean: float
    is_best: bool
    diff: CI
    indistinguishable: bool  # True for the best itself, or when diff's CI includes 0


def indistinguishable_from_best(values: Mapping[str, Any], *, higher_is_better: bool = True,
                                clusters: Any = None, n_boot: int = 2000, alpha: float = 0.05,
                                seed: int = 0) -> dict[str, Tie]:
    """Which models are statistically tied with the best (no multiple-comparison correction).

    ``values``: model name -> per-item values aligned on the same items (a dict of arrays or a
    pandas DataFrame with one column per model). The best is the highest (or lowest) mean; a
    model is indistinguishable when the paired bootstrap CI of its difference to the best
    includes 0.
    """
    table = {str(k): _values(v, f"values[{k!r}]") for k, v in values.items()}
    if not table:
        raise UsageError("no models to compare")
    sizes = {v.size for v in table.values()}
    if len(sizes) != 1:
        raise UsageError(f"models have different numbers of items {sorted(sizes)}; align them on the same items")
    means = {k: float(v.mean()) for k, v in table.items()}
    best = (max if higher_is_better else min)(means, key=means.__getitem__)
    out = {}
    for name, v in table.items():
        ci = paired_diff(v, table[best], clusters=clusters, n_boot=n_boot, alpha=alpha, seed=seed)
        out[name] = Tie(name, means[name], name == best, ci, name == best or not ci.excludes_zero)
    return out


def minimum_detectable_effect(values: Any, clusters: Any = None, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """Smallest true mean difference a two-sided test at ``alpha`` detects with ``power``.

    ``values``: per-item paired differences between two models (preferred; e.g. two seeds or
    two reference draws of one model give the protocol's noise floor), or per-item values.
    MDE = (z_{1-alpha/2} + z_{power}) * SE, SE the standard error of the (cluster-aware) mean:
    with ``clusters`` the ratio-estimator linearisation
    SE^2 = G / (G-1) * sum_g (S_g - mean * n_g)^2 / N^2 (S_g, n_g: cluster sums and sizes),
    which is var(cluster means) / G for equal cluster sizes.
    """
    from scipy.stats import norm

    v = _values(values)
    if not (0 < alpha < 1 and 0 < power < 1):
        raise UsageError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    ids, g = _cluster_ids(clusters, v.size)
    if g < 2:
        raise UsageError("need at least two clusters (photos) to estimate a standard error")
    sums = np.bincount(ids, weights=v, minlength=g)
    counts = np.bincount(ids, minlength=g).astype(np.float64)
    mean = v.mean()
    se = math.sqrt(g / (g - 1) * float(((sums - mean * counts) ** 2).sum()) / v.size ** 2)
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


# -- comparing two configurations: seeds and scenes ----------------------------------------------
#: Verdicts of :func:`compare_cells`; the last two are "no verdict".
NEEDS_SEEDS, NEEDS_SCENES = "needs >= 2 seeds", "needs >= 2 scenes"


@dataclass(frozen=True)
class Comparison:
    """``a - b`` between two configurations, with its interval over seeds and scenes.

    lo/hi/se/df are nan when no verdict is possible (fewer than 2 seeds on a side, or fewer
    than 2 scenes): ``verdict`` then says what is missing. ``seeds``: seeds per side;
    ``scenes``: test scenes (source photographs); ``items``: paired items per run.
    """

    mean: float
    lo: float
    hi: float
    se: float
    df: float
    seeds: tuple[int, int]
    scenes: int
    items: int
    paired_seeds: bool
    verdict: str

    @property
    def decided(self) -> bool:
        """True when the comparison could give a verdict at all."""
        return self.verdict not in (NEEDS_SEEDS, NEEDS_SCENES)

    @property
    def different(self) -> bool:
        """True when the interval excludes 0 (a verdict of a real difference)."""
        return self.verdict in ("a > b", "a < b")

    def mde(self, alpha: float = 0.05, power: float = 0.8) -> float:
        """The smallest true difference this comparison detects with ``power`` (nan without a verdict)."""
        return float(detectable_effect(self.se, self.df, alpha, power)) if self.decided else math.nan

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``ci`` is [lo, hi] or None, ``excludes_zero`` is ``different``."""
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        ci = [self.lo, self.hi] if self.decided else None
        return {**d, "ci": ci, "n": self.items, "n_scenes": self.scenes, "excludes_zero": self.different}


def crossed_variance(a: np.ndarray, b: np.ndarray, w: np.ndarray,
                     paired_seeds: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Difference of means, its variance and Satterthwaite degrees of freedom, seeds x scenes.

    ``a``: (..., S_a, G) mean metric per (seed, scene) of configuration a over the paired items;
    ``b``: (..., S_b, G) the same for b on the same scenes and items; ``w``: (G,) share of the
    items in each scene (sums to 1). Leading dimensions are batches (simulations).

    Why these units: the seed is the training noise and the scene (source photograph) is the
    test content, and both are samples from populations a verdict generalises over. Seeds and
    scenes are *crossed* (every seed is scored on every scene), so the variance of
    ``mean(a) - mean(b)`` is the sum of

    - the seed part: the variance over seeds of each seed's mean (over the items), divided by
      the number of seeds, per side (or of the per-seed differences when the seeds are paired:
      the same seed of the same recipe with one change, sharing initialisation and data order);
    - the scene part: the variance over scenes of the scene's difference ``a - b`` (pairing on
      scenes and items cancels how hard a photograph is), ratio-linearised for unequal scenes.

    This is what a two-level bootstrap (resample seeds, then scenes) estimates, computed in
    closed form: the bootstrap itself under-estimates a variance from S seeds by (S-1)/S and
    has light tails, so with 2-4 seeds it calls "different" far above its nominal rate (a
    percentile two-level bootstrap on the A/A data of ``tests/unit/test_stats.py``, 8 scenes:
    20 % at 2 against 2 seeds, 11 % at 3 against 3, for a nominal 5 %). Here
    each part keeps its own degrees of freedom (seeds - 1, scenes - 1) and the interval uses
    Student's t with Welch-Satterthwaite degrees of freedom. The seed x scene interaction
    enters both parts, which makes the test slightly conservative when it dominates.
    """
    a, b, w = np.asarray(a, float), np.asarray(b, float), np.asarray(w, float)
    ma, mb = a @ w, b @ w
    diff = ma.mean(-1) - mb.mean(-1)
    g = w.size
    dev = a.mean(-2) - b.mean(-2) - diff[..., None]
    parts = [(g / (g - 1) * ((w * dev) ** 2).sum(-1), g - 1)]
    if paired_seeds:
        parts.append(((ma - mb).var(-1, ddof=1) / ma.shape[-1], ma.shape[-1] - 1))
    else:
        parts += [(m.var(-1, ddof=1) / m.shape[-1], m.shape[-1] - 1) for m in (ma, mb)]
    var = sum(v for v, _ in parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = var ** 2 / sum(v ** 2 / k for v, k in parts)
    return diff, var, np.where(var > 0, df, np.inf)


def detectable_effect(se: Any, df: Any, alpha: float = 0.05, power: float = 0.8) -> np.ndarray:
    """(t_{1-alpha/2, df} + t_{power, df}) * se: the true difference found with ``power``."""
    from scipy.stats import t

    return (t.ppf(1 - alpha / 2, df) + t.ppf(power, df)) * np.asarray(se, float)


def crossed_test(a: Any, b: Any, w: Any, *, alpha: float = 0.05,
                 paired_seeds: bool = False) -> dict[str, np.ndarray]:
    """Vectorised :func:`crossed_variance` test: diff, se, df, lo, hi and ``different`` per batch."""
    from scipy.stats import t

    diff, var, df = crossed_variance(a, b, w, paired_seeds)
    se = np.sqrt(var)
    lo, hi = diff - t.ppf(1 - alpha / 2, df) * se, diff + t.ppf(1 - alpha / 2, df) * se
    return {"diff": diff, "se": se, "df": df, "lo": lo, "hi": hi, "different": (lo > 0) | (hi < 0)}


def compare_cells(a: Any, b: Any, w: Any, *, items: int = 0, alpha: float = 0.05,
                  paired_seeds: bool = False) -> Comparison:
    """One :class:`Comparison` of (seed, scene) cell means ``a`` (S_a, G) and ``b`` (S_b, G).

    Fewer than 2 seeds on a side (or fewer than 2 scenes) gives the mean and no verdict.
    """
    a, b, w = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float)), np.asarray(w, float)
    for name, m in (("a", a), ("b", b)):
        _values(m.reshape(-1), name)
    if paired_seeds and a.shape[0] != b.shape[0]:
        raise UsageError(f"paired seeds need the same seeds on both sides, got {a.shape[0]} and {b.shape[0]}")
    mean = float((a @ w).mean() - (b @ w).mean())
    seeds, g = (a.shape[0], b.shape[0]), w.size
    if min(seeds) < 2 or g < 2:
        nan = math.nan
        why = NEEDS_SEEDS if min(seeds) < 2 else NEEDS_SCENES
        return Comparison(mean, nan, nan, nan, nan, seeds, g, items, paired_seeds, why)
    r = {k: float(v) for k, v in crossed_test(a, b, w, alpha=alpha, paired_seeds=paired_seeds).items()}
    verdict = "a > b" if r["lo"] > 0 else "a < b" if r["hi"] < 0 else "no detectable difference"
    return Comparison(mean, r["lo"], r["hi"], r["se"], r["df"], seeds, g, items, paired_seeds, verdict)


def aa_splits(n_seeds: int, k: int = 2, limit: int = 30) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Disjoint (k against k) splits of ``n_seeds`` seeds, each unordered split once, at most ``limit``."""
    out = []
    for chosen in combinations(range(n_seeds), 2 * k):
        for rest in combinations(chosen[1:], k - 1):
            left = (chosen[0], *rest)
            out.append((left, tuple(i for i in chosen if i not in left)))
            if len(out) == limit:
                return out
    return out


def aa_false_positives(entries: Sequence[Any], w: Any, *, k: int = 2, alpha: float = 0.05) -> tuple[int, int]:
    """(calls of "different", comparisons) when each entry's seeds are split k against k.

    ``entries``: per configuration, its (seeds, scenes) cell means; entries with fewer than
    2k seeds are skipped. Both halves are the same configuration, so every "different" is a
    false positive: the rate should be about ``alpha``.
    """
    false = total = 0
    for cells in entries:
        cells = np.asarray(cells, float)
        splits = aa_splits(cells.shape[0], k)
        if not splits:
            continue
        a = np.stack([cells[list(s)] for s, _ in splits])
        b = np.stack([cells[list(s)] for _, s in splits])
        false += int(crossed_test(a, b, w, alpha=alpha)["different"].sum())
        total += len(splits)
    return false, total


def table_mde(entries: Sequence[Any], w: Any, *, alpha: float = 0.05,
              power: float = 0.8) -> tuple[float, int, int] | None:
    """(median MDE, pairs, k) over pairs of entries with the table's most common seed count k >= 2.

    The MDE of one pair is :func:`detectable_effect` of its seeds-and-scenes comparison
    (unpaired seeds): a difference between two entries of k seeds smaller than this is
    usually not called. None without two such entries.
    """
    cells = [np.asarray(c, float) for c in entries]
    counts = [c.shape[0] for c in cells if c.shape[0] >= 2]
    if len(counts) < 2 or np.asarray(w).size < 2:
        return None
    k = max(set(counts), key=lambda n: (counts.count(n), n))
    same = [c for c in cells if c.shape[0] == k]
    if len(same) < 2:
        return None
    pairs = list(combinations(range(len(same)), 2))
    a = np.stack([same[i] for i, _ in pairs])
    b = np.stack([same[j] for _, j in pairs])
    r = crossed_test(a, b, w, alpha=alpha)
    mdes = detectable_effect(r["se"], r["df"], alpha, power)
    return float(np.median(mdes)), len(pairs), k
