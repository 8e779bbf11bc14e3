"""Typed specs: what a plugin registers is checked data, and one ``compatible()`` decides pairing."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from piebench import hookimpl
from piebench.build import first_compatible
from piebench.errors import PluginError
from piebench.interfaces import BuildContext, Encoder, Enhancer, Preference
from piebench.plugins import PluginInfo, PluginManager
from piebench.registry import compatible, partner_order

RECORDS = Path(__file__).resolve().parents[2] / "leaderboards" / "records"


class _MapsEnhancer(Enhancer):
    consumes = frozenset({"vector", "maps"})

    def forward(self, x, pref: Preference):
        return x


class _VectorEncoder(Encoder):
    def forward(self, refs):
        return Preference(vector=refs.targets.mean((1, 3, 4)))


def _plugin(**extra) -> types.ModuleType:
    @hookimpl
    def register_enhancers(register):
        register("tp-maps", build=lambda ctx: _MapsEnhancer(), description="needs maps",
                 consumes=["vector", "maps"], **extra)

    @hookimpl
    def register_encoders(register):
        register("tp-vector", build=lambda ctx: _VectorEncoder(), description="vector only")

    mod = types.ModuleType("tp_plugin")
    mod.register_enhancers, mod.register_encoders = register_enhancers, register_encoders
    return mod


def _manager(monkeypatch, strict: bool = False, **extra) -> PluginManager:
    monkeypatch.setenv("PIEBENCH_STRICT_PLUGINS", "1" if strict else "0")
    manager = PluginManager()
    manager.load_entry_points()  # the built-ins
    manager.add_module(PluginInfo("tp-plugin", "tp_plugin"), _plugin(**extra))
    manager.collect()
    return manager


def test_every_committed_pair_and_every_pairing_hint_is_compatible(registry):
    pairs = {tuple(d.name.split("+", 1)) for d in (RECORDS / "smoke").iterdir() if "+" in d.name}
    assert len(pairs) > 20
    for enc, enh in sorted(pairs):
        assert compatible(registry.get("encoder", enc), registry.get("enhancer", enh)) == (True, ""), (enc, enh)
    for spec in registry.all("enhancer"):
        if spec.pairs_with:
            assert compatible(registry.get("encoder", spec.pairs_with), spec)[0], spec.name


def test_declared_provides_match_the_built_encoders(registry):
    ctx = BuildContext(num_users=4, num_refs=3, image_size=32)
    for spec in registry.all("encoder"):
        if spec.role == "oracle":  # needs a run's dataset to build; provides vector (test_oracle_transfer)
            continue
        assert set(spec.provides) == set(spec.create(ctx, "small").provides), spec.name


def test_roles_of_the_builtins(registry):
    assert {s.name for s in registry.all("encoder") if s.role == "oracle"} == {"oracle-id", "oracle-params"}
    assert {s.name for s in registry.all("enhancer") if s.role == "baseline"} == {"identity", "transfer"}
    assert registry.get("loss", "center").loss_kind == "embedding"
    assert registry.get("dataset", "pie-synth").training_users_param == "train_users"


def test_an_enhancer_consuming_maps_pairs_only_with_encoders_providing_maps(monkeypatch, capsys):
    reg = _manager(monkeypatch).registry
    enh = reg.get("enhancer", "tp-maps")
    ok, why = compatible(reg.get("encoder", "tp-vector"), enh)
    assert not ok and why == ("enhancer 'tp-maps' consumes maps, which encoder 'tp-vector' does not provide "
                              "(its registration declares provides=['vector'])")
    partners = partner_order(reg, "tp-maps")
    assert partners and "tp-vector" not in partners
    assert all("maps" in reg.get("encoder", n).provides for n in partners)
    assert "angular" in partners and "lab-stats" not in partners
    assert first_compatible(reg, encoder="tp-vector") != "tp-maps"
    assert "warning" not in capsys.readouterr().err


def test_an_unknown_register_key_warns_once_naming_the_plugin(monkeypatch, capsys):
    reg = _manager(monkeypatch, consume=["vector"], downsample=8).registry
    lines = [x for x in capsys.readouterr().err.splitlines() if "tp-plugin" in x]
    assert len(lines) == 1
    assert lines[0].startswith("piebench: warning: plugin 'tp-plugin' registers enhancer 'tp-maps' with unknown "
                               "key(s) consume, downsample")
    assert reg.get("enhancer", "tp-maps").meta == {"consume": ["vector"], "downsample": 8}


def test_free_form_meta_is_quiet_and_a_wrong_type_is_refused(monkeypatch, capsys):
    reg = _manager(monkeypatch, meta={"downsample": 8}).registry
    assert reg.get("enhancer", "tp-maps").meta == {"downsample": 8}
    assert "tp-plugin" not in capsys.readouterr().err
    reg = _manager(monkeypatch, full_resolution=True, role="teacher").registry
    assert not reg.has("enhancer", "tp-maps")
    assert "plugin 'tp-plugin' registered enhancer 'tp-maps' with enhancer keyword role='teacher': expected " \
           "one of model, oracle, baseline" in capsys.readouterr().err
    with pytest.raises(PluginError, match="unknown key"):
        _manager(monkeypatch, strict=True, downsample=8)
