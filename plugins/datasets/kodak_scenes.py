"""The 24 Kodak photographs that pie-synth v2 adds to the 8 package photographs.

The files in ``kodak/`` (package data of this plugin) are the Kodak Lossless True Color Image
Suite re-encoded by :func:`reencode` with :data:`ENCODING` (lossy WebP, about 40 dB PSNR
against the lossless originals; pie-synth crops and shrinks them, so the coding noise is far
below what a retouch changes). ``kodak/SHA256SUMS`` lists the committed files; its digest
(:func:`files_digest`) is part of the pie-synth store recipe, so new files mean a new store.

Regenerate the files from the lossless PNGs with
``python -m piebench_plugins.datasets.kodak_scenes SRC_DIR`` (writes into ``kodak/``).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from piebench.data.synth import Scene

#: How the lossless PNGs were re-encoded (Pillow's WebP encoder); part of the store recipe.
ENCODING = {"format": "WEBP", "quality": 92, "method": 6, "source": "kodimNN.png, 768x512 lossless"}
COUNT = 24
SOURCE = "Kodak Lossless True Color Image Suite, {name} (Eastman Kodak)"
LICENCE = "released by Kodak for unrestricted use"


def folder() -> Path:
    """The folder holding ``kodim01.webp`` ... ``kodim24.webp``, README.md and SHA256SUMS."""
    return Path(str(resources.files("piebench_plugins.datasets").joinpath("kodak")))


def _loader(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        with Image.open(folder() / f"{name}.webp") as im:
            return np.asarray(im.convert("RGB"))

    return load


#: kodim01 ... kodim24, in the suite's order.
KODAK_SCENES: tuple[Scene, ...] = tuple(
    Scene(f"kodim{i:02d}", _loader(f"kodim{i:02d}"), SOURCE.format(name=f"kodim{i:02d}"), LICENCE)
    for i in range(1, COUNT + 1))


def files_digest() -> str:
    """sha256 of ``SHA256SUMS`` (which lists every committed file's sha256)."""
    return hashlib.sha256((folder() / "SHA256SUMS").read_bytes()).hexdigest()


def reencode(src: str | Path, dst: str | Path | None = None) -> list[Path]:
    """Re-encode ``src/kodimNN.png`` into ``dst/kodimNN.webp`` with :data:`ENCODING`; writes SHA256SUMS."""
    src, dst = Path(src), Path(dst) if dst is not None else folder()
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(1, COUNT + 1):
        path = dst / f"kodim{i:02d}.webp"
        with Image.open(src / f"kodim{i:02d}.png") as im:
            im.convert("RGB").save(path, ENCODING["format"], quality=ENCODING["quality"], method=ENCODING["method"])
        written.append(path)
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in written)
    (dst / "SHA256SUMS").write_text(sums)
    return written


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m piebench_plugins.datasets.kodak_scenes SRC_DIR [DST_DIR]")
    for p in reencode(*sys.argv[1:]):
        print(p)
