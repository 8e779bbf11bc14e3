"""The device-resident image store and its sampler, run on the CPU with the device-side (torch) code.

Every batch is checked pixel by pixel against direct store lookups of the indices the sampler
reports, through a checksum that sees flips (a sampler that hands back a cached batch fails),
and against TrainSampler's batches for the same seed (same draws, same bits, exact resume).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from piebench_plugins.datasets.pie_synth import build_pie_synth

from piebench.data import device_store
from piebench.data.device_store import DeviceSampler, DeviceStore, choose_mode, resolve_store_device, to_float
from piebench.data.sampler import TrainSampler
from piebench.distributed import ShardSampler
from piebench.errors import UsageError

MODES = [("resident", "torch"), ("staged", "torch"), ("resident", "numpy"), ("staged", "numpy")]


@pytest.fixture(scope="module")
def ds():
    """pie-synth at 16 px, 6 crops per scene (12 seen users)."""
    return build_pie_synth(None, resolution=16, crops_per_scene=6)


def _weights(h: int, w: int) -> np.ndarray:
    """Position weights: a mirrored image has another checksum unless it is symmetric."""
    return (np.arange(h * w * 3, dtype=np.int64).reshape(h, w, 3) % 251) + 1


def checksum(img_u8: np.ndarray) -> int:
    return int((img_u8.astype(np.int64) * _weights(*img_u8.shape[:2])).sum())


def batch_checksum(img: torch.Tensor) -> int:
    """Checksum of a float [3, H, W] image in [0, 1] (exact: the values are k / 255)."""
    u8 = torch.round(img.float() * 255).to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
    assert torch.equal(img.float().cpu(), torch.from_numpy(u8).permute(2, 0, 1).float().div(255.0))
    return checksum(u8)


def store_checksum(ds, version: int, photo: int, flip: bool) -> int:
    img = np.asarray(ds.versions[version, photo])
    return checksum(img[:, ::-1] if flip else img)


def check_against_store(ds, batch, idx: dict, pairs: bool) -> None:
    """Assert every image of ``batch`` is the store entry its reported indices name."""
    for i, (u, p) in enumerate(zip(idx["user"], idx["photo"], strict=True)):
        f = bool(idx["flip"][i])
        assert batch_checksum(batch.input[i]) == store_checksum(ds, 0, p, f), f"input {i}"
        assert batch_checksum(batch.target[i]) == store_checksum(ds, 1 + u, p, f), f"target {i}"
        for j, r in enumerate(idx["refs"][i]):
            rf = bool(idx["ref_flip"][i][j])
            assert batch_checksum(batch.refs.targets[i, j]) == store_checksum(ds, 1 + u, r, rf), f"ref {i},{j}"
            if pairs:
                assert batch_checksum(batch.refs.inputs[i, j]) == store_checksum(ds, 0, r, rf), f"ref input {i},{j}"
    assert batch.user.tolist() == list(idx["user"]) and batch.photo.tolist() == list(idx["photo"])


class CachingSampler(TrainSampler):
    """A broken sampler: reports fresh indices but returns its first batch forever."""

    def sample(self):
        batch = super().sample()
        self._cached = getattr(self, "_cached", batch)
        return self._cached


@pytest.mark.parametrize("mode,kernel", MODES)
def test_batches_match_direct_store_lookups(ds, mode, kernel):
    sampler = DeviceSampler(ds, batch_users=3, per_user=2, refs=4, pairs=True, seed=3, mode=mode, kernel=kernel)
    assert sampler.store.mode == mode and sampler.kernel == kernel
    for _ in range(4):
        batch = sampler.sample()
        check_against_store(ds, batch, sampler.last_indices, pairs=True)
    assert any(any(f) for f in sampler.last_indices["ref_flip"])  # flips were exercised


def test_checksum_check_catches_a_caching_sampler(ds):
    plain = TrainSampler(ds, batch_users=3, per_user=2, refs=2, seed=3)
    for _ in range(3):
        check_against_store(ds, plain.sample(), plain.last_indices, pairs=False)
    cached = CachingSampler(ds, batch_users=3, per_user=2, refs=2, seed=3)
    cached.sample()
    with pytest.raises(AssertionError):
        for _ in range(3):
            check_against_store(ds, cached.sample(), cached.last_indices, pairs=False)


@pytest.mark.parametrize("mode,kernel", MODES)
def test_same_batches_as_train_sampler_for_the_same_seed(ds, mode, kernel):
    ref = TrainSampler(ds, batch_users=4, per_user=2, refs=3, pairs=True, seed=11)
    dev = DeviceSampler(ds, batch_users=4, per_user=2, refs=3, pairs=True, seed=11, mode=mode, kernel=kernel)
    for _ in range(3):
        a, b = ref.sample(), dev.sample()
        assert ref.last_indices == dev.last_indices
        for x, y in ((a.input, b.input), (a.target, b.target), (a.refs.targets, b.refs.targets),
                     (a.refs.inputs, b.refs.inputs), (a.user, b.user), (a.photo, b.photo),
                     (a.extras["user_params"], b.extras["user_params"])):
            assert x.dtype == y.dtype and torch.equal(x, y)
        assert b.refs.query is b.input and b.refs.mask is None


def test_resume_is_exact_and_interchangeable_with_train_sampler(ds):
    run = DeviceSampler(ds, batch_users=3, per_user=2, refs=2, seed=5, kernel="torch")
    for _ in range(3):
        run.sample()
    state = run.state_dict()
    expected = [run.sample() for _ in range(3)]
    for resumed in (DeviceSampler(ds, batch_users=3, per_user=2, refs=2, seed=99, kernel="torch"),
                    TrainSampler(ds, batch_users=3, per_user=2, refs=2, seed=99)):
        resumed.load_state_dict(state)
        for want in expected:
            got = resumed.sample()
            assert torch.equal(got.input, want.input) and torch.equal(got.refs.targets, want.refs.targets)
        assert resumed.step == run.step


@pytest.mark.parametrize("kernel", ["torch", "numpy"])
def test_staged_buffers_do_not_leak_into_earlier_batches(ds, kernel):
    sampler = DeviceSampler(ds, batch_users=3, per_user=2, refs=2, seed=1, mode="staged", kernel=kernel)
    first = sampler.sample()
    kept = first.refs.targets.clone()
    for _ in range(3):  # both staging buffers are refilled
        sampler.sample()
    assert torch.equal(first.refs.targets, kept)


@pytest.mark.parametrize("kernel", ["torch", "numpy"])
def test_channels_last_batches_hold_the_same_values(ds, kernel):
    a = DeviceSampler(ds, batch_users=2, per_user=2, refs=2, seed=2, kernel=kernel)
    b = DeviceSampler(ds, batch_users=2, per_user=2, refs=2, seed=2, kernel=kernel, channels_last=True)
    x, y = a.sample(), b.sample()
    assert y.input.is_contiguous(memory_format=torch.channels_last)
    assert x.input.is_contiguous() and torch.equal(x.input, y.input) and torch.equal(x.refs.targets, y.refs.targets)


def test_to_float_flips_only_the_flagged_rows():
    rows = torch.arange(2 * 2 * 3 * 3, dtype=torch.uint8).view(2, 2, 3, 3)
    out = to_float(rows, torch.tensor([False, True]))
    assert torch.equal(out[0], rows[0].permute(2, 0, 1).float() / 255)
    assert torch.equal(out[1], rows[1].flip(1).permute(2, 0, 1).float() / 255)
    assert torch.equal(rows, torch.arange(36, dtype=torch.uint8).view(2, 2, 3, 3))  # input untouched


def test_mode_follows_free_memory(ds, monkeypatch):
    nbytes = ds.versions.nbytes
    monkeypatch.setattr(device_store, "free_memory", lambda device: 4 * nbytes)
    assert choose_mode(nbytes, "cuda", "auto", fraction=0.5) == "resident"  # free_memory is faked: no GPU needed
    assert choose_mode(nbytes, "cuda", "auto", fraction=0.2) == "staged"
    assert choose_mode(nbytes, "cuda", "staged") == "staged"
    with pytest.raises(UsageError, match="only"):
        choose_mode(nbytes, "cuda", "resident", fraction=0.2)
    with pytest.raises(UsageError, match="fraction"):
        choose_mode(nbytes, "cuda", "auto", fraction=0)
    assert choose_mode(nbytes, "cpu", "resident", fraction=0.5) == "resident"
    assert choose_mode(nbytes, "cpu", "auto", fraction=0.5) == "staged"  # the memory map is host memory already
    store = DeviceStore(ds.versions, "cpu", mode="resident", fraction=0.5)
    assert store.mode == "resident" and store.data.shape[0] == ds.versions.shape[0] * ds.versions.shape[1]


def test_store_device_choices():
    assert resolve_store_device("auto", "cpu") == "auto"
    assert resolve_store_device("cpu", "cuda") == "staged"
    assert resolve_store_device("cuda", "cuda:0") == "resident"
    with pytest.raises(UsageError, match="CUDA training device"):
        resolve_store_device("cuda", "cpu")
    with pytest.raises(UsageError, match="auto, cpu or cuda"):
        resolve_store_device("gpu", "cpu")


def test_shards_partition_the_global_batch(ds):
    full = TrainSampler(ds, batch_users=4, per_user=2, refs=3, seed=7)
    shards = [ShardSampler(DeviceSampler(ds, batch_users=4, per_user=2, refs=3, seed=7, kernel="torch"), r, 2)
              for r in range(2)]
    for _ in range(2):
        want = full.sample()
        parts = [s.sample() for s in shards]
        assert torch.equal(torch.cat([p.input for p in parts]), want.input)
        assert torch.equal(torch.cat([p.refs.targets for p in parts]), want.refs.targets)
        assert sum((s.last_indices["user"] for s in shards), []) == full.last_indices["user"]
    with pytest.raises(UsageError, match="multiple of 3"):
        ShardSampler(full, 0, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["resident", "staged"])
def test_cuda_store_matches_cpu(ds, mode):
    ref = TrainSampler(ds, batch_users=3, per_user=2, refs=3, pairs=True, seed=4)
    dev = DeviceSampler(ds, batch_users=3, per_user=2, refs=3, pairs=True, seed=4, device="cuda", mode=mode)
    assert dev.store.pinned == (mode == "staged")
    for _ in range(3):
        a, b = ref.sample(), dev.sample()
        assert b.input.is_cuda and torch.equal(a.input, b.input.cpu())
        assert torch.equal(a.refs.inputs, b.refs.inputs.cpu())
