"""Data loading cannot hang and its memory does not grow with N beyond the batch itself.

There are no loader worker processes or threads at all: the run's sampler
(:func:`piebench.data.device_store.build_sampler`) draws indices with one numpy generator
and gathers rows from the dataset's memory-mapped uint8 store in the main process, so there
is no worker to time out, deadlock or die silently; an exception is raised in place, with its
traceback. The research loader that froze or exhausted memory at N >= 6 references decoded
images in workers; here the cost of N references is the batch tensor and nothing else.

Each N is measured in a fresh process: the store's pages are touched first (they are the
dataset, shared and file-backed, the same for every N), then the peak-RSS counter is reset
(``/proc/self/clear_refs``) and 40 batches are drawn. Growth = peak RSS - RSS before.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = r'''
import gc, json, os, sys, threading
import numpy as np, torch
torch.set_num_threads(1)
from piebench.config import resolve
from piebench.build import build_dataset
from piebench.plugins import get_registry
from piebench.data.device_store import build_sampler

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

def children():
    return sum(len(open(f"/proc/self/task/{t}/children").read().split()) for t in os.listdir("/proc/self/task"))

n = int(sys.argv[1])
cfg = resolve("smoke", encoder="center", enhancer="sa", refs=n, sets=["train.threads=1"])
dataset = build_dataset(cfg, get_registry())
versions = dataset.versions
for v in range(versions.shape[0]):  # fault in every page of the store: the same for every N
    int(np.asarray(versions[v]).max())
sampler = build_sampler(dataset, cfg, device="cpu", pairs=False)
for _ in range(3):  # warm-up: staging buffers, allocator pools
    batch = sampler.sample()
threads0 = threading.active_count()
del batch
gc.collect()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to the current RSS
rss = []
for i in range(40):
    batch = sampler.sample()
    if i in (9, 39):
        rss.append(status("VmRSS"))
peak = status("VmHWM")
tensors = [batch.input, batch.target, batch.refs.targets] + ([batch.refs.inputs] if batch.refs.inputs is not None else [])
print(json.dumps({"n": n, "before": before, "peak": peak, "rss_10": rss[0], "rss_40": rss[1],
                  "batch_bytes": sum(t.numel() * t.element_size() for t in tensors),
                  "refs_shape": list(batch.refs.targets.shape), "store_bytes": int(versions.nbytes),
                  "children": children(), "threads_added": threading.active_count() - threads0,
                  "kernel": sampler.kernel, "store_mode": sampler.store.mode}))
'''

MIB = 1 << 20


@pytest.fixture(scope="module")
def measured() -> dict[int, dict]:
    out = {}
    for n in (1, 5, 10, 20):
        res = subprocess.run([sys.executable, "-c", PROBE, str(n)], capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        out[n] = json.loads(res.stdout.strip().splitlines()[-1])
    print("\nsampler peak RSS growth: " + ", ".join(
        f"N={n}: {m['peak'] - m['before']:,} B = {(m['peak'] - m['before']) / MIB:.2f} MiB "
        f"(float batch {m['batch_bytes'] / MIB:.2f} MiB, baseline {m['before'] / MIB:.0f} MiB)"
        for n, m in out.items()) + f"; store {out[1]['store_bytes'] / MIB:.0f} MiB, {out[1]['store_mode']} "
        f"store, {out[1]['kernel']} kernel")
    return out


def test_no_worker_processes_or_threads(measured: dict[int, dict]):
    for m in measured.values():
        assert m["children"] == 0 and m["threads_added"] == 0


def test_batches_hold_n_references(measured: dict[int, dict]):
    for n, m in measured.items():
        assert m["refs_shape"][1] == n


def test_memory_grows_with_n_only_by_the_batch(measured: dict[int, dict]):
    for m in measured.values():
        growth = m["peak"] - m["before"]
        # the float32 batch, its uint8 gather and one conversion temporary, plus allocator slack
        assert growth <= 3 * m["batch_bytes"] + 8 * MIB, m
        assert m["rss_40"] - m["rss_10"] <= 2 * MIB, m  # no growth from batch to batch (no leak)
    extra = (measured[20]["peak"] - measured[20]["before"]) - (measured[1]["peak"] - measured[1]["before"])
    extra_batch = measured[20]["batch_bytes"] - measured[1]["batch_bytes"]
    assert extra <= 3 * extra_batch + 4 * MIB, (extra, extra_batch)
    assert measured[20]["store_bytes"] > 4 * measured[20]["batch_bytes"]  # it never copies the store
