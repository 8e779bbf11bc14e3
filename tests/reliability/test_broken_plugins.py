"""Broken plugins loaded together through PIEBENCH_LOAD_PLUGINS (tests/integration/test_plugins.py
covers them one at a time as installed distributions, for ``list``).

All broken at once: one warning line each, naming the plugin, and a real run of built-in
plugins still trains and evaluates. An enhancer of the wrong output shape stops its run with
one line naming the enhancer and its plugin, and a ``failed`` record.
"""

from __future__ import annotations

import json
from pathlib import Path

from rel_helpers import error_lines, find_run_dir, piebench, plugin_env, read_record

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
    for name, src in BROKEN.items():
        (tmp_path / f"{name}.py").write_text(src)
    env = plugin_env(plugin_root, modules=",".join(modules))
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    return env


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
