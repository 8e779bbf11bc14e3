"""Statistics: coverage of the bootstrap CI, cluster vs item resampling, paired tests, MDE."""

from __future__ import annotations

import math

import numpy as np
import pytest

from piebench.errors import UsageError
from piebench.stats import (
    CI,
    bootstrap_ci,
    compare_cells,
    crossed_test,
    detectable_effect,
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


# -- comparisons of two configurations: seeds and scenes (A/A calibration) ------------------------------
def _cells(rng, reps, seeds, scenes=8, per_scene=12, seed_sd=0.3, scene_sd=2.0, inter_sd=0.2, item_sd=0.5):
    """(reps, seeds, scenes) mean values per (seed, scene) of the same configuration, twice: the scene
    effect is shared (both sides see the same photographs), seeds and item noise are independent."""
    scene = rng.normal(0, scene_sd, (reps, 1, scenes))

    def side():
        item = rng.normal(0, item_sd, (reps, seeds, scenes, per_scene)).mean(-1)
        return scene + rng.normal(0, seed_sd, (reps, seeds, 1)) + rng.normal(0, inter_sd, (reps, seeds, scenes)) + item

    return side(), side()


@pytest.mark.parametrize("seeds,paired", [(2, False), (3, False), (3, True)])
def test_aa_false_positive_rate_is_near_nominal_and_3x_mde_is_found(seeds, paired):
    """1000 simulated A/A comparisons: "different" about 5 % of the time; a planted 3x MDE >= 80 %."""
    rng = np.random.default_rng(11 + seeds)
    a, b = _cells(rng, 1000, seeds)
    w = np.full(8, 1 / 8)
    null = crossed_test(a, b, w, paired_seeds=paired)
    assert 0.02 <= null["different"].mean() <= 0.10
    mde = float(np.median(detectable_effect(null["se"], null["df"])))
    a2, b2 = _cells(rng, 1000, seeds)
    planted = crossed_test(a2 + 3 * mde, b2, w, paired_seeds=paired)
    assert planted["different"].mean() >= 0.8


def test_the_old_photo_bootstrap_is_not_calibrated_over_seeds():
    """Why seeds must be a unit: two seeds of one configuration, compared per item with a bootstrap
    over photos only (the old leaderboard test), are "different" far above 5 % of the time."""
    rng = np.random.default_rng(5)
    a, b = _cells(rng, 200, 1, per_scene=12)
    scenes = np.repeat(np.arange(8), 12)
    hits = 0
    for i in range(200):
        item_a = a[i, 0][scenes] + rng.normal(0, 0.5, scenes.size)
        item_b = b[i, 0][scenes] + rng.normal(0, 0.5, scenes.size)
        hits += paired_diff(item_a, item_b, clusters=scenes, n_boot=300, seed=i).excludes_zero
    assert hits / 200 > 0.3
    new = crossed_test(*_cells(rng, 200, 2), np.full(8, 1 / 8))["different"].mean()
    assert new <= 0.10


def test_compare_cells_needs_two_seeds_and_two_scenes():
    w = np.full(4, 0.25)
    two, one = np.ones((2, 4)), np.zeros((1, 4))
    c = compare_cells(two, one, w)
    assert c.verdict == "needs >= 2 seeds" and not c.decided and not c.different and c.mean == 1.0
    assert c.as_dict()["ci"] is None and math.isnan(c.mde())
    assert compare_cells(np.ones((2, 1)), np.zeros((2, 1)), [1.0]).verdict == "needs >= 2 scenes"
    rng = np.random.default_rng(0)
    better = compare_cells(rng.normal(1, 0.1, (3, 4)), rng.normal(0, 0.1, (3, 4)), w)
    assert better.verdict == "a > b" and better.different and better.lo > 0 and better.seeds == (3, 3)
    with pytest.raises(UsageError, match="non-finite"):
        compare_cells(np.array([[1.0, np.inf], [1.0, 2.0]]), two[:, :2], [0.5, 0.5])
    with pytest.raises(UsageError, match="same seeds"):
        compare_cells(two, np.ones((3, 4)), w, paired_seeds=True)


def test_paired_seeds_remove_a_shared_seed_effect():
    """Same seed, same recipe with one change: the seed effect cancels and the interval narrows."""
    rng = np.random.default_rng(6)
    shared = rng.normal(0, 1.0, (3, 1)) + rng.normal(0, 0.05, (3, 8))
    a, b = shared + 0.3 + rng.normal(0, 0.02, (3, 8)), shared
    w = np.full(8, 1 / 8)
    assert compare_cells(a, b, w, paired_seeds=True).different
    assert not compare_cells(a, b, w).different


def test_aa_splits_and_table_mde():
    from piebench.stats import aa_false_positives, aa_splits, table_mde

    assert aa_splits(4) == [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
    assert aa_splits(3) == [] and len(aa_splits(5)) == 15
    rng = np.random.default_rng(7)
    w = np.full(8, 1 / 8)
    entries = [rng.normal(0, 0.3, (4, 1)) + rng.normal(0, 0.1, (4, 8)) for _ in range(5)] + [np.zeros((3, 8))]
    false, total = aa_false_positives(entries, w)
    assert total == 15 and 0 <= false <= total  # 3 splits per 4-seed entry, the 3-seed entry skipped
    mde, pairs, k = table_mde(entries, w)
    assert (pairs, k) == (10, 4) and mde > 0
    assert table_mde([np.zeros((1, 8)), np.zeros((2, 8))], w) is None
