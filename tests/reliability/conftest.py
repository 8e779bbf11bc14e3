"""Fixtures of the reliability suite: the test plugins and one uninterrupted reference run."""

from __future__ import annotations

from pathlib import Path

import pytest
from rel_helpers import RUN_ARGS, events, find_run_dir, piebench, plugin_env, read_record, write_plugins


@pytest.fixture(scope="session")
def plugin_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PYTHONPATH folder with the observer and faulty test plugins."""
    return write_plugins(tmp_path_factory.mktemp("rel-plugins"))


def _reference(root: Path) -> None:
    plugins = write_plugins(root / "plugins")
    res = piebench(*RUN_ARGS, "--quiet", "--runs-dir", str(root / "runs"),
                   env=plugin_env(plugins, root / "events.jsonl"))
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="session")
def reference_run(shared_once) -> dict:
    """The tiny center + sa run, uninterrupted: its run dir, record, loss log and events.

    Built once per test run (shared by the xdist workers); tests read it or copy it, never write it.
    """
    root = shared_once("rel-reference", _reference)
    run_dir = find_run_dir(root / "runs")
    assert run_dir is not None
    record = read_record(run_dir)
    assert record["status"] == "finished" and record["resumed_from_step"] == 0
    return {"run_dir": run_dir, "record": record, "events": events(root / "events.jsonl")}
