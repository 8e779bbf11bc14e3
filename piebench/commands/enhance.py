"""``piebench enhance``: enhance your photos with a trained run (from your references) or with released weights."""

from __future__ import annotations

import pathlib

import click

from ..errors import UsageError


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
def enhance(run_dir, refs, style, enhancer, weights, configuration, inputs, out, device, mode, tile, overlap, max_refs,
            max_size) -> None:
    """Enhance --input photos; write them to --out with the same names plus index.html (before/after)."""
    import torch

    from ..build import resolve_device
    from ..data.images import quantise, read_image, resize, to_srgb
    from ..personalize import (
        enhance_full,
        full_resolution_of,
        list_inputs,
        load_run,
        read_refs,
        save_image,
        write_index,
    )

    if bool(run_dir) == bool(enhancer):
        raise UsageError("give either --run RUN_DIR (with --refs) or --enhancer NAME --weights PATH")
    if run_dir and style is not None:
        raise UsageError("--style K picks a style stored with released weights (--enhancer); a run takes --refs")
    device = resolve_device(device)
    files = list_inputs(inputs)
    if run_dir:
        if not refs:
            raise UsageError("--run needs --refs DIR: the photos edited the way you like")
        models = load_run(run_dir, device)
        refset = read_refs(refs, models.resolution, "inputs" in models.encoder.requires, max_refs).to(device)
        model, full = models.enhancer, models.full_resolution
        title = f"{models.config['encoder']['name']} + {models.config['enhancer']['name']} ({run_dir})"
        click.echo(f"piebench: {refset.num_refs} references from {refs}; checkpoint {models.checkpoint}", err=True)
    else:
        if not weights:
            raise UsageError("--enhancer needs --weights PATH (the released weights file or folder)")
        from ..plugins import get_registry
        from ..released import load_released

        model = load_released(enhancer, weights, configuration=configuration, device=device, refs=refs, style=style,
                              max_refs=max_refs)
        full = full_resolution_of(get_registry().get("enhancer", enhancer), model.enhancer)
        refset, models, title = None, None, f"{enhancer} ({weights})"
    full = {"auto": full, "full": True, "tile": False}[mode]
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for f in files:
        image = to_srgb(read_image(f))
        if max_size and max(image.shape[:2]) > max_size:
            s = max_size / max(image.shape[:2])
            image = resize(image, round(image.shape[0] * s), round(image.shape[1] * s)).astype("float32") / 255
        x = torch.from_numpy(image).permute(2, 0, 1)[None].to(device)
        pref = None
        if models is not None:
            from ..data.images import fit

            q = torch.from_numpy(fit(image, *models.resolution)[0].astype("float32") / 255).permute(2, 0, 1)
            rs = refset.__class__(targets=refset.targets, inputs=refset.inputs, query=q[None].to(device))
            with torch.no_grad():
                pref = models.encoder(rs)
        y = enhance_full(model, x, pref, full_resolution=full, tile=tile, overlap=overlap)
        target = out / f.name
        save_image(quantise(y[0].permute(1, 2, 0).cpu().numpy()), target)
        pairs.append((f, target))
        click.echo(f"{f} -> {target}")
    index = write_index(out, pairs, title)
    how = "the model's full-resolution path" if full else f"overlapping {tile}-px tiles where a photo is larger"
    click.echo(f"{len(pairs)} photos enhanced at full resolution ({how}); before/after: {index}")
