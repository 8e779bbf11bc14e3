"""Shared test setup: a private store cache, pinned threads, common fixtures, and parallel runs.

The default run is parallel (``-n 2 --dist loadfile`` in pyproject's addopts, pytest-xdist):
each test module runs whole on one worker, so its module-scoped fixtures (a trained run, a
built store, a browser) are built once; work shared by several modules is built once per run
with :func:`shared_once`. ``-n 0`` runs in one process.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# One pie-synth store cache per test session (built once, reused by every test and CLI call). The
# xdist workers inherit it from the controller, which imports this file first; the store cache
# is safe to share (a store is built under a lock and renamed into place).
os.environ.setdefault("PIEBENCH_CACHE", tempfile.mkdtemp(prefix="piebench-cache-"))
os.environ.setdefault("MPLBACKEND", "Agg")
# CI has no network: nothing may try to download weights (tests of the download path serve the
# file themselves from 127.0.0.1 and lift this for their own process).
os.environ.setdefault("PIEBENCH_OFFLINE", "1")
# One intra-op thread: the tensors here are tiny, and two threads spin-wait badly whenever the
# 2 cores are shared (steps measured 5-50x slower); the smoke protocol pins one thread too.
torch.set_num_threads(1)


@pytest.fixture
def registry():
    """The registry of every installed plugin."""
    from piebench.plugins import get_registry

    return get_registry()


@pytest.fixture(scope="session")
def shared_once(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Callable[[Path], None]], Path]:
    """``shared_once(name, build)``: the folder ``build(folder)`` filled, built once per test run.

    Under xdist every worker asks; the first builds (under a lock), the others wait and read the
    same folder, so a session fixture's expensive work is not repeated per worker. A build that
    raised leaves no ``.done`` mark: the next asker builds again (and fails the same way).
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's, not the worker's

    def once(name: str, build: Callable[[Path], None]) -> Path:
        out = root / f"shared-{name}"
        with open(root / f".shared-{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (out / ".done").exists():
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                build(out)
                (out / ".done").touch()
        return out

    return once


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, hand out the modules with the most ``slow`` tests first.

    Workers take whole modules (``--dist loadfile``: a module's module-scoped fixtures are built
    once), one after another as they finish; a long module taken last would leave the other
    worker idle at the end. The order within a module, and of the other modules, is unchanged.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        slow[module] = slow.get(module, 0) + (item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])
