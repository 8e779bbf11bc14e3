"""``piebench list``: installed encoders, enhancers, losses, datasets, metrics and plugins."""

from __future__ import annotations

import click
from tabulate import tabulate

from .. import jsonio
from ..build import first_compatible, pair_instances
from ..contract import build_checked, probe
from ..errors import PluginError
from ..interfaces import BuildContext
from ..plugins import get_manager

_KINDS = {"encoders": "encoder", "enhancers": "enhancer", "losses": "loss", "datasets": "dataset",
          "metrics": "metric", "loggers": "logger"}


def count_parameters(spec, configuration: str) -> int | None:
    """Parameters of a model built with a configuration (None if it cannot be built here).

    Enhancers are built paired with the first compatible encoder (their size depends on the
    preference they consume); encoders with 10 training users (StarEnhancer's count).
    """
    registry = get_manager().registry
    ctx = BuildContext(num_users=10, num_refs=3, image_size=64)
    try:
        if spec.kind == "encoder":
            model = build_checked(spec, ctx, configuration)
        else:
            partner = first_compatible(registry, enhancer=spec.name, preferred=("angular", "star"),
                                       configuration=configuration)
            if partner is None:
                return None
            enc_cfg = configuration if configuration in registry.get("encoder", partner).configurations else None
            pair = pair_instances(registry, partner, spec.name, encoder_config=enc_cfg,
                                  enhancer_config=configuration, ctx=ctx)
            if isinstance(pair, str):
                return None
            model = pair[1]
        return int(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 - a model needing staged weights cannot be counted here
        return None


def _check(manager, kinds: list[str], builtins: bool) -> None:
    """One warning line per component that breaks the contract (strict plugins: an error)."""
    plugins = None if builtins else {p.name for p in manager.plugins.values() if p.distribution != "piebench"}
    for line in probe(manager.registry, kinds, plugins):
        if manager.strict:
            raise PluginError(line)
        click.echo(f"piebench: warning: {line}", err=True)


@click.command("list")
@click.argument("what", required=False, default="all",
                type=click.Choice(["all", "encoders", "enhancers", "losses", "datasets", "metrics", "loggers", "plugins"]))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--params/--no-params", default=None,
              help="Count parameters of small and paper configurations (default: on with --json for models).")
@click.option("--check", type=click.Choice(["plugins", "all", "none"]), default="plugins", show_default=True,
              help="Build each listed component of third-party plugins (all: built-ins too) at its small "
                   "configuration, run it on a tiny input, and warn about wrong types or output shapes.")
def list_cmd(what: str, as_json: bool, params: bool | None, check: str) -> None:
    """Show what is installed, which plugin (and version) provides it, and a description."""
    manager = get_manager()
    if what != "plugins" and check != "none":
        _check(manager, [_KINDS[k] for k in (_KINDS if what == "all" else [what])], check == "all")
    if what == "plugins":
        rows = [{"plugin": p.name, "module": p.module, "distribution": p.distribution, "version": p.version,
                 "hooks": ", ".join(p.hooks), "status": f"error: {p.error}" if p.error else "ok"}
                for p in sorted(manager.plugins.values(), key=lambda p: p.name)]
        click.echo(jsonio.dumps(rows, indent=2) if as_json else tabulate(rows, headers="keys", tablefmt="github"))
        return
    kinds = list(_KINDS) if what == "all" else [what]
    count = params if params is not None else (as_json and what in ("encoders", "enhancers"))
    out: dict[str, list] = {}
    for kind_name in kinds:
        rows = []
        for spec in manager.registry.all(_KINDS[kind_name]):
            row = {"name": spec.name, "plugin": spec.plugin, "plugin_version": spec.plugin_version,
                   "version": spec.version, "description": spec.description, "paper": spec.paper,
                   "configurations": list(spec.configurations)}
            if count and spec.kind in ("encoder", "enhancer"):
                row["parameters"] = {c: count_parameters(spec, c) for c in spec.configurations or ["default"]}
            if as_json:
                row["meta"] = {k: v for k, v in spec.declared().items()
                               if isinstance(v, str | int | float | list | tuple | bool | dict)}
            rows.append(row)
        out[kind_name] = rows
    if as_json:
        click.echo(jsonio.dumps(out if what == "all" else out[what], indent=2, default=str))
        return
    for kind_name, rows in out.items():
        click.echo(f"\n{kind_name}:")
        table = [{"name": r["name"], "plugin": f"{r['plugin']} {r['plugin_version']}".strip(),
                  "description": r["description"], "paper": r["paper"],
                  **({"parameters": ", ".join(f"{k}: {v:,}" if v else f"{k}: –" for k, v in r["parameters"].items())}
                     if "parameters" in r else {})} for r in rows]
        click.echo(tabulate(table, headers="keys", tablefmt="github") if table else "(none)")
