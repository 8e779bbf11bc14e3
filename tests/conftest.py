"""Shared test setup: a private store cache, pinned threads, common fixtures, and parallel runs.

The default run is parallel (``-n 2 --dist loadgroup`` in pyproject's addopts, pytest-xdist);
``-n 0`` runs in one process. Every test module with a module- or class-scoped fixture (a
trained run, a built store, a browser) is kept on one worker, so that fixture is built once;
work shared by several modules is built once per run with :func:`shared_once`.
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


def _shares_a_scoped_fixture(item: pytest.Item) -> bool:
    """Whether the test requests (directly or through other fixtures, autouse ones aside) a fixture
    scoped to its module or class."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    todo = [*info.argnames, *(n for m in item.iter_markers("usefixtures") for n in m.args)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or not info.name2fixturedefs.get(name):
            continue
        seen.add(name)
        fixturedef = info.name2fixturedefs[name][-1]  # the one this test gets
        if fixturedef.scope in ("module", "class", "package"):
            return True
        todo.extend(fixturedef.argnames)
    return False


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist: keep each module with a scoped fixture on one worker; start slow work first.

    A module- or class-scoped fixture is built once per worker that runs one of its tests, so such
    a module is one ``xdist_group``. Groups and ``slow`` tests are handed out first (a long test
    started last would leave the other worker idle at the end); the order is otherwise unchanged.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _shares_a_scoped_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))

    def first(item: pytest.Item) -> int:
        return 0 if item.get_closest_marker("slow") or item.get_closest_marker("xdist_group") else 1

    items.sort(key=first)
