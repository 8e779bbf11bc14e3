"""``piebench leaderboard``: tables of the finished runs under a runs directory."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from ..leaderboard import collect, leaderboard_tables, render_markdown
from ..runs import archive_records, atomic_write_text


@click.command("leaderboard")
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--protocol", default=None, help="Only this protocol.")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "html"]), default="md", show_default=True)
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Write files here instead of printing.")
@click.option("--archive", default=None, type=click.Path(file_okay=False),
              help="Also copy the finished records (record.json + trimmed per_image.csv) into this folder.")
@click.option("--strict", is_flag=True, help="Refuse entries whose seeds come from different commits (else flagged †).")
def leaderboard(runs_dir: str, protocol: str | None, fmt: str, out: str | None, archive: str | None,
                strict: bool) -> None:
    """One table per evaluation spec of the finished runs in RUNS_DIR: ranked entries, then bounds and baselines."""
    if not Path(runs_dir).is_dir():
        raise UsageError(f"runs directory not found: {runs_dir}; pass --runs-dir")
    if archive:
        copied = archive_records(runs_dir, archive, protocol)
        click.echo(f"archived {len(copied)} records into {archive}", err=True)
    tables = leaderboard_tables(collect(runs_dir, protocol), strict=strict)
    if fmt == "md":
        text = render_markdown(tables)
    elif fmt == "csv":
        text = "\n".join(t.assign(protocol=s["protocol"], version=s["version"]).to_csv(index=False)
                         for s, t in _with_bounds(tables))
    else:
        text = "\n".join(f"<h2>{s['protocol']} v{s['version']}</h2>" + t.to_html(index=False)
                         for s, t in _with_bounds(tables))
    if out:
        path = Path(out) / f"leaderboard.{fmt}"
        atomic_write_text(path, text)
        click.echo(f"wrote {path}")
    else:
        click.echo(text)


def _with_bounds(tables: list) -> list:
    """Each ranked table followed by its bounds table (with a ``kind`` column), for csv and html."""
    out = []
    for spec, table in tables:
        out.append((spec, table))
        if "bounds" in spec:
            out.append((spec, spec["bounds"]))
    return out
