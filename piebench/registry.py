"""The typed registry: every encoder, enhancer, loss, dataset, metric and logger by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError, did_you_mean

KINDS = ("encoder", "enhancer", "loss", "dataset", "metric", "logger")


@dataclass(frozen=True)
class Spec:
    """One registered component.

    kind / name: where it is found; build: ``build(ctx, **params)``; configurations: named
    parameter sets (``small``, ``paper``); description: one line; paper: the reference;
    version: the component's own version; plugin / plugin_version: who registered it;
    meta: free-form data (``piebench list --json`` shows it).
    """

    kind: str
    name: str
    build: Callable[..., Any]
    description: str = ""
    paper: str = ""
    configurations: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    version: str = "1"
    plugin: str = ""
    plugin_version: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def params(self, configuration: str | None = None) -> dict[str, Any]:
        """Keyword parameters of a configuration (``small`` when present, else the first)."""
        if not self.configurations:
            return {}
        if configuration is None:
            configuration = "small" if "small" in self.configurations else next(iter(self.configurations))
        if configuration not in self.configurations:
            raise UsageError(
                f"{self.kind} '{self.name}' has no configuration '{configuration}'; "
                f"choose one of: {', '.join(self.configurations)}")
        return dict(self.configurations[configuration])

    def create(self, ctx: Any = None, configuration: str | None = None, **overrides: Any) -> Any:
        """Build the component with a configuration's parameters and ``overrides``."""
        from .interfaces import BuildContext

        return self.build(ctx if ctx is not None else BuildContext(), **{**self.params(configuration), **overrides})


class Registry:
    """Specs by kind and name; filled by the plugin manager from the registration hooks."""

    def __init__(self) -> None:
        self._specs: dict[str, dict[str, Spec]] = {k: {} for k in KINDS}

    def add(self, spec: Spec) -> None:
        table = self._specs[spec.kind]
        if spec.name in table:
            first = table[spec.name]
            raise ValueError(f"{spec.kind} '{spec.name}' is already registered by plugin '{first.plugin}'")
        table[spec.name] = spec

    def names(self, kind: str) -> list[str]:
        return sorted(self._specs[kind])

    def all(self, kind: str) -> list[Spec]:
        return [self._specs[kind][n] for n in self.names(kind)]

    def has(self, kind: str, name: str) -> bool:
        return name in self._specs[kind]

    def get(self, kind: str, name: str) -> Spec:
        """The spec, or a UsageError listing the valid names."""
        try:
            return self._specs[kind][name]
        except KeyError:
            choices = self.names(kind)
            raise UsageError(
                f"unknown {kind} '{name}'{did_you_mean(name, choices)}; choose one of: "
                f"{', '.join(choices) or '(none installed)'}") from None
