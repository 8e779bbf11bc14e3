"""Preference diagnostics inside real runs: the alarm, the record's contents, the N curve."""

from __future__ import annotations

import pytest
from torch import nn

from piebench.config import resolve
from piebench.interfaces import Enhancer
from piebench.plugins import get_registry
from piebench.registry import Spec
from piebench.runner import run_experiment

FAST = ["eval.max_photos=4", "eval.data.crops_per_scene=12", "eval.data.seen_users=4", "eval.data.unseen_users=3",
        "train.checkpoint_every=1000"]


class Disconnected(Enhancer):
    """Declares it consumes the vector but its style path is wired to nothing."""

    consumes = frozenset({"vector"})

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x, pref):
        return x + 0.1 * self.conv(x)


@pytest.fixture
def disconnected():
    registry = get_registry()
    registry.add(Spec("enhancer", "test-disconnected", lambda ctx, **kw: Disconnected(), plugin="tests"))
    yield "test-disconnected"
    registry._specs["enhancer"].pop("test-disconnected")


def test_a_disconnected_enhancer_fires_the_alarm(disconnected, tmp_path):
    cfg = resolve("smoke", encoder="angular", enhancer=disconnected, steps=6, sets=FAST)
    _, rec = run_experiment(cfg, tmp_path / "runs", progress=False)
    alarms = rec["metrics"]["alarms"]
    assert any("ignores the preference for seen users" in a for a in alarms), alarms
    assert any("disconnected" in a for a in alarms), alarms
    assert rec["metrics"]["probes"]["random_vector"] == 0.0


def test_a_working_run_records_every_diagnostic_and_stays_silent(tmp_path):
    # 8 test photos: one of each of the 8 test scenes (the CIs resample scenes)
    cfg = resolve("smoke", encoder="angular", enhancer="sa", steps=120,
                  sets=[*FAST, "eval.max_photos=8", "eval.refs_curve=[1, 3]"])
    run_dir, rec = run_experiment(cfg, tmp_path / "runs", progress=False)
    m = rec["metrics"]
    assert m["alarms"] == []
    for group in ("seen", "unseen"):
        assert m[group]["sensitivity"]["ci"][0] > 0
        assert 0 < m[group]["steering"]["mean"] <= 1.5
    assert set(m["separability"]) == {"seen", "unseen"}
    assert {"silhouette_cosine", "recall_at_1", "probe_accuracy", "nmi_kmeans"} <= set(m["separability"]["seen"])
    assert "exposure" in " ".join(m["probe_r2"]) and "mean" in m["probe_r2"]
    assert m["probe_r2"]["chance"] < 0.1 and m["probe_r2"]["n_users"] == 7 and len(m["probe_r2"]["ci"]) == 2
    # what the enhancer receives, next to its chance level; the leaderboard's figure comes from it
    import numpy as np

    assert set(m["preference_separability"]) == {"seen", "unseen"}
    for group, n_users in (("seen", 4), ("unseen", 3)):
        pref = m["preference_separability"][group]
        assert pref["recall_at_1_chance"] == pytest.approx(1 / n_users, abs=0.05)
        assert m[group]["user_recall"]["mean"] == pref["recall_at_1"]
        assert m[group]["user_recall"]["ci"][0] <= pref["recall_at_1"] <= m[group]["user_recall"]["ci"][1]
    # CIs clustered by scene say over how many: 8 test photos of 8 distinct scenes
    scenes = set(np.genfromtxt(run_dir / "per_image.csv", delimiter=",", names=True, dtype=None,
                               encoding="utf-8")["scene"].tolist())
    assert len(scenes) == 8
    assert m["seen"]["n_scenes"] == m["seen"]["sensitivity"]["n_scenes"] == m["seen"]["steering"]["n_scenes"] == 8
    npz = np.load(run_dir / "control.npz")
    assert len(npz["vector_draws"]) == len(npz["vectors"]) == 8 * 7
    # a record written before these entries existed gets them back from control.npz, nothing else changes
    import json
    import shutil

    from piebench.diagnostics import refresh_separability

    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    stripped = json.loads((old / "record.json").read_text())
    for key in ("preference_separability", "probe_r2"):
        stripped["metrics"].pop(key)
    for group in ("seen", "unseen"):
        stripped["metrics"][group].pop("user_recall")
    (old / "record.json").write_text(json.dumps(stripped))
    got = refresh_separability(old, write=True)
    refreshed = json.loads((old / "record.json").read_text())["metrics"]
    assert got["preference_separability"] == m["preference_separability"] and got["probe_r2"] == m["probe_r2"]
    assert {k: v for k, v in refreshed.items() if k != "separability_refreshed"} == m
    for name in ("control_heatmap", "tsne", "refs_curve"):
        path = run_dir / m["figures"][name]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert [p["refs"] for p in m["refs_curve"]["points"]] == [1, 3]
    assert all("seen" in p and "unseen" in p for p in m["refs_curve"]["points"])
