"""piebench's ``star`` against the official StarEnhancer code, end to end, on one CPU thread.

    git clone https://github.com/IDKiro/StarEnhancer /tmp/StarEnhancer
    python tools/star_official.py --official /tmp/StarEnhancer --out leaderboards/records/speed

Nothing of the official code is copied into piebench: this script imports ``model.mapping`` and
``model.enhancer`` from the clone you name. Both models get the same random weights (piebench's
``StarEnhancer`` state dict has the official key names), the same style codes and the same
image; rounds alternate piebench and official (interleaved), medians are reported with the
maximum absolute difference of the outputs. Peak memory: each (model, size) runs once in a
fresh subprocess and reports the resident-set high-water mark above its starting point
(``piebench bench``'s CPU method). Writes ``official-star-<stamp>.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

SIZES = {"1080p": (1080, 1920), "4k": (2160, 3840)}


def _models(official: str):
    sys.path.insert(0, official)
    from model.enhancer import SlimEnhancer as OfficialSlim  # the official code, from the user's clone
    from model.mapping import Mapping as OfficialMapping
    from piebench_plugins.enhancers.star import StarEnhancer

    torch.manual_seed(0)
    ours = StarEnhancer().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    mapping, slim = OfficialMapping(512).eval(), OfficialSlim().eval()
    mapping.load_state_dict(ours.mapping.state_dict())
    slim.load_state_dict(ours.enhancer.state_dict())
    g = torch.Generator().manual_seed(2)
    a, b = (F.normalize(torch.randn(1, 512, generator=g), dim=1) for _ in range(2))
    return ours, mapping, slim, a, b


def _runners(official: str):
    from piebench.interfaces import Preference

    ours, mapping, slim, a, b = _models(official)
    return {"piebench": lambda x: ours(x, Preference(vector=b, source=a)),
            "official": lambda x: slim(x, mapping(a), mapping(b))}


def _image(size: str) -> torch.Tensor:
    h, w = SIZES[size]
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(3))
    x[0, :, 0, 0], x[0, :, 0, 1] = 1.0, 0.0  # both ends of the curves
    return x


def _peak(official: str, which: str, size: str) -> None:
    from piebench.bench import _Memory

    run = _runners(official)[which]
    x = _image(size)
    with torch.no_grad(), _Memory("cpu") as mem:
        run(x)
    print(json.dumps({"peak_mb": mem.peak_mb}))


def _commit(official: str) -> str | None:
    try:
        return subprocess.check_output(["git", "-C", official, "rev-parse", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="a checkout of IDKiro/StarEnhancer (holds model/)")
    parser.add_argument("--official-commit", default=None, help="its commit, when --official is not a git checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="1080p,4k")
    parser.add_argument("--out", default=None, help="folder for the JSON record (default: print only)")
    parser.add_argument("--peak", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if not (pathlib.Path(args.official) / "model" / "enhancer.py").is_file():
        print(f"star_official: {args.official} holds no model/enhancer.py; clone IDKiro/StarEnhancer there",
              file=sys.stderr)
        return 2
    if args.peak:
        _peak(args.official, *args.peak)
        return 0
    from piebench.runs import environment, git_commit, now

    runners = _runners(args.official)
    record = {"kind": "official-star", "created": now(), "git_commit": git_commit(),
              "official_commit": args.official_commit or _commit(args.official), "environment": environment("cpu"),
              "threads": torch.get_num_threads(), "rounds": args.rounds, "results": []}
    for size in (s.strip() for s in args.sizes.split(",") if s.strip()):
        x = _image(size)
        times = {k: [] for k in runners}
        with torch.no_grad():
            outs = {k: fn(x) for k, fn in runners.items()}  # warm-up, and the outputs compared
            for _ in range(args.rounds):
                for name, fn in runners.items():
                    t0 = time.perf_counter()
                    fn(x)
                    times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        mp = x.shape[2] * x.shape[3] / 1e6
        peak = {k: json.loads(subprocess.check_output(
            [sys.executable, __file__, "--official", args.official, "--peak", k, size], text=True))["peak_mb"]
            for k in runners}
        row = {"size": size, "width": x.shape[3], "height": x.shape[2],
               "mp_per_s": {k: mp / v for k, v in med.items()}, "median_ms": {k: v * 1e3 for k, v in med.items()},
               "ratio": med["official"] / med["piebench"], "peak_memory_mb": peak,
               "max_abs_diff": float((outs["piebench"] - outs["official"]).abs().max()),
               "bit_equal": bool(torch.equal(outs["piebench"], outs["official"]))}
        record["results"].append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"official-star-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
