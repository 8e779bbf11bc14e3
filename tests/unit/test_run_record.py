"""RunRecord: the record's fields and its writes (only rank 0 writes; a failed write is a warning)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from piebench.config import resolve
from piebench.record import RunRecord, plugins_used
from piebench.runs import SCHEMA_VERSION, load_record


@pytest.fixture(scope="module")
def cfg() -> dict:
    return resolve("smoke", encoder="angular", enhancer="sa", steps=4)


def _new(cfg: dict, path: Path | None, rank: int = 0) -> RunRecord:
    return RunRecord.new(cfg, key="k" * 16, eval_hash="e" * 16, train_hash="t" * 16,
                         plugins={"encoder:angular": {"plugin": "encoder-metric", "plugin_version": "0.1.0",
                                                      "version": "1", "paper": ""}},
                         device="cpu", path=path, rank=rank)


def test_a_new_record_copies_the_configuration_and_loads_back(cfg, tmp_path: Path):
    path = tmp_path / "record.json"
    rec = _new(cfg, path)
    rec.start(notes=["n1"], pretrained_from="random initialisation", parameters={"encoder": 3, "enhancer": 5})
    assert "pretrained_from" not in cfg["encoder"]  # the record's tables are copies, never aliases
    assert rec.data["encoder"] is not cfg["encoder"] and rec.data["overrides"] is not cfg["overrides"]
    rec.write()
    back = RunRecord.load(path)
    assert back.data == json.loads(path.read_text()) == rec.data
    assert back.data["schema_version"] == SCHEMA_VERSION and back.data["run_key"] == "k" * 16
    assert back.data["encoder"]["pretrained_from"] == "random initialisation"
    assert back.data["status"] == "running" and back.data["parameters"] == {"encoder": 3, "enhancer": 5}
    assert load_record(path)["protocol"]["eval_hash"] == "e" * 16  # what leaderboards read


def test_train_time_adds_up_and_finish_writes_the_end(cfg, tmp_path: Path):
    path = tmp_path / "record.json"
    rec = _new(cfg, path)
    rec.add_train_time(1.25)
    rec.add_train_time(0.5)  # a resumed run adds its sessions
    rec.set_results({"all": {"psnr": {"mean": float("nan")}}}, metric_variants={"psnr": "v"}, manifest_hash="m",
                    eval_s=0.25)
    rec.finish("finished", compute={"steps": 4, "total_steps": 4, "images_seen": 8})
    data = json.loads(path.read_text())
    assert data["timings"] == {"train_s": 1.75, "eval_s": 0.25}
    assert data["compute"] == {"steps": 4, "total_steps": 4, "images_seen": 8, "wall_s": 2.0}
    assert data["status"] == "finished" and "finished" in data and "stopped" not in data and "reason" not in data
    assert data["metrics"]["all"]["psnr"]["mean"] is None  # strict JSON
    assert data["metric_variants"] == {"psnr": "v"} and data["manifest_hash"] == "m"
    with pytest.raises(ValueError, match="status must be one of"):
        rec.finish("done", compute={})


def test_ranks_other_than_zero_never_write(cfg, tmp_path: Path):
    path = tmp_path / "record.json"
    rec = _new(cfg, path, rank=1)
    rec.start(notes=[], pretrained_from="", parameters={})
    rec.write()
    rec.finish("failed", compute={"steps": 1}, reason="boom")
    rec.restore(b'{"old": 1}')
    assert list(tmp_path.iterdir()) == []  # nothing, not even a temporary file
    assert rec.data["status"] == "failed" and rec.data["reason"] == "boom"  # the same record in memory


def test_hooks_see_a_live_plain_dict_whose_notes_are_written(cfg, tmp_path: Path):
    rec = _new(cfg, tmp_path / "record.json")
    view = rec.data
    assert type(view) is dict
    view.setdefault("notes", []).append("plugin 'x' raised")  # what a contained hook failure does
    rec.finish("interrupted", compute={}, reason="stopped")
    data = json.loads((tmp_path / "record.json").read_text())
    assert data["notes"] == ["plugin 'x' raised"] and data["status"] == "interrupted" and "stopped" in data


def test_a_failed_write_is_a_warning_and_the_old_record_is_restorable(cfg, tmp_path: Path, capsys):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the run directory should be")
    rec = _new(cfg, blocker / "record.json")
    rec.finish("failed", compute={}, reason="disk full")  # must not raise over the run's own error
    assert "warning: could not update" in capsys.readouterr().err
    good = tmp_path / "record.json"
    rec = _new(cfg, good)
    rec.write()
    snapshot = rec.snapshot()
    rec.start(notes=["changed"], pretrained_from="", parameters={})
    rec.write()
    rec.restore(snapshot)  # a refused resume leaves the run as it was
    assert good.read_bytes() == snapshot


def test_plugins_used_lists_every_component():
    entry = {"plugin": "p", "plugin_version": "1.0", "version": "2", "paper": "x", "params": {}}
    resolved = {"encoder": {**entry, "name": "angular"}, "enhancer": {**entry, "name": "sa"},
                "dataset": {**entry, "name": "pie-synth"},
                "losses": {"l1": {**entry, "name": "l1"}, "angular": {**entry, "name": "angular"}},
                "metrics": {"psnr": {**entry, "name": "psnr"}}}
    used = plugins_used(resolved)
    assert list(used) == ["encoder:angular", "enhancer:sa", "dataset:pie-synth", "loss:l1", "loss:angular",
                          "metric:psnr"]
    assert used["loss:l1"] == {"plugin": "p", "plugin_version": "1.0", "version": "2", "paper": "x"}


def test_the_environment_says_how_busy_the_machine_was():
    """Throughput tables (leaderboards/regenerate.py) print the core count and load they were measured at."""
    from piebench.runs import environment

    env = environment("cpu")
    assert env["cpus"] == os.cpu_count() and isinstance(env["load_1min"], float) and env["load_1min"] >= 0
