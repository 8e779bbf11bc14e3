"""Protocols, overrides and the resolved run configuration.

A protocol (``piebench/protocols/<name>.toml``, versioned) has an ``[eval]`` table -- the
*evaluation spec*: dataset and its parameters, references per preference, reference draws,
metrics: what makes two results comparable -- and a ``[train]`` table -- the *training
recipe*: named schedules (``two-stage``, ``joint``), each a list of stages with the modules
that train, losses with weights, steps and learning rates per module.

:func:`resolve` turns a protocol plus CLI overrides into a plain, JSON-able config dict;
:func:`eval_hash` / :func:`train_hash` / :func:`run_key` hash its parts.
"""

from __future__ import annotations

import copy
import inspect
import operator
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from . import jsonio
from .errors import PiebenchError, UsageError, did_you_mean
from .hashing import canonical_hash
from .plugins import get_registry

_EVAL_KEYS = {"dataset", "data", "refs", "draws", "max_photos", "seed", "metrics", "batch_photos", "refs_curve",
              "test_resolution"}
_TRAIN_KEYS = {"schedule", "schedules", "batch_users", "per_user", "refs", "checkpoint_every",
               "augment", "encoder_config", "enhancer_config", "threads", "grad_clip", "amp", "channels_last",
               "compile"}
_STAGE_KEYS = {"name", "steps", "train", "losses", "lr", "schedule", "warmup"}
_TOP_KEYS = {"name", "version", "description", "ranking", "eval", "train"}


def protocol_names() -> list[str]:
    """Names of the protocols shipped with piebench."""
    return sorted(p.name[:-5] for p in resources.files("piebench.protocols").iterdir() if p.name.endswith(".toml"))


#: numpy's generators take seeds in [0, 2**32 - 1].
MAX_SEED = 2**32 - 1


def split_list(text: str | None) -> list[str]:
    """``"a,b, c"`` -> ["a", "b", "c"] (empty -> [])."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def given_list(text: str | None, flag: str, example: str) -> list[str]:
    """``split_list`` of an option the user gave (None = not given -> []); a given list with no
    names (``--encoders ,``) is a UsageError rather than "all"."""
    if text is None:
        return []
    items = split_list(text)
    if not items:
        raise UsageError(f"{flag} is empty ('{text}'); name at least one, e.g. {flag} {example}, or leave the "
                         f"option out for all")
    return items


def check_seed(seed: Any, flag: str = "--seed") -> int:
    """``seed`` as an int in [0, 2**32 - 1], else a UsageError."""
    try:
        value = operator.index(seed) if not isinstance(seed, bool) else None
    except TypeError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise UsageError(f"{flag} {seed} is out of range; use an integer from 0 to {MAX_SEED}")
    return int(value)


def load_protocol(name_or_path: str) -> dict[str, Any]:
    """A protocol by name (shipped) or by path to a TOML file, validated."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") or path.exists():
        if not path.is_file():
            raise UsageError(f"protocol file not found: {name_or_path}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise UsageError(f"protocol file {path} is not UTF-8 text ({err.reason} at byte {err.start}); save it "
                             f"as UTF-8") from None
        origin = str(path)
    else:
        names = protocol_names()
        if name_or_path not in names:
            raise UsageError(f"unknown protocol '{name_or_path}'{did_you_mean(name_or_path, names)}; "
                             f"choose one of: {', '.join(names)} (or give a .toml path)")
        text = resources.files("piebench.protocols").joinpath(f"{name_or_path}.toml").read_text()
        origin = f"piebench/protocols/{name_or_path}.toml"
    try:
        proto = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"protocol {origin} is not valid TOML: {err}") from None
    _validate_protocol(proto, origin)
    return proto


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise UsageError(f"{where}: unknown key '{key}'{did_you_mean(key, sorted(allowed))}; "
                             f"allowed: {', '.join(sorted(allowed))}")


def _validate_protocol(proto: dict, origin: str) -> None:
    _check_keys(proto, _TOP_KEYS, origin)
    for key in ("name", "version", "eval", "train"):
        if key not in proto:
            raise UsageError(f"{origin}: missing required key '{key}'")
    _check_keys(proto["eval"], _EVAL_KEYS, f"{origin} [eval]")
    _check_keys(proto["train"], _TRAIN_KEYS, f"{origin} [train]")
    schedules = proto["train"].get("schedules", {})
    if not schedules:
        raise UsageError(f"{origin} [train]: no schedules defined")
    for sname, sched in schedules.items():
        for i, stage in enumerate(sched.get("stages", [])):
            _check_keys(stage, _STAGE_KEYS, f"{origin} [train.schedules.{sname}] stage {i}")


# -- overrides --------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A CLI value as TOML would read it (numbers, booleans, lists), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise UsageError(f"value nested too deeply: {text[:40]}...") from None


def parse_set(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value)."""
    if "=" not in item:
        raise UsageError(f"--set expects KEY=VALUE (e.g. train.batch_users=4), got '{item}'")
    key, _, value = item.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise UsageError(f"--set: invalid key '{key}' in '{item}'")
    return parts, parse_value(value.strip())


#: A stage's loss weight meaning "the loss's own ``default_weight``" (``--loss NAME`` without a weight).
DEFAULT_WEIGHT = "default"


def parse_loss(item: str) -> tuple[str, float | str]:
    """``NAME[:WEIGHT]`` -> (name, weight); without a weight, :data:`DEFAULT_WEIGHT`."""
    name, sep, weight = item.partition(":")
    name = name.strip()
    if not name:
        raise UsageError(f"--loss expects NAME[:WEIGHT] (e.g. gram:0.01), got '{item}'")
    if not sep:
        return name, DEFAULT_WEIGHT
    try:
        value = float(weight)
    except ValueError:
        raise UsageError(f"--loss {item}: weight '{weight}' is not a number (e.g. gram:0.01)") from None
    if not value >= 0 or value == float("inf"):
        raise UsageError(f"--loss {item}: weight must be a finite number >= 0")
    return name, value


def _set_path(cfg: dict, parts: list[str], value: Any, item: str) -> None:
    node: Any = cfg
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise UsageError(f"--set {item}: '{part}' is not a valid index") from None
            continue
        if part not in node:
            if parts[0] == "eval" and len(parts) > 2 and parts[1] == "data":
                node[part] = {}
            else:
                raise UsageError(f"--set {item}: unknown key '{'.'.join(parts[: i + 1])}'"
                                 f"{did_you_mean(part, sorted(node))}")
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        try:
            index = int(last)
            _check_same_kind(node[index], value, item)
            node[index] = value
        except (ValueError, IndexError):
            raise UsageError(f"--set {item}: '{last}' is not a valid index") from None
        return
    data_param = parts[:2] == ["eval", "data"] or parts[:2] == ["encoder", "params"] or parts[:2] == ["enhancer", "params"]
    optional = (len(parts) == 2 and ((parts[0] == "eval" and last in _EVAL_KEYS)
                                     or (parts[0] == "train" and last in _TRAIN_KEYS)))
    if last not in node and not data_param and not optional:
        raise UsageError(f"--set {item}: unknown key '{'.'.join(parts)}'{did_you_mean(last, sorted(node))}; "
                         f"known here: {', '.join(sorted(node))}")
    if last in node:
        _check_same_kind(node[last], value, item)
    node[last] = value


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "empty"


def _check_same_kind(old: Any, value: Any, item: str) -> None:
    """Refuse an override that changes a key's kind (a table, a list, a number, ...)."""
    if old is None or _kind(old) == _kind(value):
        return
    hint = " (set one of its keys, e.g. KEY.NAME=VALUE)" if isinstance(old, dict) else ""
    hint = " (set one element, e.g. KEY.0=VALUE, or give a whole [list])" if isinstance(old, list) else hint
    raise UsageError(f"--set {item}: this key holds {_kind(old)}, not {_kind(value)}{hint}")


def resolve(protocol: str | dict, *, encoder: str, enhancer: str, schedule: str | None = None,
            refs: int | None = None, losses: list[str] = (), lr_encoder: float | None = None,
            lr_enhancer: float | None = None, steps: int | None = None, seed: int = 0,
            device: str = "cpu", sets: list[str] = (), blind: bool = False, pretrained: bool = False,
            encoder_config: str | None = None, enhancer_config: str | None = None,
            dataset: str | None = None, amp: str | None = None, channels_last: bool = False,
            compile: bool = False, store_device: str = "auto", store_fraction: float | None = None,
            metrics: list[str] = ()) -> dict[str, Any]:
    """The full run configuration from a protocol and the CLI's overrides.

    ``amp`` / ``channels_last`` / ``compile`` change the numerics, so they join ``train`` (and
    the run key) only when set; ``store_device`` / ``store_fraction`` say where the image store
    lives, which never changes a batch, so they stay out of the run key like ``device``.
    ``metrics`` are computed besides the protocol's ``eval.metrics`` (not part of the eval hash:
    the run stays in the same leaderboard table).
    """
    proto = load_protocol(protocol) if isinstance(protocol, str) else copy.deepcopy(protocol)
    cfg = _base_config(proto, encoder=encoder, enhancer=enhancer, schedule=schedule, seed=seed, device=device,
                       blind=blind, pretrained=pretrained, encoder_config=encoder_config,
                       enhancer_config=enhancer_config, store_device=store_device)
    if store_fraction is not None:
        cfg["store_fraction"] = float(store_fraction)
    for key, value in (("amp", amp), ("channels_last", channels_last), ("compile", compile)):
        if value:
            cfg["train"][key] = value
            cfg["overrides"].append(f"{key}={value}")
    cfg["eval"].setdefault("data", {})
    if dataset:
        _set_dataset(cfg, dataset, proto["eval"].get("data") or {})
    if refs is not None:
        _set_refs(cfg, refs)
    if steps is not None:
        _set_steps(cfg, steps)
    for item in losses:
        _set_loss(cfg, item)
    _set_learning_rates(cfg, {"encoder": lr_encoder, "enhancer": lr_enhancer})
    for item in sets:
        parts, value = parse_set(item)
        _set_path(cfg, parts, value, item)
        cfg["overrides"].append(item)
    # after --set, so `--set eval.metrics=[...]` replaces the protocol's list, not --metric's additions
    cfg["eval"]["metrics"] = list(dict.fromkeys([*cfg["eval"].get("metrics", []), *metrics]))
    check_seed(cfg["seed"], "seed")
    check_seed(cfg["eval"].get("seed", 0), "eval.seed")
    _validate_resolved(cfg)
    cfg["versions"] = model_versions(encoder, enhancer)
    return cfg


def _base_config(proto: dict, *, encoder: str, enhancer: str, schedule: str | None, seed: int, device: str,
                 blind: bool, pretrained: bool, encoder_config: str | None, enhancer_config: str | None,
                 store_device: str) -> dict[str, Any]:
    """The protocol's configuration with the chosen schedule's stages and models, before overrides."""
    train = copy.deepcopy(proto["train"])
    sched_name = schedule or train.get("schedule", "two-stage")
    schedules = train.pop("schedules")
    if sched_name not in schedules:
        raise UsageError(f"unknown schedule '{sched_name}'{did_you_mean(sched_name, sorted(schedules))}; "
                         f"choose one of: {', '.join(sorted(schedules))}")
    train["schedule"] = sched_name
    train["stages"] = copy.deepcopy(schedules[sched_name]["stages"])
    encoder_config = encoder_config or train.get("encoder_config", "small")
    enhancer_config = enhancer_config or train.get("enhancer_config", "small")
    train.pop("encoder_config", None)
    train.pop("enhancer_config", None)
    return {
        "protocol": {"name": proto["name"], "version": proto["version"],
                     "description": proto.get("description", ""), "ranking": proto.get("ranking", True)},
        "encoder": {"name": encoder, "configuration": encoder_config, "pretrained": bool(pretrained), "params": {}},
        "enhancer": {"name": enhancer, "configuration": enhancer_config, "params": {}},
        "blind": bool(blind),
        "seed": check_seed(seed),
        "device": device,
        "store_device": store_device,
        "eval": copy.deepcopy(proto["eval"]),
        "train": train,
        "overrides": [],
    }


def _set_dataset(cfg: dict, dataset: str, protocol_data: dict[str, Any]) -> None:
    """``--dataset NAME[:ROOT]``: the dataset, its root, and the protocol's data keys it takes over."""
    name, _, arg = dataset.partition(":")
    cfg["eval"]["dataset"] = name
    cfg["eval"]["data"] = {**({"root": arg} if arg else {}), **inherited_data(name, protocol_data)}
    cfg["overrides"].append(f"dataset={dataset}")


def _set_refs(cfg: dict, refs: int) -> None:
    """``--refs N``: references per preference, in training and evaluation alike."""
    if refs < 1:
        raise UsageError(f"--refs must be at least 1, got {refs}")
    cfg["train"]["refs"] = cfg["eval"]["refs"] = int(refs)
    cfg["overrides"].append(f"refs={refs}")


def _set_steps(cfg: dict, steps: int) -> None:
    """``--steps N``: the total spread over the stages in proportion to their steps (each at least 1)."""
    if steps < 1:
        raise UsageError(f"--steps must be at least 1, got {steps}")
    stages = cfg["train"]["stages"]
    total = sum(s["steps"] for s in stages)
    left = steps
    for i, stage in enumerate(stages):
        n = left if i == len(stages) - 1 else max(1, round(stage["steps"] * steps / total))
        stage["steps"] = max(1, min(n, left - (len(stages) - 1 - i)))
        left -= stage["steps"]
    cfg["overrides"].append(f"steps={steps}")


def _set_loss(cfg: dict, item: str) -> None:
    """``--loss NAME[:WEIGHT]``: add (or, weight 0, drop) a loss in every stage that trains the enhancer."""
    name, weight = parse_loss(item)
    for stage in cfg["train"]["stages"]:
        if "enhancer" in stage["train"]:
            if weight == 0:
                stage["losses"].pop(name, None)
            else:
                stage["losses"][name] = weight
    cfg["overrides"].append(f"loss.{name}={weight}")


def _set_learning_rates(cfg: dict, rates: dict[str, float | None]) -> None:
    """``--lr-encoder`` / ``--lr-enhancer``: the module's rate in every stage that trains the enhancer."""
    for key, value in rates.items():
        if value is None:
            continue
        if not value > 0:
            raise UsageError(f"--lr-{key} must be > 0, got {value}")
        for stage in cfg["train"]["stages"]:
            if "enhancer" in stage["train"] and key in stage["lr"]:
                stage["lr"][key] = float(value)
        cfg["overrides"].append(f"lr.{key}={value}")


def inherited_data(dataset: str, protocol_data: dict[str, Any]) -> dict[str, Any]:
    """The protocol's ``eval.data`` keys a dataset named with ``--dataset`` takes over.

    A key is taken when the dataset's build function names it as a parameter whose default has
    the same type as the protocol's value (or, with a default of None, whose annotation names
    that type, as fivek's ``resolution: int | None``): ``resolution`` (an int for every image dataset)
    carries over, so the smoke protocol stays at 64 px on ``folder:PATH``; keys that mean
    something else there (pie-synth's user counts vs a folder's list of user names) or that it
    does not take are dropped. ``resolution`` comes first; ``--set eval.data.KEY=...`` still
    overrides any of them. An unknown dataset takes nothing (building it reports the name).
    """
    try:
        params = inspect.signature(get_registry().get("dataset", dataset).build).parameters
    except (PiebenchError, TypeError, ValueError):
        return {}
    out = {}
    for key in sorted(protocol_data, key=lambda k: k != "resolution"):
        p = params.get(key)
        if key == "root" or p is None or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        value, default = protocol_data[key], p.default
        if default is None:
            named = re.findall(r"[A-Za-z_]+", str(p.annotation))
            fits = type(value).__name__ in named
        else:
            fits = default is not p.empty and type(default) is type(value)
        if fits:
            out[key] = copy.deepcopy(value)
    return out


def model_versions(encoder: str, enhancer: str) -> dict[str, str]:
    """The registered versions of the two models: part of the run key, so that a sweep never
    reuses (nor a resume continues) a run of an older architecture. Unknown names are left out
    (building the run reports them)."""
    registry, out = get_registry(), {}
    for kind, name in (("encoder", encoder), ("enhancer", enhancer)):
        try:
            out[kind] = str(registry.get(kind, name).version)
        except PiebenchError:
            pass
    return out


def _validate_resolved(cfg: dict) -> None:
    try:  # config.json must be strict JSON: no NaN or infinity anywhere
        jsonio.finite(cfg, non_finite="refuse")
    except jsonio.NonFiniteError as err:
        raise UsageError(f"configuration value {err}; use a finite number (--set or the protocol file)") from None
    ev, tr = cfg["eval"], cfg["train"]
    for where, key in (("eval", "refs"), ("train", "refs"), ("eval", "draws"), ("train", "batch_users"),
                       ("train", "per_user"), ("train", "checkpoint_every")):
        value = cfg[where].get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(f"{where}.{key} must be an integer >= 1, got {value!r}")
    if tr["per_user"] < 2:
        raise UsageError("train.per_user must be at least 2 so that every anchor has a positive")
    if ev.get("test_resolution", "store") not in ("store", "full"):
        raise UsageError(f"eval.test_resolution must be 'store' (the store's fixed size) or 'full' (each test "
                         f"photo at its own resolution), got {ev['test_resolution']!r}")
    if not isinstance(tr["stages"], list) or not all(isinstance(s, dict) for s in tr["stages"]) or not tr["stages"]:
        raise UsageError("train.stages must be a non-empty list of stage tables")
    for i, stage in enumerate(tr["stages"]):
        for key, kind in (("train", list), ("losses", dict), ("lr", dict)):
            if not isinstance(stage.get(key, kind()), kind):
                raise UsageError(f"train.stages.{i}.{key} must be {'a list' if kind is list else 'a table'}, "
                                 f"got {stage[key]!r}")
        if not isinstance(stage.get("steps"), int) or stage["steps"] < 1:
            raise UsageError(f"train.stages.{i}.steps must be an integer >= 1, got {stage.get('steps')!r}")
        for mod in stage.get("train", []):
            if mod not in ("encoder", "enhancer"):
                raise UsageError(f"train.stages.{i}.train: unknown module '{mod}' (encoder or enhancer)")
        for name, weight in stage.get("losses", {}).items():
            if weight != DEFAULT_WEIGHT and (not isinstance(weight, int | float) or not weight >= 0):
                raise UsageError(f"train.stages.{i}.losses.{name} must be a number >= 0 or "
                                 f"\"{DEFAULT_WEIGHT}\", got {weight!r}")
        for mod, lr in stage.get("lr", {}).items():
            if not isinstance(lr, int | float) or lr <= 0:
                raise UsageError(f"train.stages.{i}.lr.{mod} must be a number > 0, got {lr!r}")
    if not ev.get("metrics"):
        raise UsageError("eval.metrics is empty")
    if not isinstance(ev["metrics"], list) or not all(isinstance(m, str) for m in ev["metrics"]):
        raise UsageError(f"eval.metrics must be a list of metric names, got {ev['metrics']!r}")
    photos = ev.get("max_photos")
    if photos is not None and (not isinstance(photos, int) or isinstance(photos, bool) or photos < 1):
        raise UsageError(f"eval.max_photos must be an integer >= 1, got {photos!r}")
    threads = tr.get("threads", 0)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise UsageError(f"train.threads must be an integer >= 0 (0 = torch's default), got {threads!r}")
    if tr.get("amp") not in (None, "bf16", "fp16"):
        raise UsageError(f"train.amp must be bf16 or fp16 (or absent for float32), got {tr.get('amp')!r}")
    if cfg.get("store_device", "auto") not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--store-device must be auto, cpu or cuda, got {cfg.get('store_device')!r}")
    fraction = cfg.get("store_fraction", 0.5)
    if not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise UsageError(f"--store-fraction must be in (0, 1], got {fraction!r}")


#: ``eval`` keys that never make two results incomparable: which metrics a run computes (a run
#: with one more metric still belongs in the same table; a missing value shows as "–").
NOT_COMPARABILITY = ("metrics",)


def eval_hash(cfg: dict, data_recipe_hash: str = "") -> str:
    """What makes two results comparable: protocol, dataset recipe, references, draws, photos.

    Everything in ``cfg["eval"]`` except :data:`NOT_COMPARABILITY` (the metric list), plus the
    dataset's recipe hash and the protocol's name and version. Records written before the metric
    list left this hash are migrated by ``leaderboards/migrate_eval_hash.py``.
    """
    spec = {k: v for k, v in cfg["eval"].items() if k not in NOT_COMPARABILITY}
    spec["data_recipe_hash"] = data_recipe_hash
    spec["protocol"] = [cfg["protocol"]["name"], cfg["protocol"]["version"]]
    return canonical_hash(spec)


def train_hash(cfg: dict) -> str:
    """The training recipe: stages, losses, steps, learning rates, batch, models, blindness."""
    return canonical_hash({"train": cfg["train"], "encoder": cfg["encoder"], "enhancer": cfg["enhancer"],
                           "blind": cfg["blind"]})


def run_key(cfg: dict) -> str:
    """Identity of a run: same key = same config and seed (resume and sweeps skip by it)."""
    return canonical_hash({k: v for k, v in cfg.items()
                           if k not in ("overrides", "device", "store_device", "store_fraction")})
