"""``piebench data``: prepare real datasets (FiveK) and synthesise users from Lightroom presets."""

from __future__ import annotations

import json
import pathlib

import click

from ..config import given_list
from ..data.fivek import default_store, prepare_fivek
from ..data.presets import synth as run_synth
from ..data.presets import unsupported_message
from ..outputs import refuse_overlap, replaced_message


@click.group("data")
def data() -> None:
    """Prepare datasets: `prepare fivek` (image store), `synth` (Lightroom presets -> users)."""


@data.command("prepare")
@click.argument("dataset", type=click.Choice(["fivek"]))
@click.option("--root", required=True, type=click.Path(), help="Where the dataset lies.")
@click.option("--layout", required=True, type=click.Choice(["official", "starenhancer", "adaint", "msm", "folder"]),
              help="How it is laid out (see `piebench.data.fivek`).")
@click.option("--size", default="480", show_default=True, help="Short edge in pixels (N x 1.5N store) or 'full'.")
@click.option("--split", default=None, help="upe, 480p, layout or a JSON split file (default: per layout).")
@click.option("--users", default=None, help="Experts to keep, comma-separated (e.g. C or A,B,C,D,E).")
@click.option("--out", default=None, type=click.Path(), help="Store folder (default ./fivek-SPLIT-SIZE, where the fivek-* protocols look).")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable photos (listed in manifest.json) instead of stopping.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def prepare(dataset, root, layout, size, split, users, out, skip_bad, quiet) -> None:
    """Read DATASET under --root and write its image store once (resumable if interrupted)."""
    names = given_list(users, "--users", "A,B,C,D,E") or None
    out = pathlib.Path(out or default_store(root, layout, size, split))
    refuse_overlap(out, "--out", [("--root", root)] + ([("--split", split)] if split and pathlib.Path(split).is_file()
                                                       else []))
    path = prepare_fivek(root, layout, out, size=size, split=split, users=names, skip_bad=skip_bad,
                         progress=not quiet)
    meta = json.loads((path / "store.json").read_text())
    manifest = json.loads((path / "manifest.json").read_text())
    splits = ", ".join(f"{n} {s}" for s, n in manifest["splits"].items())
    size_txt = "x".join(map(str, meta["size"])) if meta["size"] != "full" else "full resolution"
    click.echo(f"store: {path} ({len(meta['photos'])} photos: {splits}; users {', '.join(meta['users'])}; {size_txt})")
    if manifest["skipped"]:
        click.echo(f"skipped {len(manifest['skipped'])} bad photos (listed in {path / 'manifest.json'}):", err=True)
        for s in manifest["skipped"]:
            click.echo(f"  {s['name']}: {s['reason']}", err=True)
    click.echo(f"run: piebench run --dataset fivek:{path} --encoder ... --enhancer ...")


@data.command("synth")
@click.option("--presets", required=True, type=click.Path(), help="Folder of Lightroom/ACR .xmp presets.")
@click.option("--photos", required=True, type=click.Path(), help="Folder of photos to edit.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder dataset.")
@click.option("--max-size", type=click.IntRange(0), default=1024, show_default=True,
              help="Shrink photos to this long edge first (0 = keep).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier `data synth` output at --out (listed).")
def synth(presets, photos, out, max_size, overwrite) -> None:
    """Turn each preset into a synthetic user and write a `folder` dataset (OUT/input, OUT/<preset>)."""
    report = run_synth(presets, photos, out, max_size=max_size, warn=False, overwrite=overwrite)
    if report["replaced"]:
        click.echo(replaced_message(report["replaced"]), err=True)
    if report["unsupported"]:
        click.echo(f"piebench: warning: {unsupported_message(report['unsupported'])}", err=True)
    click.echo(f"wrote {out}: {len(report['users'])} users x {len(report['photos'])} photos "
               f"({', '.join(report['users'])})")
    click.echo(f"run: piebench run --dataset folder:{out} --encoder ... --enhancer ...")
