"""One-off: move records' evaluation-spec hash to the formula without the metric list.

    python leaderboards/migrate_eval_hash.py DIR [DIR ...]          # rewrite, then print a summary
    python leaderboards/migrate_eval_hash.py --check DIR [DIR ...]  # only say what it would do

Until issue 12 ``record["protocol"]["eval_hash"]`` hashed the whole ``eval`` table, metric list
included, so adding a metric split a leaderboard. It now leaves the metric list out
(``piebench.config.eval_hash``). For every ``record.json`` under each DIR (a runs directory or
an archive such as ``leaderboards/records``) this script rebuilds the run's ``eval`` table and
dataset recipe hash, recomputes the OLD hash and compares it with the stored one:

* stored == old: the record is rewritten (atomically) with the new hash;
* stored == new: already migrated, left as is (running the script twice changes nothing);
* neither: reported and left untouched (exit status 1), e.g. a protocol changed since the run.

Where it reads from: the run's ``config.json`` when present (a runs directory), else the
protocol named in the record, re-resolved with the record's ``eval.*`` / ``refs=`` /
``dataset=`` overrides (an archive; the protocol's version must be the record's). The metric
list tried for the old hash is the config's, else the record's ``metric_variants`` order, else
the protocol's. The dataset recipe hash comes from ``manifest.json`` when present, else from
building the dataset (pie-synth: its cached store).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from piebench import config as C
from piebench.errors import PiebenchError
from piebench.runs import atomic_write_json


def old_eval_hash(cfg: dict, data_recipe_hash: str) -> str:
    """The formula before issue 12: every ``eval`` key, the metric list included."""
    spec = dict(cfg["eval"])
    spec["data_recipe_hash"] = data_recipe_hash
    spec["protocol"] = [cfg["protocol"]["name"], cfg["protocol"]["version"]]
    return C.canonical_hash(spec)


#: protocol files given with --protocol-file, by (name, version): older versions than the installed ones
PROTOCOL_FILES: dict[tuple[str, int], str] = {}


def _resolved(record: dict) -> dict:
    """The run's configuration re-resolved from its protocol and its evaluation overrides."""
    proto = record["protocol"]
    source = PROTOCOL_FILES.get((proto["name"], int(proto["version"])), proto["name"])
    sets, refs, dataset = [], None, None
    for item in record.get("overrides") or []:
        if item.startswith("eval."):
            sets.append(item)
        elif item.startswith("refs="):
            refs = int(item.split("=", 1)[1])
        elif item.startswith("dataset="):
            dataset = item.split("=", 1)[1]
    cfg = C.resolve(source, encoder=record["encoder"]["name"], enhancer=record["enhancer"]["name"],
                    seed=int(record.get("seed", 0)), sets=sets, refs=refs, dataset=dataset)
    if cfg["protocol"]["version"] != proto["version"]:
        raise PiebenchError(f"protocol '{proto['name']}' is now v{cfg['protocol']['version']}, the record is "
                            f"v{proto['version']}: run the script where that version is installed, or on the "
                            "runs directory (config.json), or give that version with --protocol-file")
    return cfg


_RECIPES: dict[str, str] = {}


def _recipe_hash(run_dir: Path, cfg: dict) -> str:
    manifest = run_dir / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())["recipe_hash"]
    key = C.canonical_hash(cfg["eval"])
    if key not in _RECIPES:
        from piebench.build import build_dataset
        from piebench.plugins import get_registry

        _RECIPES[key] = build_dataset(cfg, get_registry()).recipe_hash
    return _RECIPES[key]


def migrate_record(run_dir: Path, record: dict) -> tuple[str, str]:
    """(``"migrated"`` | ``"current"`` | ``"unverified"``, new hash or reason) for one record;
    the caller writes ``record`` (updated in place) when migrated."""
    stored = record["protocol"].get("eval_hash", "")
    cfg_path = run_dir / "config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else _resolved(record)
    recipe = _recipe_hash(run_dir, cfg)
    new = C.eval_hash(cfg, recipe)
    if stored == new:
        return "current", new
    lists = [cfg["eval"].get("metrics", [])]
    if not cfg_path.exists() and record.get("metric_variants"):
        lists.insert(0, list(record["metric_variants"]))
    for metrics in lists:
        if old_eval_hash({**cfg, "eval": {**cfg["eval"], "metrics": metrics}}, recipe) == stored:
            record["protocol"]["eval_hash"] = new
            return "migrated", new
    return "unverified", f"stored eval_hash {stored} is neither the old ({old_eval_hash(cfg, recipe)}) nor the new " \
                         f"({new}) hash of the rebuilt evaluation spec; left untouched"


def migrate(dirs: list[Path], check: bool = False, echo: Any = print) -> dict[str, int]:
    """Migrate every record.json under ``dirs``; counts per outcome."""
    counts = {"migrated": 0, "current": 0, "unverified": 0}
    for root in dirs:
        for path in sorted(root.rglob("record.json")):
            record = json.loads(path.read_text())
            try:
                outcome, detail = migrate_record(path.parent, record)
            except (PiebenchError, KeyError, ValueError, OSError) as err:
                outcome, detail = "unverified", f"{type(err).__name__}: {err}"
            counts[outcome] += 1
            if outcome == "migrated" and not check:
                atomic_write_json(path, record)
            if outcome != "current":
                echo(f"{path}: {outcome}{' (dry run)' if check and outcome == 'migrated' else ''}: {detail}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="runs directories or record archives")
    parser.add_argument("--check", action="store_true", help="report only, write nothing")
    parser.add_argument("--protocol-file", action="append", default=[], type=Path,
                        help="a protocol .toml of an older version than the installed one (repeatable)")
    args = parser.parse_args(argv)
    for path in args.protocol_file:
        proto = C.load_protocol(str(path))
        PROTOCOL_FILES[(proto["name"], int(proto["version"]))] = str(path)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"migrate_eval_hash: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    counts = migrate(args.dirs, check=args.check)
    print(f"migrate_eval_hash: {counts['migrated']} migrated{' (dry run)' if args.check else ''}, "
          f"{counts['current']} already current, {counts['unverified']} unverified (left untouched)")
    return 1 if counts["unverified"] else 0


if __name__ == "__main__":
    sys.exit(main())
