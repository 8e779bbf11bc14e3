"""Broken plugins loaded together through PIEBENCH_LOAD_PLUGINS (tests/integration/test_plugins.py
covers them one at a time as installed distributions, for ``list``).

All broken at once: one warning line each, naming the plugin, and a real run of built-in
plugins still trains and evaluates. An enhancer of the wrong output shape stops its run with
one line naming the enhancer and its plugin, and a ``failed`` record. A builder returning a
plain function is reported by ``list`` and refused by ``run`` in one line; an observer that
raises is reported once and skipped (strict: the run fails and its record says why).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rel_helpers import error_lines, extra_plugin_env, find_run_dir, piebench, plugin_env, read_record

BROKEN = {
    "rel_bad_import": "raise RuntimeError('boom at import')\n",
    "rel_bad_signature": ("from piebench import hookimpl\n@hookimpl\ndef register_losses(register, extra):\n"
                          "    pass\n"),
    "rel_dup_name": ("from piebench import hookimpl\n@hookimpl\ndef register_losses(register):\n"
                     "    register('l1', build=lambda ctx: None, description='a clash')\n"),
    "rel_raises_in_hook": ("from piebench import hookimpl\n@hookimpl\ndef register_encoders(register):\n"
                           "    raise KeyError('no such thing')\n"),
}
TINY = ["--steps", "4", "--set", "eval.max_photos=1", "--set", "train.threads=1", "--set", 'eval.metrics=["psnr"]',
        "--quiet"]


def _env(tmp_path: Path, plugin_root: Path, modules: list[str]) -> dict:
    return extra_plugin_env(tmp_path, plugin_root, BROKEN, modules)


def test_all_broken_at_once_warn_once_each_and_a_run_still_works(tmp_path: Path, plugin_root: Path):
    env = _env(tmp_path, plugin_root, [*BROKEN, "rel_faulty"])
    res = piebench("list", "losses", "--json", "--no-params", env=env)
    assert res.returncode == 0, res.stderr
    for name in BROKEN:
        lines = [ln for ln in res.stderr.splitlines() if name in ln]
        assert len(lines) == 1, res.stderr
        assert lines[0].startswith("piebench: warning: plugin ")
    assert "Traceback" not in res.stderr
    names = {row["name"] for row in json.loads(res.stdout)}
    assert {"l1", "center", "test-nan"} <= names  # built-ins and the healthy test plugin are there
    rows = {row["name"]: row for row in json.loads(res.stdout)}
    assert rows["l1"]["plugin"] != "rel_dup_name"  # the first registration wins

    runs = tmp_path / "runs"
    res = piebench("run", "--encoder", "center", "--enhancer", "sa", *TINY, "--runs-dir", str(runs), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert read_record(find_run_dir(runs))["status"] == "finished"
    assert sum("plugin 'rel_" in ln for ln in res.stderr.splitlines()) == len(BROKEN)


def test_enhancer_of_wrong_shape_names_enhancer_and_plugin(tmp_path: Path, plugin_root: Path):
    runs = tmp_path / "runs"
    env = plugin_env(plugin_root, modules="rel_faulty")
    res = piebench("run", "--encoder", "center", "--enhancer", "test-halfsize", *TINY, "--runs-dir", str(runs),
                   env=env)
    assert res.returncode == 1
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "'test-halfsize'" in lines[0] and "rel_faulty" in lines[0] and "shape" in lines[0], lines[0]
    assert "(8, 3, 32, 32)" in lines[0] and "(8, 3, 64, 64)" in lines[0]
    rec = read_record(find_run_dir(runs))
    assert rec["status"] == "failed" and "test-halfsize" in rec["reason"]


@pytest.mark.slow
def test_a_builder_returning_a_function_is_one_line_in_list_and_run(tmp_path: Path, plugin_root: Path):
    env = plugin_env(plugin_root, modules="rel_faulty")
    res = piebench("list", "enhancers", "--no-params", env=env)
    assert res.returncode == 0, res.stderr
    warned = [ln for ln in res.stderr.splitlines() if "test-" in ln]
    assert warned == [
        "piebench: warning: enhancer 'test-function' (plugin 'rel_faulty'): its builder returned a function "
        "(_not_a_module), not a piebench.Enhancer (an nn.Module subclass); see piebench.hookspecs.register_enhancers",
        "piebench: warning: enhancer 'test-halfsize' (plugin 'rel_faulty'): forward on input (2, 3, 32, 32) "
        "(paired with encoder 'angular') returned (2, 3, 16, 16), expected (2, 3, 32, 32) (the input's shape)"]
    strict = piebench("list", "enhancers", "--no-params", env={**env, "PIEBENCH_STRICT_PLUGINS": "1"})
    assert strict.returncode == 1 and error_lines(strict.stderr) == [
        "piebench: error: " + warned[0].removeprefix("piebench: warning: ")]

    runs = tmp_path / "runs"
    res = piebench("run", "--encoder", "center", "--enhancer", "test-function", *TINY, "--runs-dir", str(runs),
                   env=env)
    assert res.returncode == 1 and "internal error" not in res.stderr and "Traceback" not in res.stderr
    assert error_lines(res.stderr) == ["piebench: error: " + warned[0].removeprefix("piebench: warning: ")]


@pytest.mark.slow
def test_a_raising_observer_is_reported_once_and_skipped(tmp_path: Path, plugin_root: Path):
    env = plugin_env(plugin_root, modules="rel_raising")
    res = piebench("run", "--encoder", "center", "--enhancer", "sa", *TINY, "--runs-dir", str(tmp_path / "a"),
                   env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    line = "plugin 'rel_raising' raised in on_step_end: ValueError: observer broke at step 2"
    assert [ln for ln in res.stderr.splitlines() if "rel_raising" in ln] == [
        f"piebench: warning: {line}; its lifecycle hooks are skipped for the rest of the run"]
    rec = read_record(find_run_dir(tmp_path / "a"))
    assert rec["status"] == "finished" and any(n.startswith(line) for n in rec["notes"])

    res = piebench("run", "--encoder", "center", "--enhancer", "sa", *TINY, "--runs-dir", str(tmp_path / "b"),
                   env={**env, "PIEBENCH_STRICT_PLUGINS": "1"})
    assert res.returncode == 1 and error_lines(res.stderr) == [f"piebench: error: {line}"], res.stderr[-3000:]
    rec = read_record(find_run_dir(tmp_path / "b"))
    assert rec["status"] == "failed" and rec["reason"] == line
