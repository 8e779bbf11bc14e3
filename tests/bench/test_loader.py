"""Sampler throughput against a raw memory copy of the same bytes (pytest-benchmark).

Run with ``pytest tests/bench -m bench --benchmark-enable -n 0`` (outside the default run). Each
case is one smoke-protocol batch (4 users x 2 photos, 64 px) with N = 5 references: the
device sampler (numpy and torch kernels on the CPU, plus CUDA when present), the plain
TrainSampler, and ``np.copyto`` of the batch's uint8 bytes gathered from the store.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from piebench_plugins.datasets.pie_synth import build_pie_synth

from piebench.data.device_store import DeviceSampler
from piebench.data.sampler import TrainSampler

pytestmark = pytest.mark.bench
REFS, USERS, PER_USER = 5, 4, 2


@pytest.fixture(scope="module")
def ds():
    return build_pie_synth(None, resolution=64, crops_per_scene=8)


def _check(batch, ds):
    """The timed function returned a real batch of the expected shape and range."""
    assert batch.input.shape == (USERS * PER_USER, 3, *ds.resolution)
    assert batch.refs.targets.shape[1] == REFS and 0 <= float(batch.input.min()) <= float(batch.input.max()) <= 1


@pytest.mark.parametrize("mode,kernel", [("staged", "numpy"), ("resident", "numpy"), ("resident", "torch")])
def test_device_sampler_cpu(benchmark, ds, mode, kernel):
    sampler = DeviceSampler(ds, batch_users=USERS, per_user=PER_USER, refs=REFS, mode=mode, kernel=kernel)
    _check(benchmark(sampler.sample), ds)


def test_train_sampler(benchmark, ds):
    sampler = TrainSampler(ds, batch_users=USERS, per_user=PER_USER, refs=REFS)
    _check(benchmark(sampler.sample), ds)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_sampler_cuda(benchmark, ds):
    sampler = DeviceSampler(ds, batch_users=USERS, per_user=PER_USER, refs=REFS, device="cuda")

    def sample():
        batch = sampler.sample()
        torch.cuda.synchronize()
        return batch

    _check(benchmark(sample), ds)


def test_memory_copy_of_the_same_bytes(benchmark, ds):
    """The physical limit: copy a buffer of one batch's uint8 bytes, gathered from the store."""
    nbytes = USERS * PER_USER * (2 + REFS) * int(np.prod(ds.versions.shape[2:]))
    rows = np.asarray(ds.versions).reshape(-1, int(np.prod(ds.versions.shape[2:])))
    src = np.ascontiguousarray(rows[: USERS * PER_USER * (2 + REFS)]).reshape(-1)
    dst = np.empty_like(src)
    assert src.nbytes == nbytes
    benchmark(np.copyto, dst, src)
    assert np.array_equal(dst, src)
