"""Throughput of an enhancer's forward pass: images/s, MP/s, latency, FLOPs, peak memory.

The preference is computed once from random references (the encoder's cost is excluded
unless ``with_encoder``), then for every size the enhancer runs ``warmup`` untimed batches
and ``repeats`` timed ones; latency is per batch (CUDA events + synchronize on GPU,
``perf_counter`` on CPU), images/s and MP/s use the median latency. FLOPs come from
:class:`torch.utils.flop_counter.FlopCounterMode` (one extra forward of batch 1); it counts
matrix products, convolutions and attention only, not element-wise or sampling ops (a LUT's
trilinear lookup), so GFLOPs/MP is a lower bound for such models.

Peak memory: on CUDA ``max_memory_allocated`` minus what was allocated before the timed
batches; on CPU the process's resident-set high-water mark (``VmHWM``) after resetting it
through ``/proc/self/clear_refs`` minus the resident set before (Linux only; elsewhere, or when
the reset is refused, ``None``), measured over the warm-up and timed batches after freed heap
memory is handed back (``malloc_trim``). The CPU figure is the memory the OS had to provide,
allocator caching included, not a tensor count.

Full-resolution step: an enhancer that splits its forward pass into
``state = prepare_full_resolution(x, pref)`` (everything that sees a small copy of the image or
only the preference) and ``apply_full_resolution(x, state)`` (the per-pixel work on the whole
image: star's curves, lut3d's trilinear lookup, csrnet's 1x1 base network, hdrnet's slicing)
gets that step timed on its own, in rounds interleaved with a plain copy of a large array
(``copy_mb``, well beyond the last-level cache) that measures the machine's memory bandwidth in
the same run. The bound is touching each pixel once: reading its input and writing its
output (``2 x 3 x bytes per value``) at that bandwidth; ``full_res_vs_bound`` is the step's
cost per pixel over that bound (1.0 = as fast as memory allows).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

from ._version import __version__
from .errors import UsageError
from .interfaces import BuildContext, Encoder, Enhancer, Preference, RefSet, check_compatible
from .plugins import get_manager
from .registry import partner_order
from .runs import environment, git_commit, now

#: Named sizes as (width, height); 16:9 frames.
SIZES = {"240p": (426, 240), "360p": (640, 360), "480p": (854, 480), "720p": (1280, 720),
         "1080p": (1920, 1080), "1440p": (2560, 1440), "4k": (3840, 2160)}


def parse_sizes(text: str) -> list[tuple[str, int, int]]:
    """``"480p,1080p,320x240"`` -> [(name, height, width), ...] (WIDTHxHEIGHT for custom sizes)."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        key = item.lower()
        if key in SIZES:
            w, h = SIZES[key]
        else:
            m = re.fullmatch(r"(\d+)x(\d+)", key)
            if not m:
                raise UsageError(f"--sizes: unknown size '{item}'; use {', '.join(SIZES)} or WIDTHxHEIGHT "
                                 f"(e.g. 1920x1080)")
            w, h = int(m.group(1)), int(m.group(2))
            if w < 8 or h < 8:
                raise UsageError(f"--sizes: {item} is too small (at least 8x8)")
        out.append((item, h, w))
    if not out:
        raise UsageError("--sizes is empty; e.g. --sizes 480p,1080p")
    return out


@dataclass
class BenchSettings:
    """How to measure: device, precision, layout, compilation, batch, repeats."""

    device: str = "cpu"
    amp: str | None = None  # None, "bf16" or "fp16"
    channels_last: bool = False
    compile: bool = False
    batch: int = 1
    repeats: int = 5
    warmup: int = 1
    with_encoder: bool = False
    ref_size: int | None = None  # references' side; None = 64 for "small", else 256
    refs: int = 3
    flops: bool = True
    seed: int = 0
    threads: int | None = None  # torch.set_num_threads for the measurement (None = leave as is)
    full_resolution: bool = True  # time the full-resolution step against the bandwidth bound
    copy_mb: int = 256  # size of the array copied to measure the memory bandwidth
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse settings that cannot be measured, with one line each."""
        if self.amp not in (None, "bf16", "fp16"):
            raise UsageError(f"--amp {self.amp}: expected bf16 or fp16")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {self.threads}")
        for name in ("batch", "repeats", "refs"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be >= 0, got {self.warmup}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {self.device}: CUDA is not available on this machine; use --device cpu")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise UsageError(f"--device {self.device}: expected cpu or cuda[:N]")


# -- building -----------------------------------------------------------------------------------
def build_for_bench(enhancer: str, encoder: str | None = None, configuration: str = "small",
                    encoder_configuration: str | None = None, refs: int = 3,
                    image_size: int = 64) -> tuple[Encoder | None, Enhancer, str | None, str | None]:
    """Build ``enhancer`` (configuration ``configuration``) and the encoder it is paired with.

    Without ``encoder`` the encoder the enhancer's spec names (``pairs_with``) or its namesake is
    used when it provides what the enhancer consumes, else ``angular``, else the first encoder that fits; an enhancer that
    consumes nothing gets no encoder. The encoder's configuration defaults to the enhancer's
    when the encoder has one of that name, else ``small``.
    """
    registry = get_manager().registry
    enh_spec = registry.get("enhancer", enhancer)
    if configuration not in enh_spec.configurations and enh_spec.configurations:
        raise UsageError(f"enhancer '{enhancer}' has no configuration '{configuration}'; choose one of: "
                         f"{', '.join(enh_spec.configurations)}")
    ctx = BuildContext(num_users=10, num_refs=refs, image_size=image_size)
    needed = set(enh_spec.consumes)  # at most; a configuration may consume less (lut3d paper vs paper-cond)
    if encoder is None and not needed:
        return None, enh_spec.create(ctx, configuration), None, None
    # the encoder its spec names (pairs_with), its namesake, else angular, else the first compatible one
    name = encoder if encoder is not None else next(iter(partner_order(registry, enhancer, (enhancer, "angular"))),
                                                    None)
    if name is None:
        raise UsageError(f"no installed encoder provides {', '.join(sorted(needed))} for enhancer '{enhancer}'")
    enc_spec = registry.get("encoder", name)
    enc_conf = encoder_configuration or (configuration if configuration in enc_spec.configurations else "small")
    enc = enc_spec.create(ctx, enc_conf if enc_spec.configurations else None)
    ctx.encoder = enc
    enh = enh_spec.create(ctx, configuration)
    if encoder is None and not enh.consumes:  # this configuration reads no preference: bench it alone
        return None, enh, None, None
    why = check_compatible(name, enc, enhancer, enh)
    if why:
        raise UsageError(why)
    return enc, enh, name, enc_conf


def random_refs(refs: int, size: int, batch: int = 1, seed: int = 0) -> RefSet:
    """Random reference pairs ``[batch, refs, 3, size, size]`` (inputs too, for pair encoders)."""
    gen = torch.Generator().manual_seed(seed)
    return RefSet(targets=torch.rand(batch, refs, 3, size, size, generator=gen),
                  inputs=torch.rand(batch, refs, 3, size, size, generator=gen),
                  query=torch.rand(batch, 3, size, size, generator=gen))


# -- measuring ----------------------------------------------------------------------------------
def _rss_kb(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"{field_name}:\s+(\d+)\s+kB", text)
    return int(m.group(1)) if m else None


def _release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``) so the RSS peak starts low."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def _reset_cpu_peak() -> bool:
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class _Memory:
    """Peak memory above the starting point of a measured block (see the module docstring)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.method = ("cuda max_memory_allocated" if device.startswith("cuda")
                       else "cpu VmHWM after clear_refs, minus VmRSS before")
        self.peak_mb: float | None = None

    def __enter__(self) -> _Memory:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = _rss_kb("VmRSS") if _reset_cpu_peak() else None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2 ** 20
        elif self._base is not None:
            hwm = _rss_kb("VmHWM")
            self.peak_mb = None if hwm is None else max(0, hwm - self._base) / 1024
        else:
            self.method = "unavailable (no /proc/self/clear_refs)"


def count_flops(fn: Any) -> int | None:
    """FLOPs of ``fn()`` counted by FlopCounterMode (matmul/conv/attention only), or None on failure."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - an op FlopCounterMode cannot trace: report no count
        return None


def quantiles_ms(latencies_s: list[float]) -> dict[str, float]:
    """p50 / p95 / min / max of per-batch latencies in ms (linear quantiles, so p50 <= p95)."""
    a = np.asarray(latencies_s, dtype=float) * 1e3
    p50, p95 = np.quantile(a, [0.5, 0.95])
    return {"p50": float(p50), "p95": float(p95), "min": float(a.min()), "max": float(a.max())}


def _timer(device: str) -> Any:
    if device.startswith("cuda"):
        def timed(fn: Any) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1e3
    else:
        def timed(fn: Any) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
    return timed


def _autocast(device: str, amp: str | None) -> Any:
    if amp is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def full_resolution_cost(enhancer: Any, x: torch.Tensor, pref: Preference, *, rounds: int, copy_mb: int,
                         device: str, amp: str | None = None) -> dict[str, Any] | None:
    """Time ``enhancer.apply_full_resolution`` on ``x`` interleaved with a ``copy_mb`` array copy.

    Returns medians over ``rounds``: the step's ms and ns per pixel, the copy's bandwidth (GB/s,
    bytes read + written), the bound of touching each pixel once at that bandwidth (ns per
    pixel) and their ratio; None for an enhancer without the two-part forward.
    """
    prepare = getattr(enhancer, "prepare_full_resolution", None)
    apply = getattr(enhancer, "apply_full_resolution", None)
    if not (callable(prepare) and callable(apply)):
        return None
    timed = _timer(device)
    n = max(1, copy_mb * 2 ** 20 // 4)
    src = torch.full((n,), 0.5, device=device)
    dst = torch.empty_like(src)
    with torch.no_grad(), _autocast(device, amp):
        state = prepare(x, pref)
        apply(x, state)  # warm-up
        dst.copy_(src)
        t_step, t_copy = [], []
        for _ in range(rounds):
            t_copy.append(timed(lambda: dst.copy_(src)))
            t_step.append(timed(lambda: apply(x, state)))
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    step_s, copy_s = float(np.median(t_step)), float(np.median(t_copy))
    gb_s = 2 * n * 4 / copy_s / 1e9
    bytes_per_px = 2 * 3 * x.element_size()  # read the input pixel, write the output pixel
    bound_ns = bytes_per_px / gb_s
    step_ns = step_s / pixels * 1e9
    return {"full_res_ms": step_s * 1e3, "full_res_ns_per_px": step_ns, "copy_gb_s": gb_s,
            "copy_mb": copy_mb, "bytes_per_px": bytes_per_px, "bound_ns_per_px": bound_ns,
            "full_res_vs_bound": step_ns / bound_ns, "rounds": rounds}


def bench_enhancer(enhancer_name: str, *, encoder_name: str | None = None, configuration: str = "small",
                   encoder_configuration: str | None = None, sizes: list[tuple[str, int, int]],
                   settings: BenchSettings, progress: Any = None) -> dict[str, Any]:
    """Measure ``enhancer_name`` at each size; returns a bench record (see :func:`piebench.benchfiles.write_bench_record`)."""
    settings.check()
    device = settings.device
    if settings.threads:
        torch.set_num_threads(settings.threads)
    ref_size = settings.ref_size or (64 if configuration == "small" else 256)
    torch.manual_seed(settings.seed)
    encoder, enhancer, enc_name, enc_conf = build_for_bench(enhancer_name, encoder_name, configuration,
                                                  encoder_configuration, settings.refs, ref_size)
    enhancer.eval().to(device)
    if encoder is not None:
        encoder.eval().to(device)
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    if settings.channels_last:
        enhancer.to(memory_format=torch.channels_last)
    refs = random_refs(settings.refs, ref_size, 1, settings.seed).to(device)
    with torch.no_grad(), _autocast(device, settings.amp):
        pref1 = encoder(refs) if encoder is not None else Preference(vector=torch.zeros(1, 1, device=device))
    pref = pref1.take([0] * settings.batch).to(device)
    refs_b = refs.take(torch.zeros(settings.batch, dtype=torch.long))
    forward = torch.compile(enhancer) if settings.compile else enhancer
    params = {"enhancer": sum(p.numel() for p in enhancer.parameters()),
              "encoder": sum(p.numel() for p in encoder.parameters()) if encoder is not None else 0}
    timed = _timer(device)
    results = []
    for label, h, w in sizes:
        gen = torch.Generator().manual_seed(settings.seed + h * 7919 + w)
        x = torch.rand(settings.batch, 3, h, w, generator=gen).to(device).contiguous(memory_format=fmt)

        def step(x: torch.Tensor = x) -> torch.Tensor:
            with torch.no_grad(), _autocast(device, settings.amp):
                p = encoder(refs_b) if settings.with_encoder and encoder is not None else pref
                return forward(x, p)

        if progress:
            progress(f"{enhancer_name} {label} ({w}x{h}): warm-up")
        lat = []
        with _Memory(device) as mem:  # warm-up inside: it is where the memory is first allocated
            for _ in range(settings.warmup):
                step()
            for _ in range(settings.repeats):
                lat.append(timed(step))
        q = quantiles_ms(lat)
        median_s = float(np.median(lat))
        mp = h * w / 1e6
        flops = None
        if settings.flops:
            x1 = x[:1]
            flops = count_flops(lambda x1=x1: enhancer(x1, pref.take([0])))
        full = None
        if settings.full_resolution:
            if progress:
                progress(f"{enhancer_name} {label}: full-resolution step vs a {settings.copy_mb} MB copy")
            _release_free_memory()
            full = full_resolution_cost(enhancer, x, pref, rounds=settings.repeats, copy_mb=settings.copy_mb,
                                        device=device, amp=settings.amp)
        results.append({
            "full_resolution": full,
            "size": label, "height": h, "width": w, "megapixels": mp, "batch": settings.batch,
            "images_per_s": settings.batch / median_s, "mp_per_s": settings.batch * mp / median_s,
            "latency_ms": q, "median_ms": median_s * 1e3, "repeats": settings.repeats,
            "gflops_per_mp": None if flops is None else flops / 1e9 / mp,
            "peak_memory_mb": None if mem.peak_mb is None else round(mem.peak_mb, 2),
            "memory_method": mem.method,
        })
        del x
    base = results[0]["mp_per_s"]
    for r in results:
        r["mp_per_s_vs_first"] = r["mp_per_s"] / base if base > 0 else math.nan
    return _record(enhancer_name, configuration, enc_name, enc_conf, enhancer, settings, params, results,
                   ref_size)


def _record(enhancer_name: str, configuration: str, enc_name: str | None, enc_conf: str | None, enhancer: Any,
            settings: BenchSettings, params: dict, results: list[dict], ref_size: int) -> dict[str, Any]:
    return {
        "kind": "bench", "schema_version": 1, "piebench_version": __version__, "created": now(),
        "git_commit": git_commit(), "environment": environment(settings.device),
        "enhancer": {"name": enhancer_name, "configuration": configuration,
                     "consumes": sorted(getattr(enhancer, "consumes", ()))},
        "encoder": None if enc_name is None else {"name": enc_name, "configuration": enc_conf,
                                                   "included_in_timing": settings.with_encoder},
        "settings": {"device": settings.device, "amp": settings.amp, "channels_last": settings.channels_last,
                     "compile": settings.compile, "batch": settings.batch, "repeats": settings.repeats,
                     "warmup": settings.warmup, "with_encoder": settings.with_encoder, "refs": settings.refs,
                     "full_resolution": settings.full_resolution, "copy_mb": settings.copy_mb,
                     "ref_size": ref_size, "threads": torch.get_num_threads()},
        "parameters": params,
        "results": results,
    }


def _ms(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.3g}"


def bench_table(record: dict[str, Any]) -> str:
    """The table ``piebench bench`` prints (one row per size)."""
    rows = []
    for r in record["results"]:
        rows.append({
            "size": f"{r['size']} ({r['width']}x{r['height']})", "images/s": f"{r['images_per_s']:.2f}",
            "MP/s": f"{r['mp_per_s']:.2f}", "vs first": f"{r['mp_per_s_vs_first']:.2f}x",
            "p50 ms": _ms(r["latency_ms"]["p50"]), "p95 ms": _ms(r["latency_ms"]["p95"]),
            "GFLOPs/MP": "–" if r["gflops_per_mp"] is None else f"{r['gflops_per_mp']:.2f}",
            "peak MB": "–" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}",
        })
        full = r.get("full_resolution")
        if full:
            rows[-1].update({"full-res ns/px": f"{full['full_res_ns_per_px']:.2f}",
                             "bound ns/px": f"{full['bound_ns_per_px']:.2f} ({full['copy_gb_s']:.1f} GB/s)",
                             "x bound": f"{full['full_res_vs_bound']:.1f}x"})
    s, enh, enc = record["settings"], record["enhancer"], record["encoder"]
    head = (f"{enh['name']} ({enh['configuration']}) on {s['device']}, {s['threads']} threads, batch {s['batch']}, "
            f"median of {s['repeats']} after {s['warmup']} warm-up; amp {s['amp'] or 'off'}, channels_last "
            f"{'on' if s['channels_last'] else 'off'}, compile {'on' if s['compile'] else 'off'}")
    p = record["parameters"]
    tail = f"parameters: enhancer {p['enhancer']:,}"
    if any(r.get("full_resolution") for r in record["results"]):
        tail = ("full-res: the per-pixel step alone; bound: reading and writing each pixel once at the bandwidth "
                "of a large copy measured in the same run (interleaved)\n" + tail)
    if enc:
        tail += (f", encoder '{enc['name']}' {p['encoder']:,} "
                 f"({'included in' if enc['included_in_timing'] else 'excluded from'} the timing)")
    return "\n".join([head, tabulate(rows, headers="keys", tablefmt="github"), tail])
