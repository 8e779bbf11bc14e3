"""Paired and clustered statistics for benchmark results.

Items (per-image metric values) of one photo are correlated: the same photo retouched for
several users, or seen through several reference draws. Intervals therefore resample
*clusters* (photo ids) when ``clusters`` is given, and model comparisons are *paired* per item.

- :func:`bootstrap_ci`: percentile bootstrap of the mean (items or clusters).
- :func:`paired_diff`: CI of the mean per-item difference ``a - b``.
- :func:`seeds_summary`: mean, std and t-interval over training seeds.
- :func:`indistinguishable_from_best`: which models a paired CI cannot separate from the best.
- :func:`minimum_detectable_effect`: the smallest mean difference the protocol can resolve.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import UsageError

__all__ = [
    "CI", "Tie", "bootstrap_ci", "indistinguishable_from_best", "minimum_detectable_effect",
    "paired_diff", "seeds_summary",
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

    @property
    def half_width(self) -> float:
        """Half the interval's width."""
        return (self.hi - self.lo) / 2

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
