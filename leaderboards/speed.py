"""Regenerate leaderboards/speed.md from the committed records in leaderboards/records/speed/.

    python leaderboards/speed.py            # rewrite speed.md
    python leaderboards/speed.py --check    # exit 1 if speed.md differs from what the records give

Records (each table names the command that writes them):
  records/speed/official-star-*.json          tools/star_official.py (star vs the official code)
  records/speed/star-curves-benchmark.json     pytest-benchmark JSON of tests/bench/test_bench_star_curves.py
  records/speed/bench/<enhancer>-*.json         piebench bench (full-resolution step vs bandwidth)
  records/speed/bench/sampler-*.json            piebench bench --sampler
The newest record of each kind (and of each enhancer) is used. Kept apart from regenerate.py
(smoke and CPU throughput tables) so that each file has one owner.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "records" / "speed"


def _newest(paths: list[Path]) -> dict[str, Any] | None:
    recs = []
    for p in paths:
        try:
            recs.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return max(recs, key=lambda r: r.get("created", r.get("datetime", ""))) if recs else None


def _env_line(env: dict[str, Any]) -> str:
    return f"torch {env.get('torch')}, Python {env.get('python')}, CPU ({env.get('cpu', '')})"


def official_section(records: Path) -> str | None:
    rec = _newest(sorted(records.glob("official-star-*.json")))
    if rec is None:
        return None
    from tabulate import tabulate

    rows = []
    for r in rec["results"]:
        mp, mem = r["mp_per_s"], r["peak_memory_mb"]
        rows.append({"size": f"{r['size']} ({r['width']}x{r['height']})", "star MP/s": f"{mp['piebench']:.1f}",
                     "official MP/s": f"{mp['official']:.1f}", "star / official": f"**{r['ratio']:.2f}x**",
                     "star peak MB": f"{mem['piebench']:.0f}", "official peak MB": f"{mem['official']:.0f}",
                     "max abs diff": f"{r['max_abs_diff']:.1e}" if r["max_abs_diff"] else "0 (bit-equal)"})
    return f"""## star against the official StarEnhancer code (CPU, one thread)

Same weights, style codes and image; piebench's `star` and the official `Mapping` +
`SlimEnhancer` alternate for {rec['rounds']} rounds (medians); peak memory is the resident-set
high-water mark of one forward pass in a fresh process.

{tabulate(rows, headers="keys", tablefmt="github")}

Official code: IDKiro/StarEnhancer at commit `{rec['official_commit']}`; piebench commit
`{str(rec['git_commit'])[:12]}`; {rec['threads']} torch thread; {_env_line(rec['environment'])}. Command:

    git clone https://github.com/IDKiro/StarEnhancer /tmp/StarEnhancer
    python tools/star_official.py --official /tmp/StarEnhancer --out leaderboards/records/speed
    python leaderboards/speed.py
"""


def curves_section(records: Path) -> str | None:
    path = records / "star-curves-benchmark.json"
    if not path.exists():
        return None
    from tabulate import tabulate

    data = json.loads(path.read_text())
    rows = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "ratio_star_vs_official" not in info:
            continue
        what, size = b["param"].split("-")
        rows.append({"step": what, "size": size, "star MP/s": f"{info['star_mp_per_s']:.1f}",
                     "official gather MP/s": f"{info['official_mp_per_s']:.1f}",
                     "star / official": f"**{info['ratio_star_vs_official']:.2f}x**"})
    return f"""## star's curve step against the official gather-based step (pytest-benchmark)

`official_gather_step` re-derives the official lookup (the input repeated to 9 channels, one
`gather` on the `[B, 9, 256]` curves, summed over the input channel); star's chunked lookup
gives the same bits. Interleaved rounds on one thread, medians; "end to end" adds the
mapping network and the curve CNN on the 224 px pooled copy (the same for both).

{tabulate(rows, headers="keys", tablefmt="github")}

Machine: {data.get('machine_info', {}).get('cpu', {}).get('brand_raw', '?')}; command:

    pytest tests/bench/test_bench_star_curves.py -m bench --benchmark-enable -n 0 -k interleaved \\
      --benchmark-json leaderboards/records/speed/star-curves-benchmark.json
    python leaderboards/speed.py
"""


def inference_section(records: Path) -> str | None:
    from tabulate import tabulate

    from piebench.benchfiles import iter_bench_records

    latest: dict[str, dict] = {}
    for rec in iter_bench_records(records):
        latest[rec["enhancer"]["name"]] = rec
    if not latest:
        return None
    rows, env, settings = [], {}, {}
    for name, rec in sorted(latest.items()):
        env, settings = rec.get("environment", {}), rec["settings"]
        for r in rec["results"]:
            full = r.get("full_resolution") or {}
            rows.append({
                "enhancer": f"{name} ({rec['enhancer']['configuration']})", "size": r["size"],
                "MP/s": f"{r['mp_per_s']:.2f}", "p50 ms": f"{r['latency_ms']['p50']:.0f}",
                "peak MB": "–" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}",
                "full-res ms": f"{full['full_res_ms']:.0f}" if full else "–",
                "full-res ns/px": f"{full['full_res_ns_per_px']:.1f}" if full else "–",
                "bound ns/px (copy GB/s)": (f"{full['bound_ns_per_px']:.2f} ({full['copy_gb_s']:.1f})"
                                            if full else "–"),
                "x bound": f"{full['full_res_vs_bound']:.0f}x" if full else "–"})
    how = (f"Median of {settings.get('repeats')} forward passes after {settings.get('warmup')} warm-up, "
           f"batch {settings.get('batch')}, float32, one enhancer after another.")
    copy = f"a {settings.get('copy_mb')} MB array copy"
    return f"""## Inference at 1080p and 4K: the full-resolution step against memory bandwidth (CPU, one thread)

{how}
*full-res* is the per-pixel step alone (star's curves, lut3d's trilinear lookup, hdrnet's
guide + slicing + affine apply, csrnet's 1x1 base network), timed in rounds interleaved with
{copy} that measures the memory bandwidth in the same run; the *bound* is reading and
writing each pixel once (24 bytes in float32) at that bandwidth, and *x bound* is how far the
step is from it.

{tabulate(rows, headers="keys", tablefmt="github")}

{_env_line(env)}; each enhancer measured by

    piebench bench --enhancer E --configuration paper --sizes 1080p,4k --threads 1 --repeats 3 \\
      --runs-dir leaderboards/records/speed
    python leaderboards/speed.py
"""


def loader_section(records: Path) -> str | None:
    rec = _newest(sorted((records / "bench").glob("sampler-*.json")))
    if rec is None:
        return None
    from piebench.loader_bench import loader_table

    lines = loader_table(rec).splitlines()  # a caption line, the table, a targets line
    table = "\n".join(line for line in lines if line.startswith("|"))
    caption = " ".join(line for line in lines[:1] if not line.startswith("|"))
    after = " ".join(line for line in lines[1:] if not line.startswith("|"))
    return f"""## Loader: can the sampler keep up with training?

Per protocol (its resolution and batch) and N references: median sampler batch, the median
copy of the same uint8 (and float32) bytes gathered from the store, and the median training
step of `sa` + `angular` (`small`) on a batch of that shape. {rec['settings']['threads']} torch
thread(s); {_env_line(rec.get('environment', {}))}.

{caption}.

{table}

{after[:1].upper() + after[1:]}.

Command:

    piebench bench --sampler --threads 1 --runs-dir leaderboards/records/speed
    python leaderboards/speed.py

The same comparison as a pytest-benchmark suite:
`pytest tests/bench/test_loader.py -m bench --benchmark-enable -n 0`.
"""


STATIC_TAIL = """## The quick leaderboard

Not run: no GPU has run this code yet. `tools/gpu_check.sh` is the one-command check to run
on one GPU (training steps/s with bf16 + resident store + channels-last, 4K inference in
float32 and bf16, bf16 agreement); its report goes to `leaderboards/gpu.md` when it has run.

## Multi-process training

`torchrun --nproc-per-node 2 -m piebench run ...` (gloo on the CPU; nccl and `cuda:LOCAL_RANK`
on GPUs). `tests/integration/test_ddp.py` spawns two gloo processes that train the angular
encoder (with BatchNorm) and `sa` on the joint schedule for three steps and checks their
parameters, BatchNorm statistics and logged losses against a one-process run with the same
global batch; a slow test runs `torchrun` end to end.
"""


def render_speed(records: Path = RECORDS) -> str:
    """speed.md from the records under ``records`` (sections without records are left out)."""
    parts = ["""# Speed: inference against the official code and the memory bound, loader, multi-process

Generated by `python leaderboards/speed.py` from the records in `leaderboards/records/speed/`;
every table names the command that measured it. CPU figures from a 2-core machine shared
with other jobs: compare rows of one table (measured in one run), not across tables.
"""]
    for section in (official_section, curves_section, inference_section, loader_section):
        text = section(records)
        if text:
            parts.append(text)
    parts.append(STATIC_TAIL)
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    text, path = render_speed(), HERE / "speed.md"
    if "--check" in argv:
        if not path.exists() or path.read_text() != text:
            print("out of date: speed.md (python leaderboards/speed.py)")
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
