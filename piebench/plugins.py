"""The plugin manager: loads the ``piebench`` entry-point group and fills the registry.

Built-in plugins come in through the same entry-point group as third-party ones, as one entry
point (``builtins = "piebench_plugins"``): every module ``piebench_plugins/<kind>s/<module>.py``
(names starting with ``_`` skipped) is a plugin named ``<kind>-<module>`` (underscores as
dashes: ``encoder-lab-stats``, ``loss-embedding-l1``), found when piebench starts, so a new
built-in is one file and no reinstall. A plugin that fails to import, declares an unknown hook, has a hook with
a wrong signature, or registers a name twice is reported in one warning line naming it and
skipped; ``PIEBENCH_STRICT_PLUGINS=1`` turns that into an error (for plugin authors).

Lifecycle hooks (``on_run_start``, ``on_step_end``, ``on_eval_end``, ``on_run_end``) go
through :attr:`PluginManager.hook`, which calls each plugin's implementation on its own: one
that raises is reported once (a warning line naming the plugin, and a note in the run's record)
and that plugin's lifecycle hooks are skipped for the rest of the run; in strict mode the run
fails with that line as its recorded reason.

Environment:
  PIEBENCH_DISABLE_PLUGINS  comma-separated plugin (entry-point) names not to load.
  PIEBENCH_LOAD_PLUGINS     comma-separated module paths to load as extra plugins.
  PIEBENCH_STRICT_PLUGINS   1 = a broken plugin is an error, not a warning.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError, RunFailed, first_line
from .registry import KINDS, TYPED_KEYS, Registry, Spec, typed_fields

GROUP = "piebench"
#: The entry point whose value is the package of built-in plugins (see :func:`discover_builtins`).
BUILTINS = "builtins"
_REGISTER_HOOKS = {f"register_{k}s" if k != "loss" else "register_losses": k for k in KINDS}
LIFECYCLE_HOOKS = ("on_run_start", "on_step_end", "on_eval_end", "on_run_end")


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin as ``piebench list plugins`` shows it."""

    name: str
    module: str
    distribution: str = ""
    version: str = ""
    hooks: list[str] = field(default_factory=list)
    error: str = ""


class PluginManager:
    """pluggy's manager plus the registry and the record of what loaded and what failed."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.plugins: dict[str, PluginInfo] = {}
        self.warnings: list[str] = []
        self.strict = os.environ.get("PIEBENCH_STRICT_PLUGINS", "") not in ("", "0", "false")
        self.disabled: set[str] = set()  # plugins whose lifecycle hook raised in this run

    # -- loading -----------------------------------------------------------------------------
    def _fail(self, info: PluginInfo, what: str) -> None:
        info.error = what
        self.plugins[info.name] = info
        line = f"piebench: warning: plugin '{info.name}' ({info.module}) {what}; skipped"
        if self.strict:
            raise PluginError(line.replace("warning: ", "").replace("; skipped", ""))
        self.warnings.append(line)
        print(line, file=sys.stderr)

    def add_module(self, info: PluginInfo, module: Any) -> None:
        """Register a plugin module with pluggy, rejecting unknown hooks and bad signatures."""
        try:
            self.pm.register(module, name=info.name)
        except ValueError as err:  # name already registered
            self._fail(info, f"could not be registered: {err}")
            return
        except pluggy.PluginValidationError as err:
            self._fail(info, f"has an invalid hook: {first_line(err)}")
            return
        unknown = [impl.function.__name__ for caller in self.pm.hook.__dict__.values()
                   if isinstance(caller, pluggy.HookCaller) and not caller.has_spec()
                   for impl in caller.get_hookimpls() if impl.plugin is module]
        if unknown:
            self.pm.unregister(module)
            self._fail(info, f"declares unknown hook(s) {', '.join(unknown)}")
            return
        wrappers = [name for name in LIFECYCLE_HOOKS for impl in getattr(self.pm.hook, name).get_hookimpls()
                    if impl.plugin is module and (impl.hookwrapper or getattr(impl, "wrapper", False))]
        if wrappers:
            self.pm.unregister(module)
            self._fail(info, f"declares lifecycle hook wrapper(s) {', '.join(wrappers)} (plain hooks only)")
            return
        info.hooks = sorted(c.name for c in self.pm.get_hookcallers(module) or [])
        self.plugins[info.name] = info

    def load_entry_points(self) -> None:
        disabled = {s.strip() for s in os.environ.get("PIEBENCH_DISABLE_PLUGINS", "").split(",") if s.strip()}
        # built-ins first, so a third-party plugin can never take a built-in name (first registration wins)
        for ep in sorted(metadata.entry_points(group=GROUP), key=lambda e: (not _is_builtin(e), e.name)):
            if ep.name in disabled or ep.name in self.plugins:
                continue
            dist = getattr(ep, "dist", None)
            distribution, version = (dist.metadata["Name"], dist.version) if dist else ("", "")
            if ep.name == BUILTINS and _is_builtin(ep):
                self._load_builtins(ep.value, disabled, distribution, version)
                continue
            info = PluginInfo(name=ep.name, module=ep.value, distribution=distribution, version=version)
            try:
                module = ep.load()
            except Exception as err:  # noqa: BLE001 - any import failure is reported, not fatal
                self._fail(info, f"failed to import: {type(err).__name__}: {first_line(err)}")
                continue
            self.add_module(info, module)
        for path in (s.strip() for s in os.environ.get("PIEBENCH_LOAD_PLUGINS", "").split(",")):
            if not path or path in self.plugins:
                continue
            info = PluginInfo(name=path, module=path, distribution="(PIEBENCH_LOAD_PLUGINS)")
            try:
                module = importlib.import_module(path)
            except Exception as err:  # noqa: BLE001
                self._fail(info, f"failed to import: {type(err).__name__}: {first_line(err)}")
                continue
            self.add_module(info, module)

    def _load_builtins(self, package: str, disabled: set[str], distribution: str, version: str) -> None:
        """Import and register every built-in plugin module of ``package`` (by plugin name)."""
        try:
            found = discover_builtins(package)
        except Exception as err:  # noqa: BLE001
            self._fail(PluginInfo(BUILTINS, package, distribution, version),
                       f"failed to import: {type(err).__name__}: {first_line(err)}")
            return
        for name, path in found:
            if name in disabled or name in self.plugins:
                continue
            info = PluginInfo(name=name, module=path, distribution=distribution, version=version)
            try:
                module = importlib.import_module(path)
            except Exception as err:  # noqa: BLE001 - any import failure is reported, not fatal
                self._fail(info, f"failed to import: {type(err).__name__}: {first_line(err)}")
                continue
            self.add_module(info, module)

    def collect(self) -> None:
        """Call each plugin's registration hooks, one plugin at a time, into the registry."""
        for hook_name, kind in _REGISTER_HOOKS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():  # registration order (pluggy calls hooks in reverse)
                info = self.plugins.get(impl.plugin_name) or PluginInfo(impl.plugin_name, impl.plugin_name)
                try:
                    impl.function(register=self._register_fn(kind, info))
                except PluginError as err:
                    self._report(info, str(err))
                except Exception as err:  # noqa: BLE001 - a broken plugin must not break the CLI
                    self._report(info, f"raised in {hook_name}: {type(err).__name__}: {first_line(err)}")

    def _report(self, info: PluginInfo, what: str) -> None:
        line = f"piebench: warning: plugin '{info.name}' {what}"
        if self.strict:
            raise PluginError(line.replace("warning: ", ""))
        self.warnings.append(line)
        print(line, file=sys.stderr)

    def _register_fn(self, kind: str, info: PluginInfo):
        def register(name: str, build: Any, *, description: str = "", paper: str = "",
                     configurations: dict | None = None, version: str = "1", meta: dict | None = None,
                     **keys: Any) -> None:
            if not isinstance(name, str) or not name or not callable(build):
                raise PluginError(f"registered a {kind} with an invalid name or builder: {name!r}")
            try:
                typed, unknown = typed_fields(kind, keys)
            except ValueError as err:
                raise PluginError(f"registered {kind} '{name}' with {err}") from None
            if unknown:
                what = (f"registers {kind} '{name}' with unknown key(s) {', '.join(sorted(unknown))} "
                        f"(known: {', '.join(TYPED_KEYS.get(kind, ())) or 'none'}; free-form data goes in meta={{...}}); kept in meta")
                if self.strict:
                    raise PluginError(what)
                self._report(info, what)
            spec = Spec(kind=kind, name=name, build=build, description=description, paper=paper,
                        configurations=dict(configurations or {}), version=str(version),
                        plugin=info.name, plugin_version=info.version, meta={**(meta or {}), **unknown}, **typed)
            try:
                self.registry.add(spec)
            except ValueError as err:
                self._report(info, f"registers a duplicate name: {err}; the second is ignored")

        return register

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def hook(self) -> Any:
        """The hook relay: ``hook.on_step_end(run=..., ...)``; lifecycle hooks are contained."""
        return _ContainedRelay(self)

    def call_lifecycle(self, name: str, **kwargs: Any) -> list[Any]:
        """Call every plugin's ``name`` hook (pluggy's order: last registered first) on its own.

        A hook that raises is reported once and its plugin's lifecycle hooks are skipped until
        the next ``on_run_start``; strict mode fails the run instead (see the module docstring).
        """
        if name == "on_run_start":
            self.disabled.clear()
        results = []
        for impl in reversed(getattr(self.pm.hook, name).get_hookimpls()):
            if impl.plugin_name in self.disabled:
                continue
            try:
                res = impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as err:  # noqa: BLE001 - a plugin's bug must not kill the run
                self._hook_failed(impl.plugin_name, name, err, kwargs.get("run"))
                continue
            if res is not None:
                results.append(res)
        return results

    def _hook_failed(self, plugin: str, hook: str, err: Exception, run: Any) -> None:
        line = f"plugin '{plugin}' raised in {hook}: {type(err).__name__}: {first_line(err)}"
        record = getattr(run, "record", None)
        if self.strict:
            if isinstance(record, dict):  # the record says why, whichever hook it was
                record.update(status="failed", reason=line)
                _save(run)
            raise RunFailed(line) from err
        self.disabled.add(plugin)
        warning = f"piebench: warning: {line}; its lifecycle hooks are skipped for the rest of the run"
        self.warnings.append(warning)
        print(warning, file=sys.stderr)
        if isinstance(record, dict):
            record.setdefault("notes", []).append(f"{line}; its lifecycle hooks were skipped for the rest of the run")
            _save(run)  # kept even when this was the last hook of the run (on_run_end)


class _ContainedRelay:
    """``pm.hook`` with the lifecycle hooks routed through :meth:`PluginManager.call_lifecycle`."""

    def __init__(self, manager: PluginManager) -> None:
        self._manager = manager

    def __getattr__(self, name: str) -> Any:
        if name in LIFECYCLE_HOOKS:
            return functools.partial(self._manager.call_lifecycle, name)
        return getattr(self._manager.pm.hook, name)


def _save(run: Any) -> None:
    """Write ``run``'s record as it is now, through the ``save`` its run context carries (if any)."""
    save = getattr(run, "save", None)
    if callable(save):
        save()


def discover_builtins(package: str) -> list[tuple[str, str]]:
    """(plugin name, module path) of every ``package.<kind>s.<module>``, sorted by name.

    Each subpackage is a kind (``encoders`` -> ``encoder``, ``losses`` -> ``loss``, any new one
    such as ``loggers`` too); modules and subpackages whose names start with ``_`` are helpers.
    """
    pkg = importlib.import_module(package)
    found = []
    for sub in pkgutil.iter_modules(pkg.__path__):
        if not sub.ispkg or sub.name.startswith("_"):
            continue
        kind = sub.name[:-2] if sub.name.endswith("sses") else sub.name.removesuffix("s")
        subpkg = importlib.import_module(f"{package}.{sub.name}")
        for mod in pkgutil.iter_modules(subpkg.__path__):
            if not mod.ispkg and not mod.name.startswith("_"):
                found.append((f"{kind}-{mod.name.replace('_', '-')}", f"{package}.{sub.name}.{mod.name}"))
    return sorted(found)


def _is_builtin(ep: Any) -> bool:
    dist = getattr(ep, "dist", None)
    return bool(dist) and dist.metadata["Name"] == "piebench"


_MANAGER: PluginManager | None = None


def get_manager(reload: bool = False) -> PluginManager:
    """The process-wide plugin manager, loaded on first use."""
    global _MANAGER
    if _MANAGER is None or reload:
        manager = PluginManager()
        manager.load_entry_points()
        manager.collect()
        _MANAGER = manager
    return _MANAGER


def get_registry(reload: bool = False) -> Registry:
    """The registry of every installed plugin's components."""
    return get_manager(reload).registry
