"""``piebench enhance``: enhance your photos with a trained run (from your references) or with released weights."""

from __future__ import annotations

import pathlib

import click
import torch

from ..build import resolve_device
from ..data.images import fit
from ..enhancing import check_finite_weights, enhance_photos
from ..errors import UsageError
from ..full_resolution import enhance_full, full_resolution_of
from ..outputs import refuse_overlap
from ..personalize import list_inputs, load_run, read_refs
from ..plugins import get_registry
from ..released import load_released


@click.command("enhance")
@click.option("--run", "run_dir", type=click.Path(file_okay=False), default=None,
              help="A run directory from `piebench run` (its encoder reads --refs).")
@click.option("--refs", type=click.Path(), default=None,
              help="Folder of photos edited the way you like (or input/ + <edited>/ pairs); with --enhancer, "
                   "photos in the target style of a released style-conditioned model (StarEnhancer).")
@click.option("--style", type=int, default=None,
              help="With --enhancer: target style K (from 1) stored with the released weights (StarEnhancer).")
@click.option("--enhancer", default=None, help="Released single-style model instead of a run (needs --weights).")
@click.option("--weights", type=click.Path(), default=None, help="Weights file or folder for --enhancer.")
@click.option("--configuration", default="paper", show_default=True, help="Configuration of --enhancer.")
@click.option("--input", "inputs", required=True, type=click.Path(), help="A photo or a folder of photos.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (same file names).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--mode", type=click.Choice(["auto", "full", "tile"]), default="auto", show_default=True,
              help="auto: the model's full-resolution path where it has one, else overlapping tiles.")
@click.option("--tile", type=click.IntRange(32), default=512, show_default=True, help="Tile size in pixels.")
@click.option("--overlap", type=click.IntRange(0), default=64, show_default=True, help="Tile overlap in pixels.")
@click.option("--max-refs", type=click.IntRange(1), default=None, help="Use at most this many references.")
@click.option("--max-size", type=click.IntRange(0), default=0, show_default=True,
              help="Shrink inputs to this long edge first (0 = full resolution).")
@click.option("--format", "fmt", type=click.Choice(["png", "jpeg", "tiff", "webp"], case_sensitive=False),
              default=None, help="Write this format (default: each input's own format and bit depth).")
@click.option("--quality", type=click.IntRange(1, 100), default=None,
              help="JPEG/WebP quality (default 95).")
@click.option("--overwrite", is_flag=True, help="Replace files already in --out (they are listed).")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable photos (one warning each) instead of stopping.")
def enhance(run_dir, refs, style, enhancer, weights, configuration, inputs, out, device, mode, tile, overlap, max_refs,
            max_size, fmt, quality, overwrite, skip_bad) -> None:
    """Enhance --input photos; write them to --out (same names, format and bit depth) plus index.html."""
    if bool(run_dir) == bool(enhancer):
        raise UsageError("give either --run RUN_DIR (with --refs) or --enhancer NAME --weights PATH")
    if run_dir and style is not None:
        raise UsageError("--style K picks a style stored with released weights (--enhancer); a run takes --refs")
    refuse_overlap(out, "--out", [("--input", inputs), ("--refs", refs), ("--run", run_dir), ("--weights", weights)])
    device = resolve_device(device)
    files = list_inputs(inputs)
    if run_dir:
        if not refs:
            raise UsageError("--run needs --refs DIR: the photos edited the way you like")
        models = load_run(run_dir, device)
        refset = read_refs(refs, models.resolution, "inputs" in models.encoder.requires, max_refs,
                           skip_bad=skip_bad).to(device)
        model, full = models.enhancer, models.full_resolution
        title = f"{models.config['encoder']['name']} + {models.config['enhancer']['name']} ({run_dir})"
        click.echo(f"piebench: {refset.num_refs} references from {refs}; checkpoint {models.checkpoint}", err=True)
    else:
        if not weights:
            raise UsageError("--enhancer needs --weights PATH (the released weights file or folder)")

        model = load_released(enhancer, weights, configuration=configuration, device=device, refs=refs, style=style,
                              max_refs=max_refs)
        full = full_resolution_of(get_registry().get("enhancer", enhancer), model.enhancer)
        refset, models, title = None, None, f"{enhancer} ({weights})"
    full = {"auto": full, "full": True, "tile": False}[mode]
    for module in [model] if models is None else [models.encoder, models.enhancer]:
        check_finite_weights(module, title)

    def run(image, name):
        x = torch.from_numpy(image).permute(2, 0, 1)[None].to(device)
        pref = None
        if models is not None:
            q = torch.from_numpy(fit(image, *models.resolution)[0].astype("float32") / 255).permute(2, 0, 1)
            rs = refset.__class__(targets=refset.targets, inputs=refset.inputs, query=q[None].to(device))
            with torch.no_grad():
                pref = models.encoder(rs)
        y = enhance_full(model, x, pref, full_resolution=full, tile=tile, overlap=overlap)
        return y[0].permute(1, 2, 0).cpu().numpy()

    index, n = enhance_photos(files, pathlib.Path(out), run, title=title, fmt=fmt, quality=quality,
                              overwrite=overwrite, skip_bad=skip_bad, max_size=max_size, echo=click.echo)
    how = "the model's full-resolution path" if full else f"overlapping {tile}-px tiles where a photo is larger"
    click.echo(f"{n} photos enhanced at full resolution ({how}); before/after: {index}")
