"""Figures are drawn at the size they are shown with every text >= 11 px, recorded in the PNG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from piebench.figures import DPI, MIN_TEXT_PX, legend_outside, min_text_px, new_figure, png_bytes
from piebench.metrics.control import control_heatmap
from piebench.metrics.separability import tsne_plot


def test_small_text_is_raised_and_the_smallest_size_recorded():
    fig = new_figure(400, 300)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], label="a")
    ax.set_title("tiny", fontsize=4)
    legend_outside(ax)
    png = png_bytes(fig)
    assert ax.title.get_fontsize() * DPI / 72 == MIN_TEXT_PX and min_text_px(png) == MIN_TEXT_PX
    # the legend is right of the axes: the image is wider than the 400 px figure
    assert Image.open(io.BytesIO(png)).size[0] > 400 and ax.get_legend().get_bbox_to_anchor() is not None


def test_heat_map_and_tsne_are_readable(tmp_path):
    names = [f"user-{i:02d}" for i in range(8)]
    m = 20 + np.arange(64, dtype=float).reshape(8, 8) / 10
    heat = control_heatmap(m, names, tmp_path / "heat.png").read_bytes()
    assert min_text_px(heat) >= 10 and Image.open(io.BytesIO(heat)).size[0] >= 560
    emb = np.random.default_rng(0).normal(size=(40, 6))
    tsne = tsne_plot(emb, np.repeat(np.arange(8), 5), tmp_path / "tsne.png", user_names=dict(enumerate(names)))
    assert min_text_px(tsne.read_bytes()) >= 10
