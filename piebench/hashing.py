"""Content hashes shared by the configuration and the datasets.

A base module: it imports no other piebench module, so :mod:`piebench.config` (run keys,
evaluation hashes) and :mod:`piebench.data` (dataset recipe hashes) can both use it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (first 16 hex digits)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
