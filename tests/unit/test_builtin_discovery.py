"""Built-ins in one place: one entry point, every ``<kind>s/<module>.py`` a plugin found at start-up."""

from __future__ import annotations

import json
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import piebench_plugins
import pytest

from piebench.plugins import BUILTINS, PluginManager, discover_builtins

RECORDS = Path(__file__).resolve().parents[2] / "leaderboards" / "records"

ENHANCER = textwrap.dedent('''
    from piebench import hookimpl
    from piebench_plugins.enhancers.identity import IdentityEnhancer

    @hookimpl
    def register_enhancers(register):
        register("one-file", build=lambda ctx: IdentityEnhancer(), description="a new built-in", consumes=[])
''')


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package laid out like piebench_plugins: kinds as subpackages, helpers starting with ``_``."""
    root = tmp_path / "tp_builtins"
    for sub in ("enhancers", "loggers", "losses", "_shared"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "enhancers" / "one_file.py").write_text(ENHANCER)
    (root / "enhancers" / "_common.py").write_text("raise RuntimeError('a helper is not a plugin')\n")
    (root / "loggers" / "tensorboard.py").write_text("")
    (root / "losses" / "pixel.py").write_text("")
    (root / "_shared" / "util.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "tp_builtins"
    for name in [m for m in sys.modules if m.startswith("tp_builtins")]:
        del sys.modules[name]


def test_names_follow_kind_and_module(package):
    assert discover_builtins(package) == [
        ("enhancer-one-file", "tp_builtins.enhancers.one_file"),
        ("logger-tensorboard", "tp_builtins.loggers.tensorboard"),
        ("loss-pixel", "tp_builtins.losses.pixel"),
    ]


def test_the_shipped_builtins_keep_the_names_records_store():
    names = {n for n, _ in discover_builtins("piebench_plugins")}
    singular = {"encoders": "encoder", "enhancers": "enhancer", "losses": "loss", "metrics": "metric",
                "datasets": "dataset", "loggers": "logger"}
    on_disk = {f"{singular[p.parent.name]}-{p.stem.replace('_', '-')}"  # every public module file: one plugin
               for p in Path(piebench_plugins.__file__).parent.glob("*s/*.py") if not p.stem.startswith("_")}
    assert names == on_disk and {"encoder-lab-stats", "enhancer-sa-seed", "loss-embedding-l1",
                                 "dataset-pie-synth", "metric-fidelity"} <= names
    stored = {p["plugin"] for f in (RECORDS / "smoke").rglob("record.json")
              for p in json.loads(f.read_text())["plugins"].values()}
    assert stored <= names, stored - names
    eps = [ep for ep in metadata.entry_points(group="piebench") if ep.dist and ep.dist.metadata["Name"] == "piebench"]
    assert [(ep.name, ep.value) for ep in eps] == [(BUILTINS, "piebench_plugins")]


def test_a_new_file_is_a_plugin_and_can_be_disabled(package, monkeypatch):
    manager = PluginManager()
    manager._load_builtins(package, set(), "piebench", "0")
    manager.collect()
    assert manager.registry.get("enhancer", "one-file").plugin == "enhancer-one-file"
    assert manager.plugins["enhancer-one-file"].module == "tp_builtins.enhancers.one_file"
    assert not manager.warnings
    manager = PluginManager()
    manager._load_builtins(package, {"enhancer-one-file"}, "piebench", "0")
    manager.collect()
    assert not manager.registry.has("enhancer", "one-file") and "loss-pixel" in manager.plugins


def test_a_broken_builtin_is_one_warning_naming_it(package, tmp_path, capsys):
    (tmp_path / "tp_builtins" / "losses" / "broken.py").write_text("raise RuntimeError('boom')\n")
    manager = PluginManager()
    manager._load_builtins(package, set(), "piebench", "0")
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "plugin 'loss-broken' (tp_builtins.losses.broken) failed to import" in err
    assert "enhancer-one-file" in manager.plugins
