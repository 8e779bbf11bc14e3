"""Separability metrics on embeddings with known structure (user-only vs content-only)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from piebench.errors import UsageError
from piebench.metrics import separability as sep

U, P = 4, 12  # users, photos: every user retouches every photo


def _grid():
    users = np.repeat(np.arange(U), P)
    photos = np.tile(np.arange(P), U)
    return users, photos


def _user_emb(noise=0.05, seed=0):
    users, photos = _grid()
    rng = np.random.default_rng(seed)
    emb = np.eye(16)[users] + noise * rng.normal(size=(users.size, 16))
    return emb, users, photos


def _content_emb(noise=0.05, seed=0):
    users, photos = _grid()
    rng = np.random.default_rng(seed)
    emb = np.eye(16)[photos] + noise * rng.normal(size=(users.size, 16))
    return emb, users, photos


def test_silhouette_equals_sklearn_when_nothing_is_excluded():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 3, 40)
    emb = rng.normal(size=(40, 5)) + users[:, None] * 0.5
    photos = np.arange(40)  # every item its own photo: no same-photo pairs
    assert sep.silhouette_cosine(emb, users, photos) == pytest.approx(
        silhouette_score(emb, users, metric="cosine"), abs=1e-10)


def test_silhouette_matches_a_brute_force_definition():
    """a(i): mean distance to the other items of i's user; b(i): min over other users of the mean
    distance to their items of other photos; s = (b - a) / max(a, b)."""
    from scipy.spatial.distance import cosine

    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(3), 6)
    photos = np.tile(np.arange(6), 3)
    emb = rng.normal(size=(18, 4)) + np.eye(4)[users] + np.eye(4)[photos % 4]
    s = []
    for i in range(18):
        a = np.mean([cosine(emb[i], emb[j]) for j in range(18) if users[j] == users[i] and j != i])
        b = min(np.mean([cosine(emb[i], emb[j]) for j in range(18) if users[j] == v and photos[j] != photos[i]])
                for v in range(3) if v != users[i])
        s.append((b - a) / max(a, b))
    assert sep.silhouette_cosine(emb, users, photos) == pytest.approx(np.mean(s), abs=1e-10)


def test_silhouette_exclusion_removes_the_content_shortcut():
    emb, users, photos = _content_emb()
    masked = sep.silhouette_cosine(emb, users, photos)
    unmasked = silhouette_score(emb, users, metric="cosine")
    # without exclusion each other user's same-photo item pulls b(i) down: negative silhouette;
    # with it, content-only embeddings say nothing about users: about 0
    assert unmasked < masked - 0.05
    assert abs(masked) < 0.03


def test_user_embeddings_are_separable():
    emb, users, photos = _user_emb()
    assert sep.silhouette_cosine(emb, users, photos) > 0.8
    assert sep.recall_at_1(emb, users, photos) == 1.0
    assert sep.nmi_kmeans(emb, users, seed=0) > 0.99
    probe = sep.linear_probe(emb, users, photos, seed=0)
    assert probe["accuracy"] > 0.95 and probe["chance"] == pytest.approx(1 / U)


def test_content_embeddings_are_at_chance():
    emb, users, photos = _content_emb()
    chance = sep.recall_at_1_chance(users, photos)
    assert chance == pytest.approx((P - 1) / ((U * P) - U))  # same user, other photo / other photos
    # with the same photo excluded, the neighbour is a random item of another photo
    assert abs(sep.recall_at_1(emb, users, photos) - chance) < 0.15
    probe = sep.linear_probe(emb, users, photos, seed=0)
    assert probe["accuracy"] < probe["chance"] + 0.2
    assert sep.nmi_kmeans(emb, users, seed=0) < 0.2


def test_nmi_of_a_constant_embedding_is_zero_without_a_kmeans_warning():
    """A blind encoder gives every item the same vector: no clustering can tell users apart."""
    users = np.repeat(np.arange(U), P)
    emb = np.ones((len(users), 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's ConvergenceWarning would be an error here
        assert sep.nmi_kmeans(emb, users, seed=0) == 0.0
    two = np.where((users % 2)[:, None] == 0, 1.0, -1.0) * np.ones((len(users), 8))  # 2 distinct points
    assert 0 < sep.nmi_kmeans(two, users, seed=0) < 1


def test_recall_excludes_same_photo_items():
    # item (user u, photo p) = content e_p + 0.3 * style e_{2+u}: the closest item is always the
    # other user's version of the same photo; among other photos, the same user's is closest
    users = np.array([0, 1, 0, 1])
    photos = np.array([0, 0, 1, 1])
    emb = np.eye(4)[photos] + 0.3 * np.eye(4)[2 + users]
    assert sep.recall_at_1(emb, users, photos) == 1.0
    assert sep.recall_at_1(emb, users, np.arange(4)) == 0.0  # no exclusion: the same photo wins


def test_ridge_probe_linear_map_vs_noise():
    rng = np.random.default_rng(2)
    n_users, per = 12, 5
    groups = np.repeat(np.arange(n_users), per)
    params = rng.normal(size=(n_users, 3))[groups]
    vectors = params @ rng.normal(size=(3, 8)) + 0.01 * rng.normal(size=(groups.size, 8))
    good = sep.ridge_probe(vectors, params, ["exposure", "contrast", "warmth"], groups, shuffles=4, n_boot=200)
    assert {"exposure", "contrast", "warmth", "mean", "ci", "chance", "chance_hi"} <= set(good)
    assert min(good["exposure"], good["contrast"], good["warmth"]) > 0.98
    assert good["ci"][0] > good["chance_hi"] and good["chance"] < 0.1 and good["n_users"] == n_users
    noise = sep.ridge_probe(rng.normal(size=vectors.shape), params, ["exposure", "contrast", "warmth"], groups,
                           shuffles=4, n_boot=200)
    assert noise["mean"] < 0.1
    with pytest.raises(UsageError, match="one column per name"):
        sep.ridge_probe(vectors, params, ["exposure"], groups)


def test_tsne_writes_a_png(tmp_path):
    emb, users, photos = _user_emb()
    out = sep.tsne_plot(emb, users, tmp_path / "fig" / "tsne.png", title="users",
                        user_names={0: "a", 1: "b", 2: "c", 3: "d"})
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[0] > 300 and im.size[1] > 300


def test_report_and_input_checks():
    emb, users, photos = _user_emb()
    r = sep.separability_report(emb, users.astype(str), photos, seed=0)
    assert r["n_users"] == U and r["n_photos"] == P and r["n_items"] == U * P
    assert r["recall_at_1"] == 1.0 and r["silhouette_cosine"] > 0.8
    with pytest.raises(UsageError, match="one id per embedding"):
        sep.recall_at_1(emb, users[:-1], photos)
    with pytest.raises(UsageError, match="two users"):
        sep.silhouette_cosine(emb, np.zeros(len(users)), photos)


def test_recall_excludes_the_whole_scene_not_only_the_crop():
    """Crops of one scene share their content: with only the crop excluded, the nearest neighbour
    is another crop of the same scene, where a user signature that holds for that scene only
    (nothing that carries to other photographs) decides it: recall near 1. With the scene
    excluded, recall falls to chance, as it should. Diagnostics pass scenes."""
    rng = np.random.default_rng(0)
    n_users, n_scenes, crops, d = 6, 8, 3, 16
    users = np.repeat(np.arange(n_users), n_scenes * crops)
    scenes = np.tile(np.repeat(np.arange(n_scenes), crops), n_users)
    crop_ids = np.tile(np.arange(n_scenes * crops), n_users)
    emb = (5 * rng.normal(size=(n_scenes, d))[scenes] + 0.3 * rng.normal(size=(n_scenes * crops, d))[crop_ids]
           + 0.6 * rng.normal(size=(n_users, n_scenes, d))[users, scenes])
    assert sep.recall_at_1(emb, users, crop_ids) > 0.9
    by_scene = sep.user_recall(emb, users, scenes, seed=0)
    assert by_scene["ci"][0] <= by_scene["chance"] + 0.05 and by_scene["mean"] < 0.4


def test_user_recall_ci_includes_chance_for_content_only_embeddings():
    emb, users, photos = _content_emb(noise=0.3)
    r = sep.user_recall(emb, users, photos % 3, seed=0)  # content ids: 3 scenes of 4 crops
    assert r["ci"][0] <= r["chance"] <= r["ci"][1]


def test_ridge_probe_succeeds_on_new_users_despite_user_identities():
    """20 users (as in smoke), 24 vectors each: every user's vectors carry a strong identity
    direction unrelated to the parameters (as trained encoders' do) plus a linear trace of the
    parameters. The probe recovers the parameters for users it never saw, well above the chance
    level from shuffled users; on pure noise it sits at that chance level, which is below 0."""
    rng = np.random.default_rng(4)
    n_users, per, d = 20, 24, 128
    groups = np.repeat(np.arange(n_users), per)
    table = rng.normal(size=(n_users, 4))
    identity = 3.0 * rng.normal(size=(n_users, d))
    vectors = table[groups] @ rng.normal(size=(4, d)) + identity[groups] + 0.5 * rng.normal(size=(groups.size, d))
    names = ["a", "b", "c", "d"]
    good = sep.ridge_probe(vectors, np.c_[table[groups], np.ones(groups.size)], [*names, "fixed"], groups,
                           shuffles=4, n_boot=200)
    assert good["constant"] == ["fixed"] and "fixed" not in good  # no R^2 = 1 for a constant
    assert good["mean"] > 0.4 and good["ci"][0] > good["chance_hi"] and good["ci"][0] <= good["mean"] <= good["ci"][1]
    noise = sep.ridge_probe(rng.normal(size=vectors.shape), table[groups], names, groups, shuffles=4, n_boot=200)
    assert noise["chance"] < 0 and abs(noise["mean"] - noise["chance"]) < 0.1
