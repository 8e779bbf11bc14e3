"""``piebench report``: a self-contained HTML page of runs and their leaderboard."""

from __future__ import annotations

import shlex
import sys

import click

from ..report import build_report


@click.command("report")
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--protocol", default=None, help="Report every configuration of this protocol instead of RUN_DIRS.")
@click.option("--runs-dir", default=None, type=click.Path(file_okay=False),
              help="Where the leaderboard's records are (default: runs with --protocol; with RUN_DIRS only "
                   "those runs).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for index.html.")
@click.option("--max-runs", type=int, default=12, show_default=True, help="Run sections at most (with --protocol).")
@click.option("--photos", type=int, default=3, show_default=True, help="Test photos in each image grid (0 = none).")
@click.option("--users", "max_users", type=int, default=6, show_default=True, help="Users per image grid.")
@click.option("--device", default="cpu", show_default=True, help="Where the image grid's models run.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT/index.html.")
def report(run_dirs, protocol, runs_dir, out, max_runs, photos, max_users, device, overwrite) -> None:
    """Write OUT/index.html for RUN_DIRS or for --protocol P (figures and images embedded)."""
    path = build_report(out, run_dirs=list(run_dirs), protocol=protocol, runs_dir=runs_dir, max_runs=max_runs,
                        photos=photos, max_users=max_users, device=device, overwrite=overwrite,
                        command="piebench " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if len(sys.argv) > 1 else "")
    click.echo(f"wrote {path}")
