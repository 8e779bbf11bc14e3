"""``piebench enhance``'s file handling: check every photo first, then write each one safely.

:func:`enhance_photos` runs in two passes. First it decodes every input (a bad one is an error
naming it before anything is written, or, with ``skip_bad``, one warning and the photo is left
out), plans every output file (photos, ``_thumbs/``, ``index.html``) and refuses existing ones
unless ``overwrite``. Then, photo by photo, it enhances, checks the output is finite (a NaN or
infinity is a :class:`~piebench.errors.RunFailed` and nothing is written for that photo), and
writes it at full fidelity (:mod:`piebench.data.write`) through a temporary name. Thumbnails come
from the decoded arrays, named after each output file, so ``a.jpg`` and ``a.png`` get two.
"""

from __future__ import annotations

import html
import io
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from .colour import to_unit
from .data.images import quantise, read_image, resize_unit, to_srgb
from .data.write import encode_photo, output_name
from .errors import RunFailed, UsageError
from .outputs import OutputPlan, atomic_write, replaced_message


def _warn(line: str) -> None:
    print(f"piebench: warning: {line}", file=sys.stderr)


def check_finite_weights(module: Any, what: str) -> None:
    """RunFailed when any parameter or buffer of ``module`` holds NaN or infinity."""
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise RunFailed(f"{what}: weight {name} holds NaN or infinite values; the weights are broken "
                            f"(retrain, or use other weights); nothing was written")


def _shrink(rgb: np.ndarray, alpha: np.ndarray | None, max_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    h, w = rgb.shape[:2]
    if not max_size or max(h, w) <= max_size:
        return rgb, alpha
    s = max_size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    rgb = resize_unit(rgb, nh, nw)  # at float precision: a 16-bit or float photo is not cut to 8 bits
    if alpha is not None:
        a = resize_unit(np.repeat(to_unit(alpha)[..., None], 3, axis=-1), nh, nw)[..., 0]
        alpha = quantise(a) if alpha.dtype == np.uint8 else a
    return rgb, alpha


def _thumb(rgb: np.ndarray, size: int) -> bytes:
    im = Image.fromarray(quantise(rgb))
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def enhance_photos(files: list[pathlib.Path], out: pathlib.Path, run: Callable[[np.ndarray, str], np.ndarray], *,
                   title: str, fmt: str | None = None, quality: int | None = None, overwrite: bool = False,
                   skip_bad: bool = False, max_size: int = 0, thumb: int = 512,
                   echo: Callable[[str], None] = print) -> tuple[pathlib.Path, int]:
    """Enhance ``files`` into ``out`` with ``run(float32 sRGB [H, W, 3], name) -> same``; returns
    (``out/index.html``, photos written). See the module doc for the order of checks."""
    good: list[tuple[pathlib.Path, str, str]] = []
    for f in files:
        try:
            read_image(f)
        except UsageError as err:
            if not skip_bad:
                raise UsageError(f"{err} (nothing was written; add --skip-bad to enhance the other photos)") from None
            _warn(f"skipped: {err}")
            continue
        name, kind = output_name(f, fmt)
        good.append((f, name, kind))
    if not good:
        raise UsageError("no readable photos to enhance (each was skipped, see the warnings)")
    plan = OutputPlan(out, overwrite)
    for _, name, _ in good:
        plan.add(name)
    for _, name, _ in good:
        plan.add(f"_thumbs/{name}.before.jpg")
        plan.add(f"_thumbs/{name}.after.jpg")
    index = plan.add("index.html")
    replaced = plan.check()
    rows = []
    for f, name, kind in good:
        image = read_image(f, warn=False)  # its warnings were printed by the first pass
        rgb, alpha = _shrink(to_srgb(image), image.alpha, max_size)
        image.alpha = alpha
        y = run(rgb, str(f))
        if not np.isfinite(y).all():
            done = f"; the {len(rows)} photo(s) before it are kept in {out}" if rows else "; nothing was written"
            raise RunFailed(f"{f}: the model's output is not finite (NaN or infinity): its weights or this photo "
                            f"break it; nothing was written for this photo{done}")
        data = encode_photo(y, image, kind, quality)
        if kind == "JPEG" and image.alpha is not None:
            _warn(f"{f}: JPEG has no alpha channel; {name} is written without it")
        target = out / name
        atomic_write(target, lambda tmp, data=data: tmp.write_bytes(data))
        for tag, arr in (("before", rgb), ("after", y)):
            blob = _thumb(arr, thumb)
            atomic_write(out / "_thumbs" / f"{name}.{tag}.jpg", lambda tmp, blob=blob: tmp.write_bytes(blob))
        rows.append(f"<tr><th>{html.escape(f.name)} &rarr; {html.escape(name)}</th>"
                    + "".join(f'<td><img src="_thumbs/{html.escape(name)}.{tag}.jpg" alt="{tag}"></td>'
                              for tag in ("before", "after")) + "</tr>")
        echo(f"{f} -> {target}")
    page = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>body{{font-family:sans-serif}}img{{max-width:{thumb}px}}td,th{{padding:4px}}</style>"
            f"<h1>{html.escape(title)}</h1><table><tr><th></th><th>before</th><th>after</th></tr>"
            f"{''.join(rows)}</table>\n")
    atomic_write(index, lambda tmp: tmp.write_text(page))
    if replaced:
        print(replaced_message(replaced), file=sys.stderr)
    return index, len(rows)
