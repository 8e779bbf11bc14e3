"""Shared test setup: a private store cache, pinned threads, and common fixtures."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# One pie-synth store cache per test session (built once, reused by every test and CLI call).
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
