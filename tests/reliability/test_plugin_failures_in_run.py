"""Plugin misbehaviour the run itself meets, each one line naming the plugin and a record that says why.

A metric that crashes is refused before training (no run directory, nothing trained); a loss
that returns a vector fails the run at its first step with a ``failed`` record; a raising
``on_run_start`` in strict mode leaves the run directory with a record saying why; a raising
``on_run_end`` outside strict mode keeps its note in the written record.
"""

from __future__ import annotations

from pathlib import Path

from rel_helpers import error_lines, extra_plugin_env, find_run_dir, piebench, read_record

MISBEHAVING = '''
"""Test plugin: a metric that crashes, a loss that returns a vector, observers that raise."""
import os

import torch

from piebench import hookimpl
from piebench.interfaces import Loss


def _crashing_metric(output, target):
    raise ZeroDivisionError("no pixels to average")


class VectorLoss(Loss):
    kind = "image"

    def forward(self, output, target, batch=None):
        return (output - target).abs().flatten(1).mean(1)  # one value per image, not a scalar


@hookimpl
def register_metrics(register):
    register("fail-crash", build=lambda ctx: _crashing_metric, description="crashes on any input")


@hookimpl
def register_losses(register):
    register("fail-vector", build=lambda ctx: VectorLoss(), description="a per-image vector")


@hookimpl
def on_run_start(run):
    if os.environ.get("FAIL_IN") == "start":
        raise RuntimeError("tracker refused the run")


@hookimpl
def on_run_end(run, record):
    if os.environ.get("FAIL_IN") == "end":
        raise RuntimeError("tracker went away")
'''
TINY = ["--steps", "4", "--set", "eval.max_photos=1", "--set", "train.threads=1", "--set", 'eval.metrics=["psnr"]',
        "--quiet"]


def _run(tmp_path: Path, plugin_root: Path, *args: str, **extra: str):
    env = extra_plugin_env(tmp_path, plugin_root, {"rel_misbehaving": MISBEHAVING}, ["rel_misbehaving"], **extra)
    return piebench("run", "--encoder", "center", "--enhancer", "sa", *TINY, "--runs-dir", str(tmp_path / "runs"),
                    *args, env=env)


def test_a_crashing_metric_is_refused_before_training(tmp_path: Path, plugin_root: Path):
    res = _run(tmp_path, plugin_root, "--metric", "fail-crash")
    assert res.returncode == 1 and "Traceback" not in res.stderr and "internal error" not in res.stderr
    assert error_lines(res.stderr) == [
        "piebench: error: metric 'fail-crash' (plugin 'rel_misbehaving') failed on 2 random 64x64 image pairs: "
        "ZeroDivisionError: no pixels to average; see piebench.hookspecs.register_metrics"], res.stderr[-2000:]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("record.json"))


def test_a_loss_returning_a_vector_fails_the_run_naming_it(tmp_path: Path, plugin_root: Path):
    res = _run(tmp_path, plugin_root, "--loss", "fail-vector:1")
    assert res.returncode == 1 and "Traceback" not in res.stderr and "internal error" not in res.stderr
    line = ("loss 'fail-vector' (plugin 'rel_misbehaving'): forward on a training batch returned shape (8,), "
            "expected a scalar tensor (shape ()); see piebench.hookspecs.register_losses")
    assert error_lines(res.stderr) == [f"piebench: error: {line}"], res.stderr[-2000:]
    rec = read_record(find_run_dir(tmp_path / "runs"))
    assert rec["status"] == "failed" and rec["reason"] == line


def test_strict_on_run_start_failure_leaves_a_record_saying_why(tmp_path: Path, plugin_root: Path):
    res = _run(tmp_path, plugin_root, FAIL_IN="start", PIEBENCH_STRICT_PLUGINS="1")
    line = "plugin 'rel_misbehaving' raised in on_run_start: RuntimeError: tracker refused the run"
    assert res.returncode == 1 and error_lines(res.stderr) == [f"piebench: error: {line}"], res.stderr[-2000:]
    rec = read_record(find_run_dir(tmp_path / "runs"))
    assert rec["status"] == "failed" and rec["reason"] == line


def test_a_raising_on_run_end_keeps_its_note_in_the_record(tmp_path: Path, plugin_root: Path):
    res = _run(tmp_path, plugin_root, FAIL_IN="end")
    assert res.returncode == 0, res.stderr[-2000:]
    line = "plugin 'rel_misbehaving' raised in on_run_end: RuntimeError: tracker went away"
    assert f"piebench: warning: {line}; its lifecycle hooks are skipped for the rest of the run" in res.stderr
    rec = read_record(find_run_dir(tmp_path / "runs"))
    assert rec["status"] == "finished" and any(note.startswith(line) for note in rec["notes"]), rec["notes"]
