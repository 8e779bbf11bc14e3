"""Figures people can read at the size they are shown.

Every PNG figure piebench writes is made at :data:`DPI` with its size given in pixels, shown in
the HTML report at its natural size (one image pixel per CSS pixel, never shrunk), and saved by
:func:`save` which raises any text smaller than :data:`MIN_TEXT_PX` to that size and records the
smallest text size in the PNG (``piebench:min_text_px``; the report test reads it back). Legends
go outside the axes (:func:`legend_outside`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

#: Dots per inch of every figure: 1 point = DPI / 72 pixels.
DPI = 100
#: The smallest text, in pixels at the natural (= displayed) size.
MIN_TEXT_PX = 11.0
#: Default font size in points (10 pt = 13.9 px at 100 dpi).
FONT_PT = 10.0


def new_figure(width_px: int, height_px: int) -> Any:
    """A matplotlib Figure (Agg canvas, no pyplot) of ``width_px`` x ``height_px`` at :data:`DPI`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def legend_outside(ax: Any, **kw: Any) -> Any:
    """The legend to the right of the axes, top-aligned, never over the data."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False,
                     fontsize=kw.pop("fontsize", FONT_PT), **kw)


def readable(fig: Any) -> float:
    """Raise every visible text of ``fig`` to at least :data:`MIN_TEXT_PX`; the smallest size in px."""
    from matplotlib.text import Text

    floor_pt = MIN_TEXT_PX * 72.0 / DPI
    sizes = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip():
            continue
        if text.get_fontsize() < floor_pt:
            text.set_fontsize(floor_pt)
        sizes.append(text.get_fontsize() * DPI / 72.0)
    return min(sizes) if sizes else MIN_TEXT_PX


def png_bytes(fig: Any) -> bytes:
    """``fig`` as PNG bytes after :func:`readable`, cropped to its content, with the text size recorded."""
    min_px = readable(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.08,
                metadata={"piebench:min_text_px": f"{min_px:.1f}"})
    return buf.getvalue()


def save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (see :func:`png_bytes`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(fig))
    return path


def min_text_px(png: bytes) -> float | None:
    """The smallest text size recorded in a PNG written by :func:`save` (None for another PNG)."""
    value = Image.open(io.BytesIO(png)).text.get("piebench:min_text_px")
    return float(value) if value else None
