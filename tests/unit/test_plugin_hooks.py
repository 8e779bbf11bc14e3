"""Lifecycle hooks are contained: one that raises is reported once naming its plugin and skipped
for the rest of the run (strict mode: the run fails and its record says why); the others still run."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from piebench import hookimpl
from piebench.errors import RunFailed
from piebench.plugins import PluginInfo, PluginManager
from piebench.record import RunRecord


@dataclass
class _Run:
    config: dict = field(default_factory=dict)
    run_dir: Path | None = None
    record: dict = field(default_factory=lambda: {"status": "running"})

    def save(self) -> None:
        """As a run's context does: the record written through a RunRecord."""
        if self.run_dir is not None:
            RunRecord(self.record, self.run_dir / "record.json").write()


def _module(name: str, calls: list, raise_on: str | None = None) -> types.ModuleType:
    """A plugin module observing three lifecycle hooks, raising in ``raise_on``."""

    def note(hook: str) -> None:
        calls.append((name, hook))
        if hook == raise_on:
            raise KeyError(f"{name} is broken")

    @hookimpl
    def on_run_start(run):
        note("on_run_start")

    @hookimpl
    def on_step_end(run, stage, step, losses):
        note("on_step_end")

    @hookimpl
    def on_run_end(run, record):
        note("on_run_end")

    mod = types.ModuleType(name)
    mod.on_run_start, mod.on_step_end, mod.on_run_end = on_run_start, on_step_end, on_run_end
    return mod


def _manager(monkeypatch, strict: bool, calls: list) -> PluginManager:
    monkeypatch.setenv("PIEBENCH_STRICT_PLUGINS", "1" if strict else "0")
    manager = PluginManager()
    manager.add_module(PluginInfo("good", "good"), _module("good", calls))
    manager.add_module(PluginInfo("flaky", "flaky"), _module("flaky", calls, raise_on="on_step_end"))
    return manager


def test_a_raising_hook_is_reported_once_and_skipped_for_the_rest_of_the_run(monkeypatch, capsys):
    calls: list = []
    manager, run = _manager(monkeypatch, False, calls), _Run()
    hook = manager.hook
    hook.on_run_start(run=run)
    for step in (1, 2, 3):
        hook.on_step_end(run=run, stage="s", step=step, losses={"l1": 0.5})
    hook.on_run_end(run=run, record=run.record)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["piebench: warning: plugin 'flaky' raised in on_step_end: KeyError: 'flaky is broken'; "
                   "its lifecycle hooks are skipped for the rest of the run"]
    assert calls.count(("good", "on_step_end")) == 3 and calls.count(("flaky", "on_step_end")) == 1
    assert ("flaky", "on_run_end") not in calls and ("good", "on_run_end") in calls
    assert run.record["notes"] == ["plugin 'flaky' raised in on_step_end: KeyError: 'flaky is broken'; its "
                                   "lifecycle hooks were skipped for the rest of the run"]
    # The next run starts with every plugin enabled again.
    hook.on_run_start(run=_Run())
    assert calls[-2:] == [("flaky", "on_run_start"), ("good", "on_run_start")]  # last registered first


def test_strict_mode_fails_the_run_and_the_record_says_why(monkeypatch, tmp_path: Path):
    calls: list = []
    manager = _manager(monkeypatch, True, calls)
    run = _Run(run_dir=tmp_path, record={"status": "running", "metrics": {"psnr": float("nan")}})
    manager.hook.on_run_start(run=run)
    with pytest.raises(RunFailed) as err:
        manager.hook.on_step_end(run=run, stage="s", step=1, losses={})
    assert str(err.value) == "plugin 'flaky' raised in on_step_end: KeyError: 'flaky is broken'"
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["status"] == "failed" and record["reason"] == str(err.value)


def test_registration_hooks_are_not_wrapped(monkeypatch):
    manager = _manager(monkeypatch, False, [])
    assert manager.hook.register_encoders is manager.pm.hook.register_encoders


def test_a_lifecycle_hookwrapper_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("PIEBENCH_STRICT_PLUGINS", "0")
    mod = types.ModuleType("wrapping")

    @hookimpl(hookwrapper=True)
    def on_step_end(run, stage, step, losses):
        yield

    mod.on_step_end = on_step_end
    manager = PluginManager()
    manager.add_module(PluginInfo("wrapping", "wrapping"), mod)
    assert "lifecycle hook wrapper(s) on_step_end" in capsys.readouterr().err
    assert manager.pm.get_plugin("wrapping") is None
