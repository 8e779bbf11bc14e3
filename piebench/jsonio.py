"""Strict JSON: every JSON file and line piebench writes goes through :func:`dumps`.

JSON has no NaN or infinity; Python's ``json`` writes them as the bare words ``NaN`` and
``Infinity``, which other parsers (JavaScript, jq, pandas with a strict engine) reject. So a
non-finite float is either written as ``null`` (``non_finite="null"``: a value that could not
be computed, e.g. a metric of a diverged run) or refused (``non_finite="refuse"``: a
configuration, a data recipe, a hash input, where it can only be a mistake) with a
:class:`NonFiniteError` naming where it is. numpy scalars and arrays and paths are written as
their plain values; anything else goes to ``json.dumps``'s ``default``.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath
from typing import Any

import numpy as np

from .errors import PiebenchError

__all__ = ["NonFiniteError", "dumps", "finite"]


class NonFiniteError(PiebenchError, ValueError):
    """A NaN or infinity where JSON must hold a number; the message names the key path."""


def finite(obj: Any, non_finite: str = "null", where: str = "") -> Any:
    """``obj`` as plain JSON types, every NaN / +-inf replaced by None (or refused)."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        if non_finite == "refuse":
            raise NonFiniteError(f"{where or 'value'} is {obj}: JSON has no NaN or infinity")
        return None
    if isinstance(obj, dict):
        return {k: finite(v, non_finite, f"{where}.{k}" if where else str(k)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v, non_finite, f"{where}.{i}" if where else str(i)) for i, v in enumerate(obj)]
    if isinstance(obj, PurePath):
        return str(obj)

    if isinstance(obj, np.ndarray | np.generic):
        return finite(obj.tolist(), non_finite, where)
    return obj  # json.dumps' ``default`` (if given) decides, else it raises TypeError


def dumps(obj: Any, *, non_finite: str = "null", **kwargs: Any) -> str:
    """``json.dumps`` that never writes NaN or Infinity (see :func:`finite`)."""
    if non_finite not in ("null", "refuse"):
        raise ValueError(f"non_finite must be 'null' or 'refuse', got {non_finite!r}")
    return json.dumps(finite(obj, non_finite), allow_nan=False, **kwargs)
