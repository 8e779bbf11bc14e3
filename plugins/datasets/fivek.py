"""The ``fivek`` dataset: a MIT-Adobe FiveK store written by ``piebench data prepare fivek``.

``piebench run --dataset fivek:STORE`` (or a ``fivek-*`` protocol with ``eval.data.root``).
Parameters: ``root`` (the store), ``resolution`` (short edge to train and test at; None = the
store's), ``users`` (experts to keep, ``A``..``E`` or full names), ``unseen_users`` (experts
held out of training: a list of names, or a count taken from the end), ``seen_users`` (how many
of the remaining experts train, in store order: the training-users curve), ``split`` (the split
the store must have been prepared with: a protocol's guard against mixing splits).
"""

from __future__ import annotations

from typing import Any

from piebench import hookimpl
from piebench.data.prepared import load_store, read_store_meta
from piebench.errors import UsageError
from piebench.interfaces import BuildContext


def _names(value: Any, known: list[str], what: str) -> list[str]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"fivek: {what} must be a list of expert names (e.g. [\"C\"]), got {value!r}")
    out = []
    for v in value:
        name = v if v in known else f"expert{v.upper()}"
        if name not in known:
            raise UsageError(f"fivek: {what}: no user '{v}' in the store; it has {', '.join(known)}")
        out.append(name)
    return out


def _count(value: Any, what: str, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise UsageError(f"fivek: {what} must be an integer in 0..{limit} or a list of names, got {value!r}")
    return value


def build_fivek(ctx: BuildContext, root: str | None = None, resolution: int | None = None,
                users: Any = None, unseen_users: Any = None, seen_users: Any = None, split: str | None = None,
                **ignored: Any):
    """Open the prepared store ``root`` as a PieDataset (see the module doc)."""
    if not root:
        raise UsageError("fivek needs a prepared store: --dataset fivek:STORE (create it with "
                         "`piebench data prepare fivek --root DIR --layout ... --out STORE`)")
    meta = read_store_meta(root)
    if split is not None and meta.get("info", {}).get("split") != split:
        raise UsageError(f"this protocol needs a FiveK store with the {split} split; {root} was prepared with "
                         f"--split {meta.get('info', {}).get('split')}: prepare another with --split {split}")
    known = list(meta["users"])
    keep = _names(users, known, "users") if users is not None else known
    if unseen_users is None:
        unseen: list[str] = []
    elif isinstance(unseen_users, int) and not isinstance(unseen_users, bool):
        n = _count(unseen_users, "unseen_users", len(keep) - 1)
        unseen = keep[len(keep) - n:] if n else []
    else:
        unseen = _names(unseen_users, known, "unseen_users")
    rest = [u for u in keep if u not in unseen]
    if seen_users is not None:
        if isinstance(seen_users, int) and not isinstance(seen_users, bool):
            rest = rest[:_count(seen_users, "seen_users", len(rest))]
        else:
            rest = _names(seen_users, known, "seen_users")
        keep = rest + [u for u in unseen if u not in rest]
    if not rest:
        raise UsageError("fivek: no training users left (every kept expert is unseen); hold out fewer")
    size = None
    if resolution is not None:
        if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 16:
            raise UsageError(f"fivek: resolution must be an integer >= 16 (short edge), got {resolution!r}")
        h, w = meta["size"] if meta["size"] != "full" else (2, 3)
        size = (resolution, int(round(resolution * w / h)))
    return load_store(root, users=keep, unseen=unseen, size=size, name="fivek", progress=True)


@hookimpl
def register_datasets(register):
    register("fivek", build=build_fivek,
             description="MIT-Adobe FiveK store from `piebench data prepare fivek` (experts A-E as users)",
             paper="Bychkovsky et al., Learning Photographic Global Tonal Adjustment, CVPR 2011",
             version="1", training_users_param="seen_users")
