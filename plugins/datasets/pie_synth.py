"""``pie-synth``: the embedded dataset. 32 real photographs (scenes) -- the 8 that ship with
installed packages (scikit-image, matplotlib, scikit-learn) and the 24 of the Kodak suite that
ship with this plugin (:mod:`.kodak_scenes`) -- cropped at several scales, retouched by synthetic
users whose true :class:`~piebench.data.retouch.RetouchParams` are known.

The default split holds out 8 scenes (:data:`TEST_SCENES`: 2 package photographs, 6 Kodak, of
varied content: food, an animal, objects, machines, a landscape, a portrait, sky, birds); the
same test scenes serve seen and unseen users.

The store (every version of every crop) is built once per recipe and cached
(:mod:`piebench.data.store`); the train/test split is by scene and is not part of the store,
so the k folds over scenes share one store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from piebench import hookimpl
from piebench.data import PhotoInfo, PieDataset, UserInfo
from piebench.data import store as image_store
from piebench.data.retouch import PARAM_NAMES, retouch
from piebench.data.synth import (
    SCENES,
    crop_boxes,
    jittered,
    random_users,
    render_crops,
    scene,
    scene_names,
    split_scenes,
    two_user_preset,
    user_jitter,
)
from piebench.errors import UsageError

from . import kodak_scenes

#: Bumped whenever the pixels a recipe produces change (retouch engine, crops, user draws, scenes).
SYNTH_VERSION = "2"
#: Every scene, in a fixed order (photo ids and each scene's crop seed follow it): the 8
#: package photographs, then kodim01 ... kodim24.
CATALOGUE = (*SCENES, *kodak_scenes.KODAK_SCENES)
CATALOGUE_NAMES = tuple(s.name for s in CATALOGUE)
#: The default held-out scenes: coffee (food), chelsea (a cat), kodim03 (hats: saturated
#: objects), kodim05 (motorbikes: fine detail), kodim13 (a mountain stream), kodim15 (a child's
#: face), kodim20 (an aeroplane against the sky), kodim23 (parrots).
TEST_SCENES = ("coffee", "chelsea", "kodim03", "kodim05", "kodim13", "kodim15", "kodim20", "kodim23")
USER_MODES = ("random", "two-user")
_CHUNK_PIXELS = 1 << 20  # photos retouched per call: about 12 MB of float32


def _threads() -> int:
    """Threads that build a store: ``PIEBENCH_BUILD_THREADS``, else the CPUs (at most 8)."""
    value = os.environ.get("PIEBENCH_BUILD_THREADS", "")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise UsageError(f"PIEBENCH_BUILD_THREADS must be a whole number, got '{value}'") from None
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def build_pie_synth(ctx: Any = None, *, resolution: int = 64, crops_per_scene: int = 40, seen_users: int = 12,
                    unseen_users: int = 8, test_scenes: Sequence[str] | None = None, folds: int = 0,
                    fold: int = 0, users: str = "random", seed: int = 0, jitter: float = 0.02,
                    scenes: Sequence[str] | None = None, min_crop: float = 0.35, max_crop: float = 1.0,
                    train_users: int | None = None) -> PieDataset:
    """Build (or load from the cache) the pie-synth store and return it as a :class:`PieDataset`.

    resolution: side of the square crops in pixels; crops_per_scene: crops of each scene;
    seen_users / unseen_users: users that train and test / test only (users are ordered seen
    first); test_scenes: held-out scenes (default: those of :data:`TEST_SCENES` among ``scenes``;
    ignored when ``folds`` > 0, which takes fold ``fold`` of a k-fold partition over scenes); users: ``random`` (archetype-mixture users) or
    ``two-user`` (one +0.8 EV user, one -0.8 EV user, no unseen users, no content terms, no
    jitter); jitter: per-photo parameter jitter (0 = none); scenes: a subset of scenes;
    train_users: only the first ``train_users`` seen users train, the other seen users are
    tested as unseen (same store, same held-out users u00...: the training-users curve).
    """
    if users not in USER_MODES:
        raise UsageError(f"pie-synth users must be one of {', '.join(USER_MODES)}, got '{users}'")
    resolution, crops_per_scene = int(resolution), int(crops_per_scene)
    if resolution < 8 or crops_per_scene < 1:
        raise UsageError(f"pie-synth needs resolution >= 8 and crops_per_scene >= 1, got {resolution}, {crops_per_scene}")
    if users == "two-user":
        seen_users, unseen_users, jitter = 2, 0, 0.0
    seen_users, unseen_users, jitter = int(seen_users), int(unseen_users), float(jitter)
    if seen_users < 1 or unseen_users < 0:
        raise UsageError(f"pie-synth needs seen_users >= 1 and unseen_users >= 0, got {seen_users}, {unseen_users}")
    if not 0 <= jitter <= 0.5:
        raise UsageError(f"pie-synth jitter must be in [0, 0.5], got {jitter}")
    names = scene_names(scenes, CATALOGUE)
    if test_scenes is None:
        test_scenes = [t for t in TEST_SCENES if t in names]
    test = split_scenes(names, test_scenes, int(folds), int(fold), CATALOGUE)
    store_recipe = {
        "dataset": "pie-synth", "synth_version": SYNTH_VERSION, "resolution": resolution,
        "crops_per_scene": crops_per_scene, "scenes": names, "min_crop": float(min_crop),
        "max_crop": float(max_crop), "users": users, "seen_users": seen_users,
        "unseen_users": unseen_users, "seed": int(seed), "jitter": jitter,
    }
    if any(n.startswith("kodim") for n in names):  # the files and how they were encoded
        store_recipe["kodak"] = {"encoding": kodak_scenes.ENCODING, "sha256sums": kodak_scenes.files_digest()}
    if train_users is not None and (not isinstance(train_users, int) or isinstance(train_users, bool)
                                    or not 1 <= train_users <= seen_users):
        raise UsageError(f"pie-synth train_users must be an integer in 1..{seen_users} (the seen users), "
                         f"got {train_users!r}")
    versions, meta = image_store.build_or_load(store_recipe, lambda allocate: _fill(store_recipe, allocate))
    recipe = {**store_recipe, "test_scenes": test, "folds": int(folds), "fold": int(fold)}
    if train_users is not None:  # only when given, so that other recipes keep their hashes
        recipe["train_users"] = int(train_users)
    photos = [PhotoInfo(p["id"], p["name"], p["scene"], "test" if p["scene"] in test else "train")
              for p in meta["photos"]]
    user_list = [UserInfo(u["id"], u["name"], u["seen"] and (train_users is None or u["id"] < train_users))
                 for u in meta["users"]]
    info = {
        "sources": [{"scene": s, "source": scene(s, CATALOGUE).source, "licence": scene(s, CATALOGUE).licence}
                    for s in names],
        "user_styles": {u["name"]: u["style"] for u in meta["users"]},
        "store": meta["path"], "store_hash": meta["recipe_hash"],
        "build_seconds": meta["build_seconds"], "cache_hit": meta["cache_hit"],
    }
    return PieDataset(name="pie-synth", versions=versions, users=user_list, photos=photos, recipe=recipe,
                      recipe_hash=image_store.recipe_hash(recipe), param_names=list(meta["param_names"]),
                      user_params=np.asarray(meta["user_params"], np.float32), info=info)


def _fill(recipe: dict[str, Any], allocate: Any) -> dict[str, Any]:
    """Write every crop (version 0) and every user's retouch of it into the store."""
    seed, res = recipe["seed"], recipe["resolution"]
    if recipe["users"] == "two-user":
        params, styles = two_user_preset()
    else:
        params, styles = random_users(recipe["seen_users"] + recipe["unseen_users"], np.random.default_rng([seed, 3]))
    n_photos = len(recipe["scenes"]) * recipe["crops_per_scene"]
    versions = allocate((1 + len(params), n_photos, res, res, 3))
    photos: list[dict[str, Any]] = []
    for name in recipe["scenes"]:
        image = scene(name, CATALOGUE).load()
        rng = np.random.default_rng([seed, 2, CATALOGUE_NAMES.index(name)])  # a scene's crops ignore other scenes
        boxes = crop_boxes(image.shape[0], image.shape[1], recipe["crops_per_scene"], rng,
                           recipe["min_crop"], recipe["max_crop"])
        for i, (box, crop) in enumerate(zip(boxes, render_crops(image, boxes, res), strict=True)):
            versions[0, len(photos)] = crop
            photos.append({"id": len(photos), "name": f"{name}-{i:03d}", "scene": name, "box": box.tolist()})
    step = max(1, _CHUNK_PIXELS // (res * res))

    def work(task: tuple[int, int]) -> None:  # one user's retouch of one chunk of photos
        u, start = task
        stop = min(n_photos, start + step)
        x = versions[0, start:stop].astype(np.float32) / np.float32(255.0)
        user = params[u]
        p = jittered(user, user_jitter(u, range(start, stop), seed, recipe["jitter"])) if recipe["jitter"] > 0 else user
        versions[1 + u, start:stop] = np.round(retouch(x, p) * np.float32(255.0)).astype(np.uint8)

    tasks = [(u, start) for u in range(len(params)) for start in range(0, n_photos, step)]
    with ThreadPoolExecutor(max_workers=_threads()) as pool:  # numpy releases the GIL
        for _ in pool.map(work, tasks):
            pass
    n_seen = len(params) if recipe["users"] == "two-user" else recipe["seen_users"]
    users = [{"id": u, "name": styles[u] if recipe["users"] == "two-user" else
              (f"s{u:02d}" if u < n_seen else f"u{u - n_seen:02d}"),
              "seen": u < n_seen, "style": styles[u]} for u in range(len(params))]
    return {"users": users, "photos": photos, "param_names": PARAM_NAMES,
            "user_params": [p.to_vector().tolist() for p in params],
            "params": [p.to_dict() for p in params]}


@hookimpl
def register_datasets(register):
    """Register ``pie-synth``."""
    register(
        "pie-synth", build=build_pie_synth,
        description="32 embedded photos (skimage, matplotlib, sklearn, Kodak) retouched by synthetic users "
                    "with known parameters",
        paper="piebench (embedded; photos from scikit-image, matplotlib, scikit-learn and the Kodak suite)",
        version=SYNTH_VERSION,
        configurations={
            "small": {"resolution": 64, "crops_per_scene": 20},
            "quick": {"resolution": 256, "crops_per_scene": 40, "seen_users": 16, "unseen_users": 8},
            "two-user": {"resolution": 64, "crops_per_scene": 16, "users": "two-user"},
        },
        training_users_param="train_users",
        meta={"scenes": list(CATALOGUE_NAMES), "splits": f"by scene; default test scenes {', '.join(TEST_SCENES)}; folds=k for k-fold"})
