"""Enhance a person's photos with a trained run (their references) or with released weights.

* :func:`load_run` rebuilds a run's encoder and enhancer from ``RUN_DIR/config.json`` and its
  newest checkpoint (``checkpoints/ckpt-*.pt``: ``"encoder"`` / ``"enhancer"`` state dicts).
* :func:`read_refs` loads a folder of preferred photos (or pairs ``input/`` + ``<edited>/``)
  at the run's training resolution.
* whole photos are enhanced by :mod:`piebench.full_resolution` (one pass or blended tiles).
* the files (reading first, writing safely, ``index.html``) are :mod:`piebench.enhancing`'s.
"""

from __future__ import annotations

import json
import pathlib
import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .build import build_dataset, build_models
from .checkpoints import latest_checkpoint
from .data.images import fit, is_image, list_images, read_image
from .errors import PiebenchError, UsageError
from .full_resolution import full_resolution_of
from .interfaces import Encoder, Enhancer, RefSet
from .plugins import get_registry


@dataclass
class RunModels:
    """A run's encoder and enhancer in eval mode, with the resolution they were trained at."""

    encoder: Encoder
    enhancer: Enhancer
    resolution: tuple[int, int]
    full_resolution: bool
    config: dict
    checkpoint: str


def load_run(run_dir: str | pathlib.Path, device: str = "cpu") -> RunModels:
    """The models of a finished (or checkpointed) run, rebuilt from its saved config."""
    run_dir = pathlib.Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise UsageError(f"--run {run_dir}: not a run directory (no config.json); give a folder made by piebench run")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"{cfg_path} is unreadable ({err})") from None
    found = latest_checkpoint(run_dir / "checkpoints")
    if found is None:
        raise UsageError(f"--run {run_dir}: no readable checkpoint in {run_dir}/checkpoints; the run saved none yet")
    registry = get_registry()
    try:
        dataset = build_dataset(cfg, registry)
    except PiebenchError as err:
        raise UsageError(f"--run {run_dir}: its dataset is needed to rebuild the models' shapes and could "
                         f"not be opened: {err}") from None
    encoder, enhancer = build_models(cfg, registry, dataset)
    state = found[1]
    try:
        encoder.load_state_dict(state["encoder"])
        enhancer.load_state_dict(state["enhancer"])
    except (KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"checkpoint {found[0]} does not fit the rebuilt models ({first})") from None
    spec = registry.get("enhancer", cfg["enhancer"]["name"])
    return RunModels(encoder.to(device).eval(), enhancer.to(device).eval(), tuple(dataset.resolution),
                     full_resolution_of(spec, enhancer), cfg, str(found[0]))


def _to_tensor(pixels: np.ndarray) -> Tensor:
    arr = pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


def read_refs(folder: str | pathlib.Path, resolution: tuple[int, int], pairs: bool,
              max_refs: int | None = None, skip_bad: bool = False) -> RefSet:
    """A RefSet ``[1, N, 3, H, W]`` from a folder of preferred photos.

    ``folder`` holds the edited photos directly, or ``input/`` plus one folder of edits (pairs
    matched by name; required when the encoder needs reference pairs). Every reference is
    decoded here, before anything is written; a bad one is an error naming it, or with
    ``skip_bad`` one warning and it is left out.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise UsageError(f"--refs {folder}: folder not found")
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    inputs: list[pathlib.Path | None]
    if (folder / "input").is_dir():
        edited = [d for d in subdirs if d.name != "input"]
        if len(edited) != 1:
            raise UsageError(f"--refs {folder}: next to input/ there must be exactly one folder of edited photos, "
                             f"found {[d.name for d in edited] or 'none'}")
        by_stem = {p.stem: p for p in list_images(folder / "input")}
        targets = [p for p in list_images(edited[0]) if p.stem in by_stem]
        inputs = [by_stem[p.stem] for p in targets]
    else:
        if pairs:
            raise UsageError(f"--refs {folder}: this encoder needs reference pairs; give {folder}/input/NAME and "
                             f"{folder}/<edited>/NAME with the same names")
        targets = list_images(folder)
        inputs = [None] * len(targets)
    if not targets:
        raise UsageError(f"--refs {folder}: no reference photos (png, jpg, tif) found; add the photos whose "
                         f"look you want")
    h, w = resolution
    tgt_px, inp_px = [], []
    for t, i in zip(targets, inputs, strict=True):
        try:
            a = fit(read_image(t), h, w)[0]
            b = fit(read_image(i), h, w)[0] if pairs else None
        except UsageError as err:
            if not skip_bad:
                raise UsageError(f"--refs: {err} (nothing was written; add --skip-bad to leave it out)") from None
            print(f"piebench: warning: skipped reference: {err}", file=sys.stderr)
            continue
        tgt_px.append(a)
        inp_px.append(b)
        if max_refs and len(tgt_px) == max_refs:
            break
    if not tgt_px:
        raise UsageError(f"--refs {folder}: no readable reference photos (each was skipped, see the warnings)")
    tgt = torch.stack([_to_tensor(a) for a in tgt_px])[None]
    inp = torch.stack([_to_tensor(b) for b in inp_px])[None] if pairs else None
    return RefSet(targets=tgt, inputs=inp)


def list_inputs(path: str | pathlib.Path) -> list[pathlib.Path]:
    """The photo ``path``, or every photo directly in the folder ``path``."""
    path = pathlib.Path(path)
    if path.is_file():
        if not is_image(path):
            raise UsageError(f"--input {path}: not a photo (png, jpg, tif, webp, bmp)")
        return [path]
    if not path.is_dir():
        raise UsageError(f"--input {path}: no such file or folder")
    files = list_images(path)
    if not files:
        raise UsageError(f"--input {path}: no photos (png, jpg, tif, webp, bmp) in it")
    return files
