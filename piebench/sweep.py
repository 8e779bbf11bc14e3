"""Sweeps (encoder x enhancer grids) and ablations (one change at a time against a base).

Both skip a configuration whose run key already has a finished record in the runs
directory and resume an unfinished one from its latest checkpoint, so an interrupted sweep
continues where it stopped. An incompatible pair in a grid is listed and skipped.

Ablation deltas are paired per image (photo, user, draw) between the variant and the base
run of the same seed, pooled over seeds, with a bootstrap CI over photos.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from . import config as C
from .build import build_dataset, build_models
from .config import check_seed, split_list
from .errors import PiebenchError, UsageError
from .launch import run_jobs, run_or_reuse
from .plugins import get_manager
from .registry import compatible
from .runs import atomic_write_json, atomic_write_text
from .verdicts import blind_gain, paired_delta


@dataclass
class SweepItem:
    """One planned run and what happened to it.

    status: ``ran`` (trained now), ``resumed`` (continued an unfinished run), ``cached`` (a
    finished run of the same key existed), ``incompatible`` (skipped, ``reason`` says why),
    ``failed`` (``reason`` is the error).
    """

    encoder: str
    enhancer: str
    seed: int
    blind: bool = False
    label: str = ""
    status: str = "planned"
    reason: str = ""
    run_dir: Path | None = None
    record: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2] (each in [0, 2**32 - 1])."""
    try:
        seeds = [int(s) for s in split_list(text)]
    except ValueError:
        raise UsageError(f"--seeds expects comma-separated integers (e.g. 0,1,2), got '{text}'") from None
    if not seeds:
        raise UsageError("--seeds is empty; e.g. --seeds 0,1,2")
    for seed in seeds:
        check_seed(seed, "--seeds")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds has duplicates: {text}")
    return seeds


# -- compatibility --------------------------------------------------------------------------------
class PairChecker:
    """Builds a pair once on the protocol's dataset to see whether it can run (no files written)."""

    def __init__(self, cfg_factory: Callable[[str, str], dict]) -> None:
        self.registry = get_manager().registry
        self.cfg_factory = cfg_factory
        self._dataset = None
        self._cache: dict[tuple[str, str], str | None] = {}
        self.trainable: dict[tuple[str, str], bool] = {}

    def reason(self, encoder: str, enhancer: str) -> str | None:
        """Why ``encoder`` + ``enhancer`` cannot run, or None when it can."""
        key = (encoder, enhancer)
        if key in self._cache:
            return self._cache[key]

        self.registry.get("encoder", encoder)
        self.registry.get("enhancer", enhancer)
        cfg = self.cfg_factory(encoder, enhancer)
        ok, why = compatible(self.registry.get("encoder", encoder), self.registry.get("enhancer", enhancer))
        why = why or None
        if ok:
            if self._dataset is None:
                self._dataset = build_dataset(cfg, self.registry)
            try:
                _, enh = build_models(cfg, self.registry, self._dataset)
                self.trainable[key] = bool(enh.trainable and any(p.requires_grad for p in enh.parameters()))
            except UsageError as err:
                why = str(err)
        self._cache[key] = why
        return why


def plan_pairs(encoders: list[str], enhancers: list[str], cross: bool, checker: PairChecker,
               anchor_enhancer: str = "sa", anchor_encoder: str = "angular") -> list[tuple[str, str, str | None]]:
    """(encoder, enhancer, reason-if-incompatible) in run order.

    Grid: every encoder with every enhancer. ``cross``: every encoder with ``anchor_enhancer``
    (or, when incompatible, the first compatible enhancer of ``enhancers`` then of all
    installed ones) and every enhancer with ``anchor_encoder`` (or the encoder its spec pairs
    with, or the first compatible one), without duplicates.
    """
    if not cross:
        return [(e, h, checker.reason(e, h)) for e in encoders for h in enhancers]
    reg = checker.registry
    out: list[tuple[str, str, str | None]] = []
    seen: set[tuple[str, str]] = set()

    def add(e: str, h: str, why: str | None) -> None:
        if (e, h) not in seen:
            seen.add((e, h))
            out.append((e, h, why))

    all_enh = [anchor_enhancer, *enhancers, *reg.names("enhancer")]
    for e in encoders:
        chosen = next((h for h in dict.fromkeys(all_enh) if reg.has("enhancer", h) and h != "identity"
                       and checker.reason(e, h) is None), None)
        if chosen is None:
            add(e, anchor_enhancer, f"no installed enhancer works with encoder '{e}'")
        else:
            add(e, chosen, None)
    for h in enhancers:
        hint = reg.get("enhancer", h).pairs_with
        all_enc = [anchor_encoder, *([hint] if hint else []), *encoders, *reg.names("encoder")]
        chosen = next((e for e in dict.fromkeys(all_enc) if reg.has("encoder", e)
                       and checker.reason(e, h) is None), None)
        if chosen is None:
            add(anchor_encoder, h, checker.reason(anchor_encoder, h) or f"no installed encoder works with '{h}'")
        else:
            add(chosen, h, None)
    return out


# -- running ---------------------------------------------------------------------------------------
def _execute(item: SweepItem, cfg: dict, runs_dir: Path, progress: bool, echo: Callable[[str], None]) -> None:
    tag = f"{item.encoder} + {item.enhancer}{' (blind)' if item.blind else ''}{f' [{item.label}]' if item.label else ''}, seed {item.seed}"
    echo(f"piebench: {tag} ...")
    try:
        item.status, item.run_dir, item.record = run_or_reuse(cfg, runs_dir, progress)
    except PiebenchError as err:
        item.status, item.reason = "failed", str(err)
    echo(f"piebench: {tag}: {item.status}{f' ({item.reason})' if item.reason else ''}")


def sweep(protocol: str, encoders: list[str], enhancers: list[str], *, seeds: list[int], cross: bool = False,
          steps: int | None = None, sets: list[str] = (), runs_dir: str | Path = "runs", blind_twins: bool = False,
          device: str = "cpu", progress: bool = False, echo: Callable[[str], None] = print,
          launcher: Any = None) -> list[SweepItem]:
    """Run a grid (or ``cross``) of encoder/enhancer pairs over ``seeds``; see :func:`plan_pairs`.

    Without ``launcher`` the runs happen one after another in this process; with a
    :class:`piebench.launch.Launcher` each is a submitit job (local processes or Slurm jobs).
    """
    registry = get_manager().registry
    encoders = encoders or registry.names("encoder")
    enhancers = enhancers or registry.names("enhancer")

    def make(encoder: str, enhancer: str, seed: int = seeds[0], blind: bool = False) -> dict:
        return C.resolve(protocol, encoder=encoder, enhancer=enhancer, steps=steps, seed=seed, device=device,
                         sets=list(sets), blind=blind)

    make(encoders[0], enhancers[0])  # bad protocol / --set fail here, before anything runs
    checker = PairChecker(make)
    runs_dir = Path(runs_dir)
    items: list[SweepItem] = []
    pending: list[tuple[SweepItem, dict]] = []  # for the launcher: every job is submitted after planning

    def submit(item: SweepItem, cfg: dict) -> None:
        if launcher is None:
            _execute(item, cfg, runs_dir, progress, echo)
        else:
            pending.append((item, cfg))

    twins: dict[tuple[str, str], list[tuple[SweepItem, SweepItem]]] = {}
    for enc, enh, why in plan_pairs(encoders, enhancers, cross, checker):
        for seed in seeds:
            item = SweepItem(enc, enh, seed)
            items.append(item)
            if why:
                item.status, item.reason = "incompatible", why
                continue
            submit(item, make(enc, enh, seed))
            consumes = registry.get("enhancer", enh).consumes
            if blind_twins and item.status != "failed" and consumes and not checker.trainable.get((enc, enh), True):
                item.extra["twin_note"] = "no blind twin: the enhancer has nothing to train, so its constant would stay random"
            elif blind_twins and item.status != "failed" and consumes:
                twin = SweepItem(enc, enh, seed, blind=True)
                items.append(twin)
                submit(twin, make(enc, enh, seed, blind=True))
                twins.setdefault((enc, enh), []).append((item, twin))
    if launcher is not None:
        run_jobs(pending, launcher, runs_dir, echo)
    for pairs in twins.values():  # one gain per configuration, over its seeds and the test scenes
        done = [(it, tw) for it, tw in pairs if it.run_dir is not None and tw.run_dir is not None
                and "failed" not in (it.status, tw.status)]
        if not done:
            continue
        gain = blind_gain([it.run_dir for it, _ in done], [tw.run_dir for _, tw in done])
        for it, _ in done:
            it.extra["gain_vs_blind"] = gain
    return items


def _cell(rec: dict | None, group: str, key: str = "psnr") -> str:
    m = ((rec or {}).get("metrics", {}).get(group) or {}).get(key)
    return f"{m['mean']:.2f}" if isinstance(m, dict) and "mean" in m else "–"


def _ci_cell(ci: dict | None, digits: int = 2) -> str:
    """``+0.12 [-0.30, +0.54]``, or ``+0.12 (needs >= 2 seeds)`` when no interval is possible."""
    if not ci:
        return "–"
    if not ci.get("ci"):
        return f"{ci['mean']:+.{digits}f} ({ci.get('verdict', 'no interval')})"
    return f"{ci['mean']:+.{digits}f} [{ci['ci'][0]:+.{digits}f}, {ci['ci'][1]:+.{digits}f}]"


def sweep_table(items: list[SweepItem]) -> str:
    """One row per planned run: status, PSNR seen/unseen, steering, gain over the blind twin."""
    rows = []
    for it in items:
        rec = it.record
        row = {"encoder": it.encoder, "enhancer": it.enhancer + (" (blind)" if it.blind else ""), "seed": it.seed,
               "status": it.status, "PSNR ↑ seen": _cell(rec, "seen"), "PSNR ↑ unseen": _cell(rec, "unseen"),
               "steering ↑ seen": _cell(rec, "seen", "steering")}
        gain = it.extra.get("gain_vs_blind")
        if gain is not None or any("gain_vs_blind" in i.extra for i in items):
            row["gain ↑ seen [95% CI]"] = _ci_cell((gain or {}).get("seen"))
        row["note"] = it.reason or it.extra.get("twin_note") or (str(it.run_dir) if it.run_dir else "")
        rows.append(row)
    return tabulate(rows, headers="keys", tablefmt="github")


# -- ablation ----------------------------------------------------------------------------------------
#: Short ablation keys and what they change.
ABLATION_KEYS = "loss.NAME (weight; 0 removes), lr.encoder, lr.enhancer, refs, schedule, steps, or any --set KEY"


def parse_ablation(items: list[str]) -> list[tuple[str, list[Any]]]:
    """``["loss.gram=0,0.01", "refs=1,3"]`` -> [("loss.gram", [0, 0.01]), ("refs", [1, 3])]."""
    out = []
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects KEY=V1,V2,... (e.g. loss.gram=0,0.01), got '{item}'")
        key, _, values = item.partition("=")
        key = key.strip()
        parts = [v.strip() for v in re.split(r",(?![^\[]*\])", values) if v.strip()]
        if not key or not parts:
            raise UsageError(f"--set {item}: give a key and at least one value")
        out.append((key, [C.parse_value(v) for v in parts]))
    if not out:
        raise UsageError("ablate needs at least one --set KEY=V1,V2 (e.g. --set loss.gram=0,0.01)")
    return out


def _variant_kwargs(base: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``resolve`` keyword arguments of the base with one change."""
    kw = {**base, "losses": list(base.get("losses", ())), "sets": list(base.get("sets", ()))}
    if key.startswith("loss."):
        name = key[5:]
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise UsageError(f"--set {key}={value}: a loss weight must be a number")
        kw["losses"].append(f"{name}:{value}")
    elif key in ("lr.encoder", "lr.enhancer"):
        kw["lr_" + key[3:]] = float(value)
    elif key in ("refs", "steps"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"--set {key}={value}: must be an integer")
        kw[key] = value
    elif key == "schedule":
        kw["schedule"] = str(value)
    else:
        kw["sets"].append(f"{key}={_toml(value)}")
    return kw


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


@dataclass
class Ablation:
    """The result of :func:`ablate`: the base runs, each variant's runs and paired deltas."""

    base: list[SweepItem]
    variants: list[dict[str, Any]]
    settings: dict[str, Any]


def ablate(protocol: str, encoder: str, enhancer: str, changes: list[tuple[str, list[Any]]], *, seeds: list[int],
           steps: int | None = None, sets: list[str] = (), runs_dir: str | Path = "runs", device: str = "cpu",
           progress: bool = False, echo: Callable[[str], None] = print) -> Ablation:
    """Run the base config and each single change over ``seeds``; deltas are paired per image and seed
    (:func:`piebench.verdicts.paired_delta`: an interval over seeds and scenes, none with one seed)."""
    base_kw = {"encoder": encoder, "enhancer": enhancer, "steps": steps, "device": device, "sets": list(sets),
               "losses": []}
    base_key = C.run_key(C.resolve(protocol, seed=seeds[0], **base_kw))
    plans = []
    for key, values in changes:  # resolve everything first: a bad value fails before any training
        for value in values:
            kw = _variant_kwargs(base_kw, key, value)
            cfg = C.resolve(protocol, seed=seeds[0], **kw)
            plans.append((key, value, kw, C.run_key(cfg) == base_key))
    runs_dir = Path(runs_dir)
    base_items = []
    for seed in seeds:
        item = SweepItem(encoder, enhancer, seed, label="base")
        _execute(item, C.resolve(protocol, seed=seed, **base_kw), runs_dir, progress, echo)
        base_items.append(item)
    variants = []
    for key, value, kw, same in plans:
        label = f"{key}={value}"
        entry: dict[str, Any] = {"change": label, "key": key, "value": value, "same_as_base": same, "runs": []}
        if same:
            entry["runs"] = base_items
        else:
            for seed in seeds:
                item = SweepItem(encoder, enhancer, seed, label=label)
                _execute(item, C.resolve(protocol, seed=seed, **kw), runs_dir, progress, echo)
                entry["runs"].append(item)
        pairs = [(v.run_dir, b.run_dir) for v, b in zip(entry["runs"], base_items, strict=True)
                 if v.run_dir is not None and b.run_dir is not None and v.status != "failed" and b.status != "failed"]
        entry["delta"] = {} if same else paired_delta(pairs)
        entry["psnr"] = {g: _mean_over(entry["runs"], g) for g in ("seen", "unseen")}
        variants.append(entry)
    settings = {"protocol": protocol, "encoder": encoder, "enhancer": enhancer, "seeds": seeds, "steps": steps,
                "sets": list(sets), "device": device, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    return Ablation(base=base_items, variants=variants, settings=settings)


def _mean_over(items: list[SweepItem], group: str) -> float | None:
    vals = [((it.record or {}).get("metrics", {}).get(group) or {}).get("psnr", {}).get("mean") for it in items]
    vals = [v for v in vals if isinstance(v, int | float) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def ablation_table(result: Ablation) -> str:
    """Markdown table: one row per change, PSNR and the paired delta vs base with its 95% CI."""
    def psnr(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}"

    base = {g: _mean_over(result.base, g) for g in ("seen", "unseen")}
    rows = [{"change": "base", "PSNR ↑ seen": psnr(base["seen"]), "Δ seen [95% CI]": "",
             "PSNR ↑ unseen": psnr(base["unseen"]), "Δ unseen [95% CI]": "",
             "runs": ", ".join(it.status for it in result.base)}]
    for v in result.variants:
        note = "= base" if v["same_as_base"] else ", ".join(it.status for it in v["runs"])
        rows.append({"change": v["change"], "PSNR ↑ seen": psnr(v["psnr"]["seen"]),
                     "Δ seen [95% CI]": "0 (same config)" if v["same_as_base"] else _ci_cell(v["delta"].get("seen")),
                     "PSNR ↑ unseen": psnr(v["psnr"]["unseen"]),
                     "Δ unseen [95% CI]": "0 (same config)" if v["same_as_base"] else _ci_cell(v["delta"].get("unseen")),
                     "runs": note})
    s = result.settings
    head = (f"Ablation of {s['encoder']} + {s['enhancer']} on {s['protocol']}, seeds {', '.join(map(str, s['seeds']))}: "
            f"Δ = variant - base PSNR (dB), paired per image and per seed; 95% interval over seeds and test "
            f"scenes (needs >= 2 seeds)")
    failed = [f"{it.label} seed {it.seed}: {it.reason}" for v in result.variants for it in v["runs"] if it.status == "failed"]
    failed += [f"base seed {it.seed}: {it.reason}" for it in result.base if it.status == "failed"]
    return "\n".join([head, "", tabulate(rows, headers="keys", tablefmt="github"), *(f"FAILED {f}" for f in failed)])


def ablation_json(result: Ablation) -> dict[str, Any]:
    """The ablation as JSON-ready data (runs by directory)."""
    def runs(items: list[SweepItem]) -> list[dict]:
        return [{"seed": it.seed, "status": it.status, "run_dir": str(it.run_dir) if it.run_dir else None,
                 "reason": it.reason} for it in items]

    return {"kind": "ablation", "settings": result.settings, "base": runs(result.base),
            "variants": [{k: (runs(v) if k == "runs" else v) for k, v in var.items()} for var in result.variants]}


def write_ablation(result: Ablation, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.json`` atomically into ``out_dir``."""
    s = result.settings
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    stem = Path(out_dir) / f"ablate-{s['protocol']}-{s['encoder']}+{s['enhancer']}-{stamp}"
    md, js = stem.with_suffix(".md"), stem.with_suffix(".json")
    atomic_write_text(md, ablation_table(result) + "\n")
    atomic_write_json(js, ablation_json(result))
    return md, js
