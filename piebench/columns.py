"""The columns every display shows: metrics from the registry, then piebench's own diagnostics.

Metric columns (heading, direction, decimals) come from the registered metric specs
(``label``, ``higher_is_better``, ``digits``), in registration order (the built-ins first), so a
third-party metric appears in the ``run`` table, the leaderboard (and its CSV), the report and
the archive like a built-in one. A metric found in a record but not installed here keeps a
column (its name, no arrow, 3 decimals). The non-metric columns (sensitivity, steering,
identity PSNR, ...) are measured by piebench itself and listed once, in :data:`DIAGNOSTICS`.
Functions take the registry (``piebench.plugins.get_registry()``) as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """One displayed quantity: record key, label, direction (None: no arrow), decimals."""

    key: str
    label: str
    higher_is_better: bool | None = True
    digits: int = 3
    metric: bool = True

    @property
    def heading(self) -> str:
        """The label with an arrow saying which way is better (``PSNR ↑``, ``dE ↓``)."""
        if self.higher_is_better is None:
            return self.label
        return f"{self.label} {'↑' if self.higher_is_better else '↓'}"


#: piebench's own per-run diagnostics (not registered metrics), in display order.
DIAGNOSTICS = (
    Column("identity_psnr", "identity PSNR", None, 2, metric=False),
    Column("sensitivity", "sensitivity", True, 2, metric=False),
    Column("steering", "steering", True, 2, metric=False),
    Column("gain_vs_blind", "gain", True, 2, metric=False),
    Column("gain_over_identity", "gain over identity", True, 2, metric=False),
    Column("user_recall", "user R@1", True, 2, metric=False),
    Column("silhouette", "silhouette", True, 4, metric=False),
)
#: Which diagnostics each display shows (besides every metric).
RUN_TABLE_DIAGNOSTICS = ("identity_psnr",)
LEADERBOARD_DIAGNOSTICS = ("sensitivity", "steering", "gain_vs_blind", "user_recall")
REPORT_DIAGNOSTICS = ("identity_psnr", "sensitivity", "steering", "gain_over_identity")
#: per_image.csv columns an archive keeps besides the metrics.
ARCHIVE_ID_COLUMNS = ("photo", "scene", "draw", "user", "user_name", "seen")
ARCHIVE_DIAGNOSTICS = ("identity_psnr", "sensitivity")


def metric_columns(registry: Any, present: Iterable[str] = ()) -> list[Column]:
    """Every metric of ``registry`` (registration order), then metrics in ``present`` not installed here."""
    cols = [Column(s.name, s.label or s.name, s.higher_is_better, s.digits) for s in registry.in_order("metric")]
    known = {c.key for c in cols} | {d.key for d in DIAGNOSTICS}
    cols += [Column(k, k, None, 3) for k in dict.fromkeys(present) if k not in known]
    return cols


def display_columns(diagnostics: Iterable[str], registry: Any, present: Iterable[str] = ()) -> list[Column]:
    """The metric columns followed by the named diagnostics."""
    by_key = {d.key: d for d in DIAGNOSTICS}
    return [*metric_columns(registry, present), *(by_key[k] for k in diagnostics)]


def metric_keys(groups: Iterable[dict]) -> list[str]:
    """Keys with a ``mean`` in a record's metric groups (what a record computed), in order."""
    keys: dict[str, None] = {}
    for group in groups:
        for key, value in (group or {}).items():
            if isinstance(value, dict) and "mean" in value:
                keys[key] = None
    return list(keys)


def archive_columns(columns: Iterable[str], computed: Iterable[str]) -> list[str]:
    """The per_image.csv ``columns`` an archive keeps: ids, the metrics the run ``computed`` (its
    record's ``metric_variants``), and the archived diagnostics."""
    keep = {*ARCHIVE_ID_COLUMNS, *computed, *ARCHIVE_DIAGNOSTICS}
    return [c for c in columns if c in keep]
