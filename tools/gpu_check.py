"""One-command GPU check: training speed, 4K inference speed and bf16 agreement on one GPU.

    tools/gpu_check.sh [--out DIR]     # on a machine with one CUDA GPU, under 8 minutes
    tools/gpu_check.sh --dry-run       # the same code on the CPU with tiny sizes (seconds)

1. Training: two pairs on the ``quick`` protocol with bf16 autocast, the device-resident image
   store and channels-last (``angular + sa`` with ``torch.compile``, ``star + star`` without),
   a few hundred steps each: steps/s (median step after a warm-up), and the sampler's time per
   batch measured on its own against the median training step.
2. Inference: star, lut3d and csrnet (``paper`` configurations) at 4K, float32 and bf16:
   images/s, latency p50/p95, peak memory (``piebench bench``'s measurement), and the cost of the
   full-resolution step against the device's copy bandwidth.
3. Agreement: for each of the three, the bf16 output against the float32 output on the same
   4K image and preference (before clipping to [0, 1]): PSNR between them must exceed 40 dB.

Writes ``DIR/gpu_check.md`` and ``DIR/gpu_check.json`` (default DIR: ``gpu-check``); exits 1
when a check fails, 2 on bad usage (no CUDA device without ``--dry-run``, an existing report).
``--dry-run``: protocol ``smoke`` at 64 px for 4 steps, 64 x 48 images and the ``small``
configurations, on the CPU; compile is
not exercised there (the report says so), everything else runs as on the GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

import torch

BUDGET_S = 8 * 60
PAIRS = [("angular", "sa", True), ("star", "star", False)]  # (encoder, enhancer, compile)
ENHANCERS = ["star", "lut3d", "csrnet"]
PSNR_MIN_DB = 40.0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _train(pair: tuple[str, str, bool], plan: dict[str, Any], runs: pathlib.Path) -> dict[str, Any]:
    """Train one pair; steps/s from the run's step log, the sampler timed on its own."""
    from piebench.build import build_dataset
    from piebench.config import resolve
    from piebench.data.device_store import build_sampler
    from piebench.plugins import get_registry
    from piebench.runner import run_experiment

    encoder, enhancer, compiled = pair
    compiled = compiled and plan["compile"]
    cfg = resolve(plan["protocol"], encoder=encoder, enhancer=enhancer, steps=plan["steps"], device=plan["device"],
                  amp="bf16", channels_last=True, compile=compiled, store_device=plan["store_device"],
                  sets=[f"eval.max_photos={plan['eval_photos']}", "eval.draws=1"])
    t0 = time.perf_counter()
    run_dir, record = run_experiment(cfg, runs, progress=False)
    wall = time.perf_counter() - t0
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
    warm = plan["warmup_steps"]
    steady = [e["time_s"] for e in log[warm:]] or [e["time_s"] for e in log]
    step_s = statistics.median(steady)
    registry = get_registry()
    sampler = build_sampler(build_dataset(cfg, registry), cfg, device=plan["device"],
                            pairs="inputs" in registry.get("encoder", encoder).meta.get("requires", ()))
    times = []
    for i in range(plan["sampler_batches"] + 2):
        _sync(plan["device"])
        t = time.perf_counter()
        batch = sampler.sample().to(plan["device"])
        _sync(plan["device"])
        if i >= 2:
            times.append(time.perf_counter() - t)
    del batch
    sampler_s = statistics.median(times)
    return {"pair": f"{encoder}+{enhancer}", "compile": compiled, "amp": "bf16", "channels_last": True,
            "store": record.get("speed", {}).get("store"), "steps": len(log), "first_step_s": log[0]["time_s"],
            "step_ms_p50": step_s * 1e3, "steps_per_s": 1 / step_s, "sampler_ms_p50": sampler_s * 1e3,
            "sampler_vs_step": sampler_s / step_s, "run_wall_s": wall, "status": record.get("status"),
            "run_dir": str(run_dir)}


def _bench(name: str, amp: str | None, plan: dict[str, Any]) -> dict[str, Any]:
    from piebench.bench import BenchSettings, bench_enhancer

    settings = BenchSettings(device=plan["device"], amp=amp, repeats=plan["repeats"], warmup=plan["warmup"],
                             flops=False, copy_mb=plan["copy_mb"])
    rec = bench_enhancer(name, configuration=plan["configuration"], sizes=[plan["size"]], settings=settings)
    r = rec["results"][0]
    full = r.get("full_resolution") or {}
    return {"enhancer": name, "amp": amp or "fp32", "size": f"{r['width']}x{r['height']}",
            "images_per_s": r["images_per_s"], "mp_per_s": r["mp_per_s"], "p50_ms": r["latency_ms"]["p50"],
            "p95_ms": r["latency_ms"]["p95"], "peak_memory_mb": r["peak_memory_mb"],
            "full_res_ns_per_px": full.get("full_res_ns_per_px"), "full_res_vs_bound": full.get("full_res_vs_bound"),
            "copy_gb_s": full.get("copy_gb_s")}


def _agreement(name: str, plan: dict[str, Any]) -> dict[str, Any]:
    from piebench.bench import build_for_bench, random_refs

    device = plan["device"]
    torch.manual_seed(0)
    encoder, enhancer, _, _ = build_for_bench(name, configuration=plan["configuration"], image_size=256)
    enhancer.eval().to(device)
    _, h, w = plan["size"]
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        refs = random_refs(3, 256 if plan["configuration"] == "paper" else 64).to(device)
        pref = encoder.eval().to(device)(refs) if encoder is not None else None
        y32 = enhancer(x, pref).float()  # before any clipping: random weights may leave [0, 1]
        with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16):
            y16 = enhancer(x, pref).float()
    mse = float(torch.mean((y32 - y16) ** 2))
    psnr = math.inf if mse == 0 else 10 * math.log10(1 / mse)
    return {"enhancer": name, "size": f"{w}x{h}", "psnr_db": psnr, "max_abs_diff": float((y32 - y16).abs().max()),
            "pass": psnr > PSNR_MIN_DB}


def _plan(dry_run: bool, steps: int | None) -> dict[str, Any]:
    if dry_run:
        return {"mode": "dry-run", "device": "cpu", "protocol": "smoke", "steps": steps or 4, "warmup_steps": 1,
                "store_device": "auto", "compile": False, "eval_photos": 2, "sampler_batches": 5,
                "size": ("64x48", 48, 64), "repeats": 2, "warmup": 1, "copy_mb": 4, "configuration": "small"}
    return {"mode": "gpu", "device": "cuda", "protocol": "quick", "steps": steps or 300, "warmup_steps": 20,
            "store_device": "cuda", "compile": True, "eval_photos": 8, "sampler_batches": 50,
            "size": ("4k", 2160, 3840), "repeats": 20, "warmup": 3, "copy_mb": 1024, "configuration": "paper"}


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}" if math.isfinite(v) else "inf"
    return str(v)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: environment, the three tables, the verdicts and the notes."""
    env = report["environment"]
    lines = [f"# GPU check ({report['mode']})", "",
             f"{env['device_name']}; torch {env['torch']}, CUDA {env['cuda']}; piebench commit {env['commit']}; "
             f"{report['elapsed_s']:.0f} s in all (budget {BUDGET_S} s).", "",
             f"## Training ({report['plan']['protocol']}, bf16, channels-last, store on the device when it fits)", "",
             "| pair | compile | store | steps | first step s | step ms p50 | steps/s | sampler ms p50 | "
             "sampler / step |", "|---|---|---|---|---|---|---|---|---|"]
    for t in report["train"]:
        lines.append(f"| {t['pair']} | {'yes' if t['compile'] else 'no'} | {t['store']} | {t['steps']} | "
                     f"{_fmt(t['first_step_s'])} | {_fmt(t['step_ms_p50'], 1)} | {_fmt(t['steps_per_s'])} | "
                     f"{_fmt(t['sampler_ms_p50'], 2)} | {_fmt(t['sampler_vs_step'], 3)} |")
    lines += ["", f"## Inference ({report['plan']['size'][0]}, {report['plan']['configuration']} configurations, "
              "batch 1)", "",
              "| enhancer | precision | images/s | MP/s | p50 ms | p95 ms | peak MB | full-res ns/px | x copy bound |",
              "|---|---|---|---|---|---|---|---|---|"]
    for b in report["bench"]:
        lines.append(f"| {b['enhancer']} | {b['amp']} | {_fmt(b['images_per_s'])} | {_fmt(b['mp_per_s'], 1)} | "
                     f"{_fmt(b['p50_ms'], 1)} | {_fmt(b['p95_ms'], 1)} | {_fmt(b['peak_memory_mb'], 0)} | "
                     f"{_fmt(b['full_res_ns_per_px'], 3)} | {_fmt(b['full_res_vs_bound'], 1)} |")
    lines += ["", f"## bf16 against float32 (PSNR between the outputs must exceed {PSNR_MIN_DB:.0f} dB)", "",
              "| enhancer | size | PSNR dB | max abs diff | verdict |", "|---|---|---|---|---|"]
    for a in report["agreement"]:
        lines.append(f"| {a['enhancer']} | {a['size']} | {_fmt(a['psnr_db'], 1)} | {_fmt(a['max_abs_diff'], 4)} | "
                     f"{'pass' if a['pass'] else 'FAIL'} |")
    lines += ["", "## Verdict", ""]
    lines += [f"- {name}: {'pass' if ok else 'FAIL'}" for name, ok in report["checks"].items()]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/gpu_check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="run on the CPU with tiny sizes (the test suite's mode)")
    parser.add_argument("--out", default="gpu-check", help="folder for gpu_check.md and gpu_check.json")
    parser.add_argument("--steps", type=int, default=None, help="training steps per pair (default 300; dry-run 4)")
    parser.add_argument("--force", action="store_true", help="replace an existing report in --out")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    md, js = out / "gpu_check.md", out / "gpu_check.json"
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine, or use --dry-run on the CPU", file=sys.stderr)
        return 2
    if (md.exists() or js.exists()) and not args.force:
        print(f"gpu_check: {md} already exists; choose another --out or pass --force", file=sys.stderr)
        return 2
    if args.steps is not None and args.steps < 2:
        print(f"gpu_check: --steps must be at least 2, got {args.steps}", file=sys.stderr)
        return 2
    plan = _plan(args.dry_run, args.steps)
    t0 = time.perf_counter()
    from piebench.runs import git_commit

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "commit": git_commit(),
           "device_name": torch.cuda.get_device_name(0) if plan["device"] == "cuda" else "CPU (dry run)"}
    notes = []
    if not plan["compile"]:
        notes.append("torch.compile was NOT exercised (dry run): the angular+sa pair trained uncompiled; "
                     "only the GPU run checks --compile.")
    if plan["device"] == "cpu":
        notes.append("dry run: CPU, protocol smoke, 64 x 48 images, small configurations; the figures test the "
                     "tool, not a GPU.")
    out.mkdir(parents=True, exist_ok=True)
    runs = pathlib.Path(tempfile.mkdtemp(prefix="runs-", dir=out))
    report: dict[str, Any] = {"mode": plan["mode"], "plan": plan, "environment": env, "train": [], "bench": [],
                              "agreement": [], "notes": notes}
    for pair in PAIRS:
        print(f"gpu_check: training {pair[0]}+{pair[1]}{' (compiled)' if pair[2] and plan['compile'] else ''}",
              file=sys.stderr)
        report["train"].append(_train(pair, plan, runs))
    for name in ENHANCERS:
        for amp in (None, "bf16"):
            print(f"gpu_check: inference {name} {amp or 'fp32'}", file=sys.stderr)
            report["bench"].append(_bench(name, amp, plan))
        report["agreement"].append(_agreement(name, plan))
    report["elapsed_s"] = time.perf_counter() - t0
    report["checks"] = {
        "training finished": all(t["status"] == "finished" for t in report["train"]),
        f"bf16 agrees with float32 (PSNR > {PSNR_MIN_DB:.0f} dB)": all(a["pass"] for a in report["agreement"]),
        f"under {BUDGET_S // 60} minutes": report["elapsed_s"] < BUDGET_S,
    }
    js.write_text(json.dumps(report, indent=1, default=str) + "\n")
    md.write_text(render_markdown(report))
    print(render_markdown(report))
    print(f"gpu_check: wrote {md} and {js}", file=sys.stderr)
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
