"""The typed registry: every encoder, enhancer, loss, dataset, metric and logger by name.

A :class:`Spec` holds what a plugin registered: the builder, its configurations, and the typed
fields the core reads (pairing, roles, metric display); :func:`compatible` decides whether an
encoder and an enhancer can be paired, from their registrations alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError, did_you_mean
from .interfaces import BuildContext

KINDS = ("encoder", "enhancer", "loss", "dataset", "metric", "logger")
ROLES = ("model", "oracle", "baseline")
PREFERENCE_FIELDS = ("vector", "maps", "source")
LOSS_KINDS = ("image", "embedding")

#: The typed register() keywords each kind may pass (``kind`` of a loss is stored as ``loss_kind``);
#: a kind not listed here (a newer one, such as a logger) has none.
TYPED_KEYS: dict[str, tuple[str, ...]] = {
    "encoder": ("role", "provides", "requires", "map_channels", "load_weights"),
    "enhancer": ("role", "consumes", "pairs_with", "full_resolution", "load_weights"),
    "loss": ("kind",),
    "dataset": ("training_users_param",),
    "metric": ("higher_is_better", "label", "digits", "variant"),
}
#: Old meta spellings still accepted: ``oracle=True`` / ``baseline=True`` mean that ``role``.
LEGACY_ROLES = ("oracle", "baseline")


@dataclass(frozen=True)
class Spec:
    """One registered component.

    kind / name: where it is found; build: ``build(ctx, **params)``; configurations: named
    parameter sets (``small``, ``paper``); description: one line; paper: the reference;
    version: the component's own version; plugin / plugin_version: who registered it;
    meta: free-form data the core never reads (``piebench list --json`` shows it).

    Typed fields (``piebench.hookspecs`` documents each per kind):
      role: ``model`` (ranked), ``oracle`` (an encoder that reads the answer: an upper bound) or
        ``baseline`` (an enhancer that learns nothing per user); bounds are shown, not ranked.
      provides (encoders): preference fields it outputs, of ``vector``, ``maps``, ``source``.
      requires (encoders): what each reference carries: ``targets`` and/or ``inputs``.
      map_channels (encoders): channels of each ``maps`` entry at the small configuration, a
        hint for ``piebench list`` (the built instance's ``map_channels`` is what enhancers read).
      consumes (enhancers): preference fields it may read (at most; a configuration may read fewer).
      pairs_with (enhancers): the encoder it is preferably paired with (bench, sweep, list).
      full_resolution (enhancers): applies at any resolution in one pass (curves, LUTs, grids).
      load_weights (encoders/enhancers): ``load_weights(module, path)`` for released weights.
      loss_kind (losses, registered as ``kind``): ``image`` or ``embedding``.
      training_users_param (datasets): the build parameter that sets the number of training users.
      higher_is_better / label / digits / variant (metrics): direction, column heading, decimals
        shown, and which convention the implementation follows.
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
    role: str = "model"
    provides: tuple[str, ...] = ("vector",)
    requires: tuple[str, ...] = ("targets",)
    map_channels: tuple[int, ...] = ()
    consumes: tuple[str, ...] = ("vector",)
    pairs_with: str = ""
    full_resolution: bool = False
    load_weights: Callable[..., Any] | None = None
    loss_kind: str = "image"
    training_users_param: str = ""
    higher_is_better: bool = True
    label: str = ""
    digits: int = 3
    variant: str = ""

    def declared(self) -> dict[str, Any]:
        """The typed fields of this kind plus ``meta``, JSON-friendly (``piebench list --json``)."""
        out: dict[str, Any] = {}
        for key in TYPED_KEYS.get(self.kind, ()):
            value = getattr(self, "loss_kind" if key == "kind" else key)
            out[key] = (value is not None) if key == "load_weights" else (list(value) if isinstance(value, tuple)
                                                                         else value)
        return {**out, **self.meta}

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

    def in_order(self, kind: str) -> list[Spec]:
        """Specs in registration order (built-ins first; a plugin's own order)."""
        return list(self._specs[kind].values())

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


def typed_fields(kind: str, given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split register() keywords into checked Spec fields and the rest (unknown keys).

    Raises ValueError with one line for a value of the wrong type.
    """
    typed: dict[str, Any] = {}
    rest = dict(given)
    for legacy in LEGACY_ROLES:
        if legacy in rest and kind in ("encoder", "enhancer"):
            if rest.pop(legacy):
                typed["role"] = legacy
    for key in TYPED_KEYS.get(kind, ()):
        if key not in rest:
            continue
        value = rest.pop(key)
        target = "loss_kind" if key == "kind" else key
        typed[target] = _checked(key, value, kind)
    return typed, rest


def _checked(key: str, value: Any, kind: str) -> Any:
    def bad(expected: str) -> ValueError:
        return ValueError(f"{kind} keyword {key}={value!r}: expected {expected}")

    if key in ("provides", "consumes", "requires"):
        if isinstance(value, str) or not all(isinstance(v, str) for v in (value or ())):
            raise bad("a list of strings")
        if key != "requires" and set(value or ()) - set(PREFERENCE_FIELDS):
            raise bad(f"a subset of {', '.join(PREFERENCE_FIELDS)}")
        return tuple(value or ())
    if key == "map_channels":
        value = (value,) if isinstance(value, int) else tuple(value or ())
        if not all(isinstance(v, int) for v in value):
            raise bad("an int or a list of ints")
        return value
    if key == "role" and value not in ROLES:
        raise bad(f"one of {', '.join(ROLES)}")
    if key == "kind" and value not in LOSS_KINDS:
        raise bad(f"one of {', '.join(LOSS_KINDS)}")
    if key == "load_weights" and value is not None and not callable(value):
        raise bad("a function load_weights(module, path)")
    if key in ("full_resolution", "higher_is_better"):
        return bool(value)
    if key == "digits":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 8:
            raise bad("an int from 0 to 8")
        return value
    if key in ("pairs_with", "label", "variant", "training_users_param"):
        return "" if value is None else str(value)
    return value


def compatible(encoder: Spec, enhancer: Spec) -> tuple[bool, str]:
    """Whether ``enhancer`` can be paired with ``encoder``, from their registrations.

    Returns ``(True, "")`` or ``(False, one-line reason)``. The enhancer's ``consumes`` must be
    a subset of the encoder's ``provides`` (both default to ``("vector",)``, the interface's
    defaults). This is the only pairing rule; the built instances are checked once more by
    :func:`piebench.interfaces.check_compatible` (a configuration may consume less).
    """
    missing = sorted(set(enhancer.consumes) - set(encoder.provides))
    if missing:
        return False, (f"enhancer '{enhancer.name}' consumes {', '.join(missing)}, which encoder "
                       f"'{encoder.name}' does not provide (its registration declares provides="
                       f"{list(encoder.provides)})")
    return True, ""


def partner_order(registry: Registry, enhancer: str, preferred: tuple[str, ...] = ()) -> list[str]:
    """Encoders to try for ``enhancer``, compatible ones only: its ``pairs_with``, then ``preferred``,
    then the rest by name."""
    enh = registry.get("enhancer", enhancer)
    names = registry.names("encoder")
    order = dict.fromkeys(n for n in (enh.pairs_with, *preferred, *names) if n in names)
    return [n for n in order if compatible(registry.get("encoder", n), enh)[0]]

