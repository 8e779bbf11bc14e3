"""Third-party and broken plugins, installed as real distributions (dist-info + entry points)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

THIRD_PARTY = '''
"""A third-party piebench plugin: a brightness-gain enhancer conditioned on the preference."""
import torch
from torch import nn
from piebench import Enhancer, hookimpl


class GainEnhancer(Enhancer):
    consumes = frozenset({"vector"})

    def __init__(self, dim):
        super().__init__()
        self.head = nn.Linear(dim, 3)

    def forward(self, x, pref):
        return x * torch.exp(self.head(pref.vector))[:, :, None, None]


@hookimpl
def register_enhancers(register):
    register("tp-gain", build=lambda ctx, **kw: GainEnhancer(ctx.encoder.dim),
             description="third-party per-channel gain", paper="a test", configurations={"small": {}})


def mae(output, target):
    return (output - target).abs().mean((1, 2, 3))


@hookimpl
def register_metrics(register):
    register("tp-mae", build=lambda ctx, **params: mae, description="mean absolute error",
             higher_is_better=False, label="MAE", digits=3, variant="mean over pixels and channels")
'''

BROKEN = {
    "bad_import": "raise RuntimeError('boom at import')\n",
    "bad_hook": "from piebench import hookimpl\n@hookimpl\ndef register_widgets(register):\n    pass\n",
    "bad_signature": "from piebench import hookimpl\n@hookimpl\ndef register_losses(register, extra):\n    pass\n",
    "dup_name": textwrap.dedent('''
        from piebench import hookimpl
        @hookimpl
        def register_enhancers(register):
            register("identity", build=lambda ctx: None, description="a clash")
        '''),
}


def make_distribution(root: Path, name: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """Write modules plus a ``<name>-1.0.dist-info`` with entry points: an installed distribution."""
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(src)
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[piebench]\n{lines}\n")


def piebench(*args: str, env_extra: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "piebench", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


@pytest.fixture
def third_party(tmp_path: Path) -> dict:
    make_distribution(tmp_path, "piebench-tp", {"tp_plugin": THIRD_PARTY}, {"tp": "tp_plugin"})
    return {"PYTHONPATH": str(tmp_path)}


def test_third_party_plugin_is_listed_with_its_version(third_party):
    res = piebench("list", "enhancers", "--json", "--no-params", env_extra=third_party)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["tp-gain"]["plugin"] == "tp"
    assert rows["tp-gain"]["plugin_version"] == "1.0"
    assert "sa" in rows  # built-ins still there
    plugins = json.loads(piebench("list", "plugins", "--json", env_extra=third_party).stdout)
    tp = [p for p in plugins if p["plugin"] == "tp"][0]
    assert tp["distribution"] == "piebench-tp" and tp["hooks"] == "register_enhancers, register_metrics"


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_broken_plugin_is_one_warning_and_others_work(tmp_path: Path, broken: str):
    make_distribution(tmp_path, f"piebench-{broken}", {f"{broken}_mod": BROKEN[broken]}, {broken: f"{broken}_mod"})
    res = piebench("list", "enhancers", "--json", "--no-params", env_extra={"PYTHONPATH": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if broken in line]
    assert len(warnings) == 1, res.stderr
    assert "Traceback" not in res.stderr
    names = {r["name"] for r in json.loads(res.stdout)}
    assert {"sa", "identity"} <= names
    if broken == "dup_name":
        rows = {r["name"]: r for r in json.loads(res.stdout)}
        assert rows["identity"]["plugin"] != broken  # the first registration wins


def test_strict_mode_turns_a_broken_plugin_into_an_error(tmp_path: Path):
    make_distribution(tmp_path, "piebench-bad", {"bad_mod": BROKEN["bad_import"]}, {"bad": "bad_mod"})
    res = piebench("list", env_extra={"PYTHONPATH": str(tmp_path), "PIEBENCH_STRICT_PLUGINS": "1"})
    assert res.returncode == 1
    assert "bad" in res.stderr and "boom at import" in res.stderr
    assert "Traceback" not in res.stderr


def test_disable_plugins_hides_a_builtin():
    res = piebench("list", "enhancers", "--json", "--no-params", env_extra={"PIEBENCH_DISABLE_PLUGINS": "enhancer-sa"})
    names = {r["name"] for r in json.loads(res.stdout)}
    assert "sa" not in names and "identity" in names


@pytest.mark.slow
def test_third_party_enhancer_runs_and_its_metric_shows_without_splitting_the_table(third_party, tmp_path: Path):
    from piebench import config as C

    res = piebench("run", "--encoder", "angular", "--enhancer", "tp-gain", "--steps", "6", "--quiet",
                   "--metric", "tp-mae", "--runs-dir", str(tmp_path / "runs"), "--set", "eval.max_photos=3",
                   env_extra=third_party)
    assert res.returncode == 0, res.stderr
    assert "MAE ↓" in res.stdout  # the run table
    run_dir = next((tmp_path / "runs").rglob("record.json")).parent
    rec = json.loads((run_dir / "record.json").read_text())
    assert rec["status"] == "finished"
    assert rec["plugins"]["enhancer:tp-gain"]["plugin"] == "tp"
    assert rec["metrics"]["seen"]["tp-mae"]["mean"] > 0
    cfg = json.loads((run_dir / "config.json").read_text())
    recipe = json.loads((run_dir / "manifest.json").read_text())["recipe_hash"]
    without = {**cfg, "eval": {**cfg["eval"], "metrics": [m for m in cfg["eval"]["metrics"] if m != "tp-mae"]}}
    assert rec["protocol"]["eval_hash"] == C.eval_hash(without, recipe)  # same table as runs without it
    board = piebench("leaderboard", "--runs-dir", str(tmp_path / "runs"), env_extra=third_party)
    assert board.returncode == 0, board.stderr
    assert "MAE ↓ seen" in board.stdout
