"""pie-synth's ingredients: real photographs (8 ship with installed packages; the dataset plugin
adds its own), seeded square crops of them, and synthetic users (retouchers) with known
:class:`RetouchParams`.

Users are drawn around a few style *archetypes* (a Dirichlet mixture of them plus per-user
noise), so several users share a taste the way the FiveK experts overlap; most users also
carry the content-dependent terms (``brightness_pull``, ``saturation_adapt``) so that a global
curve cannot imitate them. :func:`user_jitter` adds a small per-photo variation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage import data as skimage_data

from ..errors import UsageError
from .retouch import PARAM_NAMES, RetouchParams


@dataclass(frozen=True)
class Scene:
    """One source photograph: ``load()`` returns uint8 ``[H, W, 3]``."""

    name: str
    load: Callable[[], np.ndarray]
    source: str
    licence: str


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        if name == "stereo_motorcycle":
            return np.asarray(skimage_data.stereo_motorcycle()[0])
        return np.asarray(getattr(skimage_data, name)())

    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def _sklearn(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_images

        return np.asarray(load_sample_images().images[index])

    return load


#: The eight package scenes, in a fixed order (photo ids follow it). Datasets may append more
#: scenes (pie-synth v2 adds 24 Kodak photographs); the functions below take the catalogue.
SCENES: tuple[Scene, ...] = (
    Scene("astronaut", _skimage("astronaut"), "scikit-image skimage.data.astronaut (NASA, Eileen Collins)",
          "public domain"),
    Scene("chelsea", _skimage("chelsea"), "scikit-image skimage.data.chelsea (Stefan van der Walt)", "CC0"),
    Scene("coffee", _skimage("coffee"), "scikit-image skimage.data.coffee (Rachel Michetti)", "CC0"),
    Scene("rocket", _skimage("rocket"), "scikit-image skimage.data.rocket (SpaceX)", "public domain"),
    Scene("motorcycle", _skimage("stereo_motorcycle"),
          "scikit-image skimage.data.stereo_motorcycle, left view (Middlebury 2014 stereo, Scharstein et al.)",
          "Middlebury stereo datasets, free for research use with citation"),
    Scene("grace_hopper", _grace_hopper, "matplotlib sample_data grace_hopper.jpg (US Navy photograph)",
          "public domain"),
    Scene("china", _sklearn(0), "scikit-learn load_sample_images china.jpg (danielbuechele on Flickr)",
          "CC BY 2.0"),
    Scene("flower", _sklearn(1), "scikit-learn load_sample_images flower.jpg (vultilion on Flickr)",
          "CC BY 2.0"),
)
SCENE_NAMES = tuple(s.name for s in SCENES)
_ALIASES = {"stereo_motorcycle": "motorcycle", "cat": "chelsea", "grace-hopper": "grace_hopper"}


def scene_names(names: Sequence[str] | None = None, catalogue: Sequence[Scene] = SCENES) -> list[str]:
    """Canonical scene names of ``catalogue`` (all by default); an unknown name is a UsageError."""
    known = [s.name for s in catalogue]
    if names is None:
        return known
    if isinstance(names, str):
        names = [names]
    out = [_ALIASES.get(n, n) for n in names]
    unknown = [n for n in out if n not in known]
    if unknown:
        raise UsageError(f"unknown pie-synth scene(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return out


def scene(name: str, catalogue: Sequence[Scene] = SCENES) -> Scene:
    """The :class:`Scene` called ``name`` in ``catalogue``."""
    name = scene_names([name], catalogue)[0]
    return next(s for s in catalogue if s.name == name)


def split_scenes(scenes: Sequence[str], test_scenes: Sequence[str], folds: int = 0, fold: int = 0,
                 catalogue: Sequence[Scene] = SCENES) -> list[str]:
    """The test scenes: ``test_scenes`` when ``folds == 0``, else fold ``fold`` of a k-fold
    partition of ``scenes`` (scene i goes to fold i % folds, in the fixed scene order)."""
    if folds == 0:
        test = scene_names(test_scenes, catalogue)
        missing = [t for t in test if t not in scenes]
        if missing:
            raise UsageError(f"test scene(s) {', '.join(missing)} are not among the dataset's scenes")
    else:
        if not 2 <= folds <= len(scenes):
            raise UsageError(f"folds must be 0 (fixed test scenes) or 2..{len(scenes)}, got {folds}")
        if not 0 <= fold < folds:
            raise UsageError(f"fold must be in 0..{folds - 1}, got {fold}")
        test = [s for i, s in enumerate(scenes) if i % folds == fold]
    if len(test) >= len(scenes) or not test:
        raise UsageError("the split must leave at least one train scene and one test scene")
    return test


def crop_boxes(height: int, width: int, count: int, rng: np.random.Generator,
               min_side: float = 0.35, max_side: float = 1.0) -> np.ndarray:
    """``count`` random square boxes ``[count, 4]`` (left, top, right, bottom) of side
    ``min_side..max_side`` times the short edge."""
    if not 0 < min_side <= max_side <= 1:
        raise UsageError(f"crop sides must satisfy 0 < min_side <= max_side <= 1, got {min_side}, {max_side}")
    short = min(height, width)
    side = np.maximum(np.round(rng.uniform(min_side, max_side, count) * short), 8).astype(int)
    left = np.floor(rng.uniform(0, 1, count) * (width - side + 1)).astype(int)
    top = np.floor(rng.uniform(0, 1, count) * (height - side + 1)).astype(int)
    return np.stack([left, top, left + side, top + side], 1)


def render_crops(image: np.ndarray, boxes: np.ndarray, resolution: int):
    """Yield each box of ``image`` resized to ``resolution`` square, uint8 ``[R, R, 3]``
    (PIL's Lanczos filter, which anti-aliases when shrinking)."""
    pil = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    for box in boxes:
        yield np.asarray(pil.resize((resolution, resolution), Image.Resampling.LANCZOS,
                                    box=tuple(float(b) for b in box)))


# -- users ------------------------------------------------------------------------------------
#: Style archetypes: offsets from the identity that users mix.
ARCHETYPES: dict[str, dict[str, float]] = {
    "bright-airy": dict(exposure=0.45, contrast=-0.25, highlights=-0.3, shadows=0.35, fade=0.2, vibrance=0.2,
                        temperature=0.1, target_brightness=0.62, brightness_pull=0.6, curve_lights=0.2),
    "moody": dict(exposure=-0.4, contrast=0.35, blacks=-0.3, saturation=-0.25, curve_darks=-0.3,
                  split_shadow_hue=200.0, split_shadow_sat=0.35, split_highlight_hue=35.0,
                  split_highlight_sat=0.25, target_brightness=0.33, brightness_pull=0.4),
    "warm-vivid": dict(temperature=0.45, saturation=0.3, vibrance=0.3, contrast=0.2, sat_orange=0.3,
                       hue_green=-0.3, saturation_adapt=0.6, target_saturation=0.4),
    "cool-matte": dict(temperature=-0.4, tint=0.1, fade=0.4, contrast=-0.2, saturation=-0.15, hue_green=0.3,
                       lum_blue=-0.3, curve_highlights=-0.3, split_shadow_hue=190.0, split_shadow_sat=0.2),
    "film-muted": dict(saturation=-0.5, fade=0.3, split_highlight_hue=50.0, split_highlight_sat=0.35,
                       split_shadow_hue=220.0, split_shadow_sat=0.25, contrast=0.15, curve_lights=0.25,
                       saturation_adapt=0.3, target_saturation=0.12),
    "punchy": dict(contrast=0.35, whites=0.3, blacks=-0.35, vibrance=0.4, shadows=0.25, highlights=-0.4,
                   target_brightness=0.5, brightness_pull=0.7, saturation_adapt=0.5, sat_blue=0.3,
                   lum_orange=0.2),
}

#: Per-user spread (standard deviation) around the archetype mixture.
_SPREAD = dict(exposure=0.3, contrast=0.15, highlights=0.15, shadows=0.15, whites=0.12, blacks=0.12,
               curve_shadows=0.12, curve_darks=0.15, curve_lights=0.15, curve_highlights=0.15,
               temperature=0.2, tint=0.1, saturation=0.15, vibrance=0.15, fade=0.08,
               split_highlight_sat=0.08, split_shadow_sat=0.08, split_balance=0.3,
               target_brightness=0.05, brightness_pull=0.15, target_saturation=0.04, saturation_adapt=0.15)
_HSL_SPREAD = 0.25  # a few random HSL bands per user
_HUE_SPREAD = 20.0  # degrees, split-toning hues
_BOUNDS = {"exposure": (-2.0, 2.0), "target_brightness": (0.2, 0.8), "target_saturation": (0.05, 0.6),
           **{k: (0.0, 1.0) for k in ("fade", "split_highlight_sat", "split_shadow_sat",
                                       "brightness_pull", "saturation_adapt")}}

#: Parameters that get per-photo jitter, with their scale (jitter std = jitter * scale).
JITTER_SCALE = dict(exposure=4.0, contrast=2.0, highlights=2.0, shadows=2.0, temperature=2.0, tint=2.0,
                    saturation=2.0, vibrance=2.0)


def _clip(name: str, value: float) -> float:
    if name.endswith("_hue"):
        return float(value % 360.0)
    lo, hi = _BOUNDS.get(name, (-1.0, 1.0))
    return float(np.clip(value, lo, hi))


def random_users(count: int, rng: np.random.Generator) -> tuple[list[RetouchParams], list[str]]:
    """``count`` users drawn around :data:`ARCHETYPES`, and each one's dominant archetype name."""
    names = list(ARCHETYPES)
    users, styles = [], []
    for i in range(count):
        weights = rng.dirichlet(np.full(len(names), 0.4))
        main = i if i < len(names) else int(rng.integers(len(names)))  # each archetype appears early
        weights = 0.5 * weights + 0.5 * np.eye(len(names))[main]
        values = {n: float(getattr(RetouchParams(), n)) for n in PARAM_NAMES}
        for w, arch in zip(weights, names, strict=True):
            for k, v in ARCHETYPES[arch].items():
                base = float(getattr(RetouchParams(), k))
                if k.endswith("_hue"):
                    continue
                values[k] += w * (v - base)
        for k in ("split_highlight_hue", "split_shadow_hue"):  # hue of the strongest contributor
            owners = [(w, ARCHETYPES[a][k]) for w, a in zip(weights, names, strict=True) if k in ARCHETYPES[a]]
            values[k] = max(owners)[1] if owners else float(rng.uniform(0, 360))
            values[k] += rng.normal(0, _HUE_SPREAD)
        values["brightness_pull"] += 0.25  # most users pull brightness a little
        values["saturation_adapt"] += 0.15
        for k, sd in _SPREAD.items():
            values[k] += rng.normal(0, sd)
        for k in rng.choice([n for n in PARAM_NAMES if n[:4] in ("hue_", "sat_", "lum_")], 3, replace=False):
            values[str(k)] += rng.normal(0, _HSL_SPREAD)
        users.append(RetouchParams(**{k: _clip(k, v) for k, v in values.items()}))
        styles.append(names[int(np.argmax(weights))])
    return users, styles


def two_user_preset() -> tuple[list[RetouchParams], list[str]]:
    """Two users: one brightens (+0.8 EV), one darkens (-0.8 EV); nothing else."""
    return [RetouchParams(exposure=0.8), RetouchParams(exposure=-0.8)], ["brighten", "darken"]


def user_jitter(user: int, photos: Sequence[int] | np.ndarray, seed: int, jitter: float) -> dict[str, np.ndarray]:
    """Per-photo offsets ``{param: [len(photos)]}`` for one user, seeded by (seed, user, photo):
    the same (user, photo) always gets the same jitter, whatever else is built."""
    photos = np.asarray(photos, dtype=np.int64)
    names = list(JITTER_SCALE)
    scale = np.array([JITTER_SCALE[n] for n in names])
    if jitter <= 0:
        return {n: np.zeros(len(photos), np.float32) for n in names}
    draws = np.stack([np.random.default_rng([seed, 104729, user, int(p)]).standard_normal(len(names))
                      for p in photos]) if len(photos) else np.zeros((0, len(names)))
    offsets = draws * scale * jitter
    return {n: offsets[:, i].astype(np.float32) for i, n in enumerate(names)}


def jittered(params: RetouchParams, offsets: dict[str, np.ndarray]) -> RetouchParams:
    """``params`` with per-photo arrays ``value + offset`` (clipped to each parameter's range)."""
    changes = {}
    for k, off in offsets.items():
        lo, hi = _BOUNDS.get(k, (-1.0, 1.0))
        changes[k] = np.clip(float(getattr(params, k)) + off, lo, hi).astype(np.float32)
    return RetouchParams(**{**{n: getattr(params, n) for n in PARAM_NAMES},
                            "curve_points": params.curve_points, **changes})
