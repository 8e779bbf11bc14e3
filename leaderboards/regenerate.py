"""Regenerate leaderboards/*.md from the committed records in leaderboards/records/.

    python leaderboards/regenerate.py            # rewrite smoke.md and throughput-cpu.md
    python leaderboards/regenerate.py --check    # exit 1 if a table differs

New run records come from a sweep archived with
``piebench leaderboard --runs-dir runs --protocol smoke --archive leaderboards/records``;
throughput records from ``piebench bench ... --runs-dir leaderboards/records``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from piebench.build import first_compatible
from piebench.leaderboard import collect, leaderboard_tables, render_markdown
from piebench.plugins import get_registry

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "records"


def cross_pairs() -> set[tuple[str, str]]:
    """The smoke cross: every encoder with its first compatible enhancer (sa first), every
    enhancer with its first compatible encoder (angular first)."""
    reg = get_registry()
    pairs = {(e, first_compatible(reg, encoder=e) or "adain") for e in reg.names("encoder")}
    pairs |= {(first_compatible(reg, enhancer=h, preferred=("angular", "star", "lab-stats")), h)
              for h in reg.names("enhancer")}
    return pairs


def render_smoke(records: Path = RECORDS) -> str:
    """smoke.md: one table per protocol version (newest first), each with its bounds section."""
    df = collect(records, "smoke")
    table = render_markdown(leaderboard_tables(df))
    newest = int(df["version"].max())
    latest = df[df["version"] == newest]
    rec = json.loads((Path(latest["run_dir"].iloc[0]) / "record.json").read_text())
    env = rec["environment"]
    done = set(map(tuple, latest[["encoder", "enhancer"]].drop_duplicates().to_numpy().tolist()))
    missing = sorted(cross_pairs() - done)
    coverage = (f"**Coverage of smoke v{newest}: complete.**" if not missing else
                f"**Coverage of smoke v{newest}: partial.** {len(done)} pairs have run ({len(latest)} runs); still to "
                "run: " + ", ".join(f"{e}+{h}" for e, h in missing) + ". The sweep command below skips finished runs.")
    older = sorted(set(df["version"].astype(int)) - {newest}, reverse=True)
    history = (f" Older protocol versions ({', '.join(f'v{v}' for v in older)}) follow as their own tables: "
               "never compare rows across tables." if older else "")
    return f"""# smoke leaderboard: a sanity check, not a ranking

The smoke protocol (small pie-synth crops, a few hundred CPU steps) shows that a pair trains
and follows the preference. A difference between two rows is real only where the statistics
say so: the `*` ties and the minimum detectable effect under each table count both training
seeds and test scenes (source photographs) as samples. seen = training users; unseen = users
personalised from their references alone. Oracles, baselines and blind twins are bounds,
listed under each ranked table.{history}

{coverage}

{table}
Generated from the records in `leaderboards/records/smoke/` (record.json + per_image.csv per
run) by

    piebench sweep --cross --protocol smoke --seeds 0,1,2 --runs-dir runs
    piebench leaderboard --runs-dir runs --protocol smoke --archive leaderboards/records
    python leaderboards/regenerate.py

Environment: piebench {rec['piebench_version']}, torch {env['torch']}, Python {env['python']},
CPU ({env.get('cpu', '')}), {env['threads']} torch thread, a 2-core machine shared with other jobs.
"""


def render_throughput(records: Path = RECORDS) -> str | None:
    """The CPU throughput table from the bench records (the newest record per enhancer)."""
    from tabulate import tabulate

    from piebench.benchfiles import iter_bench_records

    latest: dict[tuple[str, str], dict] = {}
    for rec in iter_bench_records(records):
        if rec["settings"]["device"] == "cpu":
            latest[(rec["enhancer"]["name"], rec["enhancer"]["configuration"])] = rec
    if not latest:
        return None
    rows, env = [], None
    for (name, conf), rec in sorted(latest.items()):
        env = rec.get("environment", env)
        row = {"enhancer": name, "configuration": conf, "params": f"{rec['parameters'].get('enhancer', 0):,}"}
        for r in rec["results"]:
            row[f"MP/s {r['size']}"] = f"{r['mp_per_s']:.2f}"
            row[f"p50 ms {r['size']}"] = f"{r['latency_ms']['p50']:.1f}"
        rows.append(row)
    settings = next(iter(latest.values()))["settings"]
    created = sorted(rec["created"] for rec in latest.values())
    cpus = sorted({str(rec["environment"]["cpus"]) for rec in latest.values() if "cpus" in rec["environment"]})
    cpus_txt = f"{'/'.join(cpus)} CPUs" if cpus else "no core count recorded"
    load = [rec["environment"]["load_1min"] for rec in latest.values() if "load_1min" in rec["environment"]]
    load_txt = (f"a 1-minute load average of {min(load):.1f} to {max(load):.1f} at the start of each"
                if load else "no load average recorded")
    where = (f"Measured one enhancer after another from {created[0]} to {created[-1]} on one "
             f"{env.get('cpu', '?')} machine ({cpus_txt}, {load_txt}): "
             f"compare rows measured in the same session only.")
    return f"""# CPU throughput: forward pass of every enhancer

Images per second turned into megapixels per second (MP/s ↑) and median latency, batch
{settings['batch']}, float32, {settings.get('threads', '?')} torch thread(s), median of
{settings['repeats']} timed batches after {settings['warmup']} warm-up; the preference is computed
once from random references (encoder cost excluded). {where}

{tabulate(rows, headers="keys", tablefmt="github")}

Generated from `leaderboards/records/bench/` by

    for h in $(piebench list enhancers --json --no-params | python -c "import json,sys; print(' '.join(r['name'] for r in json.load(sys.stdin)))"); do
      piebench bench --enhancer $h --sizes 480p,1080p --device cpu --threads 1 --repeats 3 --runs-dir leaderboards/records
    done
    python leaderboards/regenerate.py

Environment: piebench {next(iter(latest.values()))['piebench_version']}, torch {env.get('torch')}, Python
{env.get('python')}, CPU ({env.get('cpu', '')}).
"""


def main(argv: list[str]) -> int:
    tables = {"smoke.md": render_smoke(), "throughput-cpu.md": render_throughput()}
    stale = []
    for name, text in tables.items():
        if text is None:
            continue
        path = HERE / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
