"""``piebench bench --sampler``: can the image store keep up with training?

For each protocol (its resolution and batch: ``batch_users x per_user`` samples) and each
number of references N it times, as medians over ``repeats`` after ``warmup``:

* ``sampler``: one :class:`~piebench.data.device_store.DeviceSampler` batch (index draws,
  gather, flips, uint8 -> float32) on the device, as training gets it; ``index_draws`` is the
  numpy part that picks the indices (Python, per sample), ``pixels`` the rest;
* ``memcpy``: a raw copy of the same uint8 bytes (``np.copyto`` of a buffer gathered from the
  store; ``Tensor.copy_`` on CUDA): the physical limit of moving those pixels;
* ``memcpy_f32``: a raw copy of the float32 batch's bytes (4x the uint8 ones), the least a
  sampler that writes float32 batches must pay;
* ``train_step``: one training step of the ``sa`` enhancer with the ``angular`` encoder
  (``small``; forward, l1, backward, Adam) on a fixed batch of that shape, in the protocol's
  enhancer stage.

Reported ratios: ``step_over_sampler`` (target >= 20 at N = 5) and ``sampler_over_memcpy``
(target <= 3). The store is the protocol's dataset with fewer crops per scene
(``store_crops``) so that it builds in seconds; the sampler's cost per batch does not depend on
how many photos the store holds once it outgrows the CPU caches.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

from . import config as C
from ._version import __version__
from .bench import _timer
from .build import Components, build_dataset, build_losses, build_models, plan_stages
from .data.device_store import DeviceSampler
from .errors import UsageError
from .plugins import get_registry
from .runs import atomic_write_json, environment, git_commit, now
from .train import Trainer


@dataclass
class LoaderSettings:
    """What to measure: protocols, reference counts, device, store mode, repetitions."""

    protocols: tuple[str, ...] = ("smoke", "quick")
    refs: tuple[int, ...] = (1, 5, 10)
    device: str = "cpu"
    store_mode: str = "auto"  # auto / resident / staged
    kernel: str = "auto"  # auto / torch / numpy
    store_crops: int | None = 8  # crops per scene of the benchmark store (None = the protocol's)
    repeats: int = 20
    warmup: int = 3
    train_repeats: int = 3
    train: bool = True
    threads: int | None = None
    seed: int = 0
    encoder: str = "angular"
    enhancer: str = "sa"
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse settings that cannot be measured, one line each."""
        if not self.protocols:
            raise UsageError("--protocols is empty; e.g. --protocols smoke,quick")
        if not self.refs or min(self.refs) < 1:
            raise UsageError(f"--refs needs numbers >= 1 (e.g. 1,5,10), got {list(self.refs)}")
        for name in ("repeats", "train_repeats"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be >= 0, got {self.warmup}")
        if self.store_crops is not None and self.store_crops < 1:
            raise UsageError(f"--store-crops must be at least 1, got {self.store_crops}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {self.device}: CUDA is not available on this machine; use --device cpu")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise UsageError(f"--device {self.device}: expected cpu or cuda[:N]")


def _median_s(fn: Any, device: str, repeats: int, warmup: int) -> float:
    timed = _timer(device)
    for _ in range(warmup):
        fn()
    return float(np.median([timed(fn) for _ in range(repeats)]))


class FixedBatch:
    """A sampler stand-in that serves one batch forever (the train step is timed without sampling)."""

    def __init__(self, batch: Any, inner: Any) -> None:
        self.batch, self.inner = batch, inner

    def sample(self) -> Any:
        return self.batch

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


def _config(protocol: str, settings: LoaderSettings, refs: int) -> dict[str, Any]:
    cfg = C.resolve(protocol, encoder=settings.encoder, enhancer=settings.enhancer, refs=refs,
                    seed=settings.seed, device=settings.device)
    if settings.store_crops is not None and "crops_per_scene" in cfg["eval"].get("data", {}):
        cfg["eval"]["data"]["crops_per_scene"] = min(int(cfg["eval"]["data"]["crops_per_scene"]),
                                                     settings.store_crops)
    return cfg


def time_train_step(cfg: dict[str, Any], dataset: Any, batch: Any, sampler: Any, settings: LoaderSettings
                    ) -> tuple[float, str]:
    """Median seconds of one training step in the last stage that trains the enhancer, on ``batch``."""
    registry = get_registry()
    torch.manual_seed(settings.seed)
    encoder, enhancer = build_models(cfg, registry, dataset)
    stages, _ = plan_stages(cfg, encoder, enhancer)
    losses = build_losses(stages, registry, dataset, encoder, cfg["train"]["refs"])
    for module in (encoder, enhancer, *losses.values()):
        module.to(settings.device)
    comps = Components(dataset=dataset, encoder=encoder, enhancer=enhancer, losses=losses, stages=stages)
    idx = max(i for i, s in enumerate(stages) if "enhancer" in s["train"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(comps, FixedBatch(batch, sampler), cfg, Path(tmp), device=settings.device,
                          log_path=Path(tmp) / "log.jsonl", progress=False)
        trainer._make_optimizer(idx)
        trainer._set_modes(stages[idx])
        seconds = _median_s(lambda: trainer.train_step(stages[idx]), settings.device, settings.train_repeats, 1)
    return seconds, stages[idx]["name"]


def _memcpy(nbytes: int, dataset: Any, device: str, dtype: Any = np.uint8) -> tuple[Any, Any]:
    """A (source, destination) pair of ``nbytes`` bytes: source rows gathered from the store."""
    rows = dataset.versions.reshape(-1, int(np.prod(dataset.versions.shape[2:])))
    n = -(-nbytes // rows.shape[1])
    pick = np.random.default_rng(0).choice(rows.shape[0], size=n, replace=n > rows.shape[0])
    src = np.ascontiguousarray(rows[np.sort(pick)]).reshape(-1)[:nbytes]
    if dtype != np.uint8:
        src = src[: nbytes // 4 * 4].view(np.float32).copy()
    if device.startswith("cuda"):
        t = torch.from_numpy(src).to(device)
        return t, torch.empty_like(t)
    return src, np.empty_like(src)


def time_memcpy(nbytes: int, dataset: Any, settings: LoaderSettings, dtype: Any = np.uint8) -> float:
    """Median seconds of a raw copy of ``nbytes`` bytes gathered from the store (on the device)."""
    src, dst = _memcpy(nbytes, dataset, settings.device, dtype)
    if settings.device.startswith("cuda"):
        return _median_s(lambda: dst.copy_(src), settings.device, settings.repeats, settings.warmup)
    return _median_s(lambda: np.copyto(dst, src), settings.device, settings.repeats, settings.warmup)


def bench_sampler(settings: LoaderSettings, progress: Any = None) -> dict[str, Any]:
    """Measure the sampler against the memory-copy limit and the training step; returns a record."""
    settings.check()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    registry = get_registry()
    results = []
    for protocol in settings.protocols:
        base = _config(protocol, settings, settings.refs[0])
        if progress:
            progress(f"{protocol}: building the store ({base['eval']['data']})")
        dataset = build_dataset(base, registry)
        h, w = dataset.resolution
        for n in settings.refs:
            cfg = _config(protocol, settings, n)
            tr = cfg["train"]
            sampler = DeviceSampler(dataset, batch_users=tr["batch_users"], per_user=tr["per_user"], refs=n,
                                    seed=settings.seed, device=settings.device, mode=settings.store_mode,
                                    kernel=settings.kernel)
            b = sampler.batch_size
            images = b * (2 + n)
            nbytes = images * h * w * 3
            if progress:
                progress(f"{protocol} N={n}: sampler ({sampler.store.mode}, {sampler.kernel}), {b} samples x "
                         f"{2 + n} images of {w}x{h}")
            sample_s = _median_s(sampler.sample, settings.device, settings.repeats, settings.warmup)
            draws_s = _median_s(sampler.indices, "cpu", settings.repeats, settings.warmup)  # numpy index draws
            memcpy_s = time_memcpy(nbytes, dataset, settings)
            memcpy32_s = time_memcpy(4 * nbytes, dataset, settings, np.float32)
            row = {"protocol": protocol, "resolution": [h, w], "refs": n, "batch": b, "images": images,
                   "batch_mb_uint8": nbytes / 2**20, "store": sampler.store.mode, "kernel": sampler.kernel,
                   "sampler_ms": sample_s * 1e3, "sampler_batches_per_s": 1 / sample_s,
                   "index_draws_ms": draws_s * 1e3, "pixels_ms": max(0.0, sample_s - draws_s) * 1e3,
                   "memcpy_ms": memcpy_s * 1e3, "memcpy_gb_per_s": nbytes / memcpy_s / 1e9,
                   "memcpy_f32_ms": memcpy32_s * 1e3, "sampler_over_memcpy": sample_s / memcpy_s,
                   "sampler_over_memcpy_f32": sample_s / memcpy32_s}
            if settings.train:
                if progress:
                    progress(f"{protocol} N={n}: training step of {settings.enhancer} + {settings.encoder}")
                batch = sampler.sample()
                step_s, stage = time_train_step(cfg, dataset, batch, sampler, settings)
                row.update({"train_step_ms": step_s * 1e3, "train_stage": stage,
                            "step_over_sampler": step_s / sample_s})
            results.append(row)
    return _record(settings, results)


def _record(settings: LoaderSettings, results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "loader-bench", "schema_version": 1, "piebench_version": __version__, "created": now(),
            "git_commit": git_commit(), "environment": environment(settings.device),
            "settings": {"protocols": list(settings.protocols), "refs": list(settings.refs),
                         "device": settings.device, "store_mode": settings.store_mode, "kernel": settings.kernel,
                         "store_crops": settings.store_crops, "repeats": settings.repeats,
                         "warmup": settings.warmup, "train_repeats": settings.train_repeats,
                         "threads": torch.get_num_threads(), "encoder": settings.encoder,
                         "enhancer": settings.enhancer},
            "targets": {"step_over_sampler_at_5_refs": ">= 20", "sampler_over_memcpy": "<= 3"},
            "results": results}


def loader_table(record: dict[str, Any]) -> str:
    """The table ``piebench bench --sampler`` prints (one row per protocol and N)."""
    rows = []
    for r in record["results"]:
        row = {"protocol": f"{r['protocol']} ({r['resolution'][1]}px, B={r['batch']})", "N": r["refs"],
               "batch MB (u8)": f"{r['batch_mb_uint8']:.2f}", "sampler ms": f"{r['sampler_ms']:.2f}",
               "batches/s": f"{r['sampler_batches_per_s']:.0f}", "draws ms": f"{r['index_draws_ms']:.2f}",
               "memcpy ms": f"{r['memcpy_ms']:.3f}",
               "sampler/memcpy": f"{r['sampler_over_memcpy']:.1f}x",
               "sampler/memcpy f32": f"{r['sampler_over_memcpy_f32']:.1f}x"}
        if "train_step_ms" in r:
            row["train step ms"] = f"{r['train_step_ms']:.0f}"
            row["step/sampler"] = f"{r['step_over_sampler']:.0f}x"
        rows.append(row)
    s = record["settings"]
    head = (f"sampler on {s['device']} (store {record['results'][0]['store'] if record['results'] else '?'}, "
            f"kernel {record['results'][0]['kernel'] if record['results'] else '?'}), {s['threads']} threads, "
            f"median of {s['repeats']} batches; train step: {s['enhancer']} + {s['encoder']} (small), median of "
            f"{s['train_repeats']}")
    tail = "targets: step/sampler >= 20x at N = 5; sampler/memcpy <= 3x (memcpy = the same uint8 bytes)"
    return "\n".join([head, tabulate(rows, headers="keys", tablefmt="github"), tail])


def write_loader_record(record: dict[str, Any], runs_dir: str | Path = "runs") -> Path:
    """Write ``record`` atomically to ``<runs>/bench/sampler-<device>-<stamp>.json``."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dev = record["settings"]["device"].replace(":", "")
    path = Path(runs_dir) / "bench" / f"sampler-{dev}-{stamp}-{os.getpid()}.json"
    atomic_write_json(path, record)
    return path
