"""Statistics: coverage of the bootstrap CI, cluster vs item resampling, paired tests, MDE."""

from __future__ import annotations

import math

import numpy as np
import pytest

from piebench.errors import UsageError
from piebench.stats import (
    CI,
    bootstrap_ci,
    indistinguishable_from_best,
    minimum_detectable_effect,
    paired_diff,
    seeds_summary,
)


def _clustered(rng, n_clusters=30, per=5, cluster_sd=1.0, item_sd=0.3, mu=0.0):
    """Items whose values share a per-cluster random effect (strong within-cluster correlation)."""
    effects = rng.normal(0, cluster_sd, n_clusters)
    clusters = np.repeat(np.arange(n_clusters), per)
    values = mu + effects[clusters] + rng.normal(0, item_sd, clusters.size)
    return values, clusters


def test_item_ci_covers_true_mean_about_95_percent():
    rng = np.random.default_rng(123)
    hits = 0
    for trial in range(200):
        x = rng.exponential(2.0, 60)  # skewed, true mean 2
        ci = bootstrap_ci(x, n_boot=400, seed=trial)
        hits += ci.lo <= 2.0 <= ci.hi
    assert 0.85 <= hits / 200 <= 0.99


def test_cluster_ci_covers_true_mean_about_95_percent():
    rng = np.random.default_rng(7)
    hits = 0
    for trial in range(200):
        v, c = _clustered(rng, mu=1.5)
        ci = bootstrap_ci(v, clusters=c, n_boot=400, seed=trial)
        hits += ci.lo <= 1.5 <= ci.hi
    assert 0.85 <= hits / 200 <= 0.99


def test_item_bootstrap_undercovers_correlated_items():
    """Why clusters matter: resampling items ignores the shared photo effect."""
    rng = np.random.default_rng(8)
    hits = 0
    for trial in range(100):
        v, _ = _clustered(rng, mu=1.5)
        ci = bootstrap_ci(v, n_boot=300, seed=trial)
        hits += ci.lo <= 1.5 <= ci.hi
    assert hits / 100 < 0.75


def test_cluster_bootstrap_wider_than_item_bootstrap():
    v, c = _clustered(np.random.default_rng(0))
    item = bootstrap_ci(v)
    clus = bootstrap_ci(v, clusters=c)
    assert clus.mean == item.mean == pytest.approx(v.mean())
    assert clus.n == item.n == v.size and clus.n_clusters == 30 and item.n_clusters == v.size
    assert (clus.hi - clus.lo) > 1.8 * (item.hi - item.lo)


def test_seed_makes_it_reproducible():
    v = np.random.default_rng(1).normal(size=50)
    assert bootstrap_ci(v, seed=3) == bootstrap_ci(v, seed=3)
    assert bootstrap_ci(v, seed=3) != bootstrap_ci(v, seed=4)


def test_clear_difference_excludes_zero_null_includes_zero():
    rng = np.random.default_rng(2)
    base, clusters = _clustered(rng, n_clusters=40, per=4)
    better = base + 0.3 + rng.normal(0, 0.1, base.size)  # paired: the photo effect cancels
    same = base + rng.normal(0, 0.1, base.size)
    d = paired_diff(better, base, clusters=clusters)
    assert d.excludes_zero and d.lo > 0 and d.mean == pytest.approx(0.3, abs=0.05)
    n = paired_diff(same, base, clusters=clusters)
    assert not n.excludes_zero and n.lo < 0 < n.hi
    # an unpaired look at the same data cannot see the 0.3 difference through the photo effect
    assert not bootstrap_ci(better, clusters=clusters).lo > bootstrap_ci(base, clusters=clusters).hi


def test_paired_diff_aligns_by_keys():
    rng = np.random.default_rng(3)
    a = rng.normal(size=20)
    b = a - 1.0
    keys = [f"img{i}" for i in range(20)]
    perm = rng.permutation(20)
    d = paired_diff(a, b[perm], keys_a=keys, keys_b=[keys[i] for i in perm])
    assert d.mean == pytest.approx(1.0) and d.lo == pytest.approx(1.0) and d.hi == pytest.approx(1.0)
    with pytest.raises(UsageError, match="different items"):
        paired_diff(a, b[:19], keys_a=keys, keys_b=keys[:19])
    with pytest.raises(UsageError, match="not aligned"):
        paired_diff(a, b[:19])


def test_bad_values_are_refused():
    with pytest.raises(UsageError, match="non-finite"):
        bootstrap_ci([1.0, math.inf])
    with pytest.raises(UsageError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(UsageError, match="one id per item"):
        bootstrap_ci([1.0, 2.0], clusters=[0])


def test_seeds_summary_t_interval():
    ci = seeds_summary([24.0, 24.7, 25.1])
    assert ci.mean == pytest.approx(24.6) and ci.std == pytest.approx(np.std([24.0, 24.7, 25.1], ddof=1))
    half = 4.302652729911275 * ci.std / math.sqrt(3)  # t_{0.975, 2}
    assert ci.lo == pytest.approx(24.6 - half) and ci.hi == pytest.approx(24.6 + half)
    one = seeds_summary([25.0])
    assert one.mean == 25.0 and math.isnan(one.lo) and not one.excludes_zero


def test_indistinguishable_from_best():
    rng = np.random.default_rng(4)
    base, clusters = _clustered(rng, n_clusters=40, per=3)
    table = {
        "best": base + 1.0 + rng.normal(0, 0.05, base.size),
        "tied": base + 1.0 + rng.normal(0, 0.05, base.size),  # same true mean
        "worse": base + rng.normal(0, 0.05, base.size),
    }
    res = indistinguishable_from_best(table, clusters=clusters)
    assert [k for k, t in res.items() if t.is_best] in (["best"], ["tied"])
    assert res["best"].indistinguishable and res["tied"].indistinguishable
    assert not res["worse"].indistinguishable and res["worse"].diff.hi < 0
    low = indistinguishable_from_best(table, higher_is_better=False, clusters=clusters)
    assert low["worse"].is_best and not low["best"].indistinguishable


def test_mde_shrinks_with_more_clusters_and_matches_formula():
    rng = np.random.default_rng(5)
    small_v, small_c = _clustered(rng, n_clusters=10, per=4)
    big_v, big_c = _clustered(rng, n_clusters=160, per=4)
    mde_small = minimum_detectable_effect(small_v, small_c)
    mde_big = minimum_detectable_effect(big_v, big_c)
    assert mde_big < mde_small / 2.5  # ~ 1/sqrt(16) = 4x smaller in expectation
    # equal cluster sizes: SE = std(cluster means) / sqrt(G)
    cm = big_v.reshape(160, 4).mean(1)
    assert mde_big == pytest.approx((1.959964 + 0.841621) * cm.std(ddof=1) / math.sqrt(160), rel=1e-5)
    # clustering matters: ignoring it understates the MDE
    assert minimum_detectable_effect(big_v) < mde_big


def test_ci_as_dict_is_json_ready():
    import json

    d = bootstrap_ci([1.0, 2.0, 3.0, 4.0]).as_dict()
    assert set(d) >= {"mean", "lo", "hi", "n", "excludes_zero"}
    json.dumps(d)
    assert CI(1.0, 0.5, 1.5, 3).excludes_zero and not CI(0.0, -1.0, 1.0, 3).excludes_zero
