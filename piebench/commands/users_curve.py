"""``piebench users-curve``: held-out users' PSNR against the number of training users."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import RunFailed
from ..sweep import parse_seeds
from ..users_curve import curve_table, parse_counts, users_curve, write_curve


@click.command("users-curve")
@click.option("--encoder", required=True)
@click.option("--enhancer", required=True)
@click.option("--counts", required=True,
              help="Comma-separated numbers of training users, e.g. 2,4,8,12 (pie-synth) or 1,2,3,4 (fivek-loeo).")
@click.option("--protocol", default="smoke", show_default=True, help="Protocol name or .toml path.")
@click.option("--dataset", default=None, help="Dataset as NAME[:ROOT], e.g. fivek:fivek-upe-480.")
@click.option("--seeds", default="0", show_default=True,
              help="Comma-separated seeds; the deltas' intervals need >= 2, e.g. 0,1,2.")
@click.option("--steps", type=int, default=None, help="Total training steps per run.")
@click.option("--set", "sets", multiple=True, help="Config override KEY=VALUE for every run (repeatable).")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Where the markdown, JSON and PNG go (default RUNS_DIR/curves).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--progress", is_flag=True, help="Show each run's progress bars.")
def users_curve_cmd(encoder, enhancer, counts, protocol, dataset, seeds, steps, sets, runs_dir, out, device,
                    progress) -> None:
    """Train at each number of training users; score the same held-out users from their references."""
    curve = users_curve(protocol, encoder, enhancer, parse_counts(counts), seeds=parse_seeds(seeds), steps=steps,
                        sets=list(sets), runs_dir=runs_dir, device=device, dataset_arg=dataset, progress=progress,
                        echo=lambda msg: click.echo(msg, err=True))
    click.echo(curve_table(curve))
    md, js, png = write_curve(curve, out or Path(runs_dir) / "curves")
    click.echo(f"wrote {md}, {js} and {png}")
    failed = [it for runs in curve.items.values() for it in runs if it.status == "failed"]
    if failed:
        print(f"piebench: {len(failed)} run(s) failed", file=sys.stderr)
        raise RunFailed(f"{len(failed)} users-curve run(s) failed; rerun the same command to retry them")
