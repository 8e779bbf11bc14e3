"""The image store on the training device, and a sampler that builds batches there.

:class:`DeviceStore` holds a dataset's uint8 ``versions`` ``[V, P, H, W, 3]`` in one of two modes:

* ``resident``: the whole store copied once to the device (CUDA memory, or host RAM when the
  device is the CPU and ``resident`` is asked for). ``auto`` chooses it on an accelerator when
  the store fits in ``fraction`` of the device's free memory (``torch.cuda.mem_get_info``).
* ``staged``: the store stays in its memory map; each batch's rows are gathered on the host
  into one of two (pinned, on CUDA) staging buffers and copied with ``non_blocking=True``; an
  event per buffer keeps a buffer from being refilled while its copy is still in flight.

:class:`DeviceSampler` is a :class:`~piebench.data.sampler.TrainSampler` whose index draws are
the same numpy draws (same generator, same ``state_dict``), so for the same seed it yields
bit-identical batches, and resume stays exact; the pixels are gathered with one index
tensor on the device, flipped and converted to float there. Nothing is decoded.

Kernels: on an accelerator the gather, flips and conversion are torch ops on the device
(``kernel="torch"``). On the CPU they default to numpy (``kernel="numpy"``: single-threaded,
no torch thread pool, which costs milliseconds per tiny op when the cores are shared); the
torch kernels run on the CPU too (``kernel="torch"``), which is how the device code is
tested without a GPU. Both give the values of :func:`~piebench.data.sampler.to_tensor`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..interfaces import Batch, RefSet
from . import PieDataset
from .sampler import TrainSampler

#: Default share of the device's free memory the store may take when resident.
DEFAULT_FRACTION = 0.5
_CHUNK_BYTES = 256 << 20  # host -> device copy granularity when loading a resident store
MODES = ("auto", "resident", "staged")


def free_memory(device: torch.device | str) -> int:
    """Bytes free on ``device``: ``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def choose_mode(nbytes: int, device: torch.device | str, mode: str = "auto",
                fraction: float = DEFAULT_FRACTION) -> str:
    """``resident`` when ``mode`` says so or (``auto``, accelerators) the store fits in ``fraction`` of
    free memory, else ``staged``; refuses ``resident`` for a store that does not fit."""
    if mode not in MODES:
        raise UsageError(f"store mode must be one of {', '.join(MODES)}, got '{mode}'")
    if not 0 < fraction <= 1:
        raise UsageError(f"store fraction must be in (0, 1], got {fraction}")
    if mode == "staged" or (mode == "auto" and torch.device(device).type == "cpu"):
        return "staged"  # on the CPU the memory map already is host memory: a copy would buy nothing
    budget = int(fraction * free_memory(device))
    if nbytes <= budget:
        return "resident"
    if mode == "resident":
        raise UsageError(f"the image store needs {nbytes / 2**30:.2f} GiB but only {budget / 2**30:.2f} GiB "
                         f"({fraction:.0%} of the free memory on {device}) may hold it; use --store-device cpu "
                         f"(staged batches) or a smaller resolution")
    return "staged"


class DeviceStore:
    """A uint8 store ``[V, P, H, W, 3]`` that hands out rows on ``device`` (see the module docstring)."""

    def __init__(self, versions: np.ndarray, device: torch.device | str = "cpu", *, mode: str = "auto",
                 fraction: float = DEFAULT_FRACTION) -> None:
        if versions.dtype != np.uint8 or versions.ndim != 5:
            raise UsageError(f"a store is uint8 [V, P, H, W, 3], got {versions.dtype} {versions.shape}")
        self.device = torch.device(device)
        self.shape = tuple(int(s) for s in versions.shape)
        self.row_shape = self.shape[2:]
        self.row_bytes = int(np.prod(self.row_shape))
        self.nbytes = int(versions.nbytes)
        self.mode = choose_mode(self.nbytes, self.device, mode, fraction)
        self.host = versions.reshape(self.shape[0] * self.shape[1], self.row_bytes)  # a view of the memmap
        self.data: torch.Tensor | None = None
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._events: list[Any] = [None, None]
        self._turn = 0
        if self.mode == "resident":
            self.data = self._load_resident()

    @property
    def pinned(self) -> bool:
        """Whether staging buffers are page-locked (only with CUDA)."""
        return self.mode == "staged" and self.device.type == "cuda"

    def _load_resident(self) -> torch.Tensor:
        rows = self.host.shape[0]
        data = torch.empty((rows, self.row_bytes), dtype=torch.uint8, device=self.device)
        step = max(1, _CHUNK_BYTES // self.row_bytes)
        for a in range(0, rows, step):  # a chunk at a time: never the whole store twice in host RAM
            chunk = torch.from_numpy(np.array(self.host[a : a + step]))
            data[a : a + step].copy_(chunk, non_blocking=False)
        return data

    def _staging(self, n: int) -> torch.Tensor:
        """The next staging buffer with room for ``n`` rows (waits until its last copy finished)."""
        k = self._turn
        self._turn = 1 - k
        if self._events[k] is not None:
            self._events[k].synchronize()
        buf = self._buffers[k]
        if buf is None or buf.shape[0] < n:
            buf = torch.empty((n, self.row_bytes), dtype=torch.uint8, pin_memory=self.pinned)
            self._buffers[k] = buf
        self._k = k
        return buf[:n]

    def rows(self, flat: np.ndarray) -> torch.Tensor:
        """uint8 ``[M, H, W, 3]`` on the device for flat row indices ``version * P + photo``."""
        flat = np.asarray(flat, np.int64).reshape(-1)
        if self.mode == "resident":
            idx = torch.from_numpy(flat).to(self.device, non_blocking=True)
            return self.data.index_select(0, idx).view(-1, *self.row_shape)
        order = np.argsort(flat, kind="stable")  # read the memory map in file order
        buf = self._staging(len(flat))
        np.take(self.host, flat[order], axis=0, out=buf.numpy())
        if self.device.type == "cpu":
            out = buf  # index_select below copies out of the staging buffer
        else:
            out = buf.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self._events[self._k] = event
        inverse = torch.from_numpy(np.argsort(order)).to(self.device, non_blocking=True)
        return out.index_select(0, inverse).view(-1, *self.row_shape)

    def images_numpy(self, flat: np.ndarray, flip: np.ndarray, channels_last: bool = False) -> torch.Tensor:
        """float32 ``[M, 3, H, W]`` in [0, 1] for flat row indices, rows with ``flip`` mirrored, built in
        numpy on the CPU: each row is read once from the store, mirrored and transposed into a uint8
        buffer, then one contiguous (SIMD) division makes the floats; the values of :func:`to_float`."""
        if self.device.type != "cpu":
            raise UsageError("the numpy kernel serves CPU stores only; use kernel='torch' on an accelerator")
        flat = np.asarray(flat, np.int64).reshape(-1)
        flip = np.asarray(flip, bool).reshape(-1)
        source = self.data.numpy() if self.mode == "resident" else self.host
        h, w, c = self.row_shape
        buf = np.empty((len(flat), h, w, c) if channels_last else (len(flat), c, h, w), np.uint8)
        for i in np.argsort(flat, kind="stable"):  # read the memory map in file order
            img = source[flat[i]].reshape(h, w, c)
            if flip[i]:
                img = img[:, ::-1]
            np.copyto(buf[i], img if channels_last else img.transpose(2, 0, 1))
        out = np.empty(buf.shape, np.float32)
        np.divide(buf, np.float32(255.0), out=out)
        return torch.from_numpy(out).permute(0, 3, 1, 2) if channels_last else torch.from_numpy(out)


def to_float(rows: torch.Tensor, flip: torch.Tensor | None = None,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 ``[M, H, W, 3]`` -> float32 ``[M, 3, H, W]`` in [0, 1] on the same device, rows with
    ``flip`` mirrored left-right; the same values as :func:`~piebench.data.sampler.to_tensor`."""
    if flip is not None:
        sel = flip.nonzero().squeeze(1)
        if sel.numel():  # mirror in uint8 (a quarter of the bytes of float32), only the flipped rows
            rows = rows.index_copy(0, sel, rows.index_select(0, sel).flip(2))
    nchw = rows.permute(0, 3, 1, 2)
    out = torch.empty(nchw.shape, dtype=torch.float32, device=rows.device, memory_format=memory_format)
    out.copy_(nchw)  # one kernel: uint8 -> float32 and HWC -> CHW
    return out.div_(255.0)


class DeviceSampler(TrainSampler):
    """:class:`TrainSampler` that gathers, flips and converts each batch on ``device``.

    Same arguments as :class:`TrainSampler` plus ``mode`` (``auto``/``resident``/``staged``),
    ``fraction`` (share of free device memory a resident store may take) and
    ``channels_last`` (batches in the NHWC memory format; same values) and ``kernel`` (see the
    module docstring). Index draws, RNG
    state and ``last_indices`` are :class:`TrainSampler`'s, so batches are bit-identical.
    """

    def __init__(self, dataset: PieDataset, *, batch_users: int, per_user: int, refs: int, pairs: bool = False,
                 seed: int = 0, augment: bool = True, device: Any = "cpu", mode: str = "auto",
                 fraction: float = DEFAULT_FRACTION, channels_last: bool = False,
                 store: DeviceStore | None = None, kernel: str = "auto") -> None:
        super().__init__(dataset, batch_users=batch_users, per_user=per_user, refs=refs, pairs=pairs, seed=seed,
                         augment=augment, device=device)
        self.store = store if store is not None else DeviceStore(dataset.versions, device, mode=mode,
                                                                 fraction=fraction)
        self.device = self.store.device
        if kernel not in ("auto", "torch", "numpy"):
            raise UsageError(f"kernel must be auto, torch or numpy, got '{kernel}'")
        self.kernel = ("numpy" if self.device.type == "cpu" else "torch") if kernel == "auto" else kernel
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if self.params is not None:
            self.params = self.params.to(self.device)

    def batch_from_indices(self, idx: dict[str, Any]) -> Batch:
        """The batch that ``idx`` (as in :attr:`last_indices`) describes, built on the device."""
        user, photo = np.asarray(idx["user"], np.int64), np.asarray(idx["photo"], np.int64)
        refs = np.asarray(idx["refs"], np.int64).reshape(len(user), -1)
        flip = np.asarray(idx.get("flip", np.zeros(len(user), bool)), bool)
        ref_flip = np.asarray(idx.get("ref_flip", np.zeros(refs.shape, bool)), bool).reshape(refs.shape)
        b, n = refs.shape
        p_count = self.store.shape[1]
        ref_users = np.repeat(1 + user, n)
        parts_v = [np.zeros(b, np.int64), 1 + user, ref_users]
        parts_p = [photo, photo, refs.reshape(-1)]
        parts_f = [flip, flip, ref_flip.reshape(-1)]
        if self.pairs:
            parts_v.append(np.zeros(b * n, np.int64))
            parts_p.append(refs.reshape(-1))
            parts_f.append(ref_flip.reshape(-1))
        flat = np.concatenate(parts_v) * p_count + np.concatenate(parts_p)
        flips = np.concatenate(parts_f)
        if self.kernel == "numpy":
            images = self.store.images_numpy(flat, flips, self.memory_format == torch.channels_last)
        else:
            rows = self.store.rows(flat)  # one gather for every image of the batch
            f = torch.from_numpy(flips).to(self.device, non_blocking=True) if flips.any() else None
            images = to_float(rows, f, self.memory_format)
        h, w = images.shape[-2:]
        x, target = images[:b], images[b : 2 * b]
        ref_targets = images[2 * b : 2 * b + b * n].view(b, n, 3, h, w)
        ref_inputs = images[2 * b + b * n :].view(b, n, 3, h, w) if self.pairs else None
        users = torch.from_numpy(user).to(self.device, non_blocking=True)
        extras = {"user_params": self.params.index_select(0, users)} if self.params is not None else {}
        return Batch(input=x, target=target, refs=RefSet(targets=ref_targets, inputs=ref_inputs, mask=None, query=x),
                     user=users, photo=torch.from_numpy(photo).to(self.device, non_blocking=True), extras=extras)


def resolve_store_device(store_device: str, device: str) -> str:
    """The store mode for ``--store-device`` on training device ``device``:
    ``cpu`` -> staged (the store stays in host memory), ``cuda`` -> resident on the GPU (refused
    when training on the CPU), ``auto`` -> resident when it fits, else staged."""
    if store_device == "auto":
        return "auto"
    if store_device == "cpu":
        return "staged"
    if store_device.startswith("cuda"):
        if not device.startswith("cuda"):
            raise UsageError(f"--store-device {store_device} needs a CUDA training device (--device cuda), "
                             f"not {device}; use --store-device auto or cpu")
        return "resident"
    raise UsageError(f"--store-device must be auto, cpu or cuda, got '{store_device}'")


def build_sampler(dataset: PieDataset, cfg: dict, *, device: str, pairs: bool) -> DeviceSampler:
    """The run's training sampler for ``cfg`` (``store_device``, ``store_fraction``,
    ``train.channels_last``) on ``device``."""
    mode = resolve_store_device(str(cfg.get("store_device", "auto")), device)
    tr = cfg["train"]
    return DeviceSampler(dataset, batch_users=tr["batch_users"], per_user=tr["per_user"], refs=tr["refs"],
                         pairs=pairs, seed=cfg["seed"], augment=tr.get("augment", True), device=device,
                         mode=mode, fraction=float(cfg.get("store_fraction", DEFAULT_FRACTION)),
                         channels_last=bool(tr.get("channels_last", False)))
