"""Regenerate leaderboards/smoke.md from the committed records in leaderboards/records/.

    python leaderboards/regenerate.py            # rewrite smoke.md
    python leaderboards/regenerate.py --check    # exit 1 if smoke.md differs

New records come from a sweep archived with
``piebench leaderboard --runs-dir runs --protocol smoke --archive leaderboards/records``.
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
    df = collect(records, "smoke")
    table = render_markdown(leaderboard_tables(df))
    rec = json.loads(next(records.joinpath("smoke").rglob("record.json")).read_text())
    env = rec["environment"]
    done = set(map(tuple, df[["encoder", "enhancer"]].drop_duplicates().to_numpy().tolist()))
    missing = sorted(cross_pairs() - done)
    coverage = ("**Coverage: complete.**" if not missing else
                f"**Coverage: partial.** {len(done)} pairs have run ({len(df)} runs); still to run: "
                + ", ".join(f"{e}+{h}" for e, h in missing) + ". The sweep command below skips finished runs.")
    return f"""# smoke leaderboard: a sanity check, not a ranking

The smoke protocol (64 px pie-synth crops, 500 CPU steps) shows that a pair trains and
follows the preference. Differences between rows are within run-to-run noise unless the
paired statistics below say otherwise. seen = training users; unseen = users personalised
from their references alone.

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


def main(argv: list[str]) -> int:
    text = render_smoke()
    path = HERE / "smoke.md"
    if "--check" in argv:
        return 0 if path.exists() and path.read_text() == text else 1
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
