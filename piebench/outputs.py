"""A user's files are sacred: where a command may write, and how.

* :func:`refuse_overlap` -- an output folder must not be, contain, or lie inside any input the
  command reads (compared after resolving symlinks and ``..``), so a command can never write over
  the photos, references, runs or datasets it was given.
* :class:`OutputPlan` -- the files a command will write, collected *before* it writes any:
  existing ones are refused unless ``--overwrite`` (then they are listed as replaced).
* :func:`atomic_write` -- every file is written to a temporary name beside its target and renamed
  into place, so an interrupted command leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Callable, Iterable

from .errors import UsageError


def _resolved(path: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(path).expanduser().resolve()


def _inside(child: pathlib.Path, parent: pathlib.Path) -> bool:
    return child == parent or parent in child.parents


def refuse_overlap(out: str | os.PathLike, out_flag: str,
                   inputs: Iterable[tuple[str, str | os.PathLike | None]], around: bool = True) -> None:
    """UsageError when ``out`` resolves to, inside, or (``around``) around any ``(flag, path)`` input.

    An input inside the output folder counts when the command writes files there that could
    replace it (``--input DIR/a.jpg --out DIR``); a command writing one fixed file name (``report``'s
    index.html) passes ``around=False``.
    """
    target = _resolved(out)
    for flag, path in inputs:
        if path is None:
            continue
        src = _resolved(path)
        if _inside(target, src) or (around and _inside(src, target)):
            where = "is" if target == src else "is inside" if _inside(target, src) else "contains"
            raise UsageError(f"{out_flag} {out} {where} {flag} {path}: piebench never writes where it reads; "
                             f"choose an output folder outside your inputs")


class OutputPlan:
    """The files one command will write under ``root``: checked for clashes before anything is written."""

    def __init__(self, root: str | os.PathLike, overwrite: bool, flag: str = "--out") -> None:
        self.root = pathlib.Path(root)
        self.overwrite = overwrite
        self.flag = flag
        self.files: list[pathlib.Path] = []
        self._planned: set[pathlib.Path] = set()  # for the clash check: a large enhance plans 3 files a photo

    def add(self, path: str | os.PathLike) -> pathlib.Path:
        """Plan ``path`` (relative to the root, or absolute); two plans of one file are a usage error."""
        p = self.root / path
        if p in self._planned:
            raise UsageError(f"two outputs would be written to {p}; rename one of the inputs (or drop --format)")
        self.files.append(p)
        self._planned.add(p)
        return p

    def existing(self) -> list[pathlib.Path]:
        """The planned files that exist already (or that a folder occupies)."""
        return [p for p in self.files if p.exists() or p.is_symlink()]

    def check(self) -> list[pathlib.Path]:
        """Refuse (UsageError) when a planned file exists and ``overwrite`` is off; return those to replace."""
        clash = self.existing()
        dirs = [p for p in clash if p.is_dir() and not p.is_symlink()]
        if dirs:
            raise UsageError(f"{dirs[0]} is a folder where piebench would write a file; choose another {self.flag}")
        if clash and not self.overwrite:
            shown = ", ".join(str(p) for p in clash[:3]) + (f" and {len(clash) - 3} more" if len(clash) > 3 else "")
            raise UsageError(f"{self.flag} {self.root} already holds {len(clash)} file(s) piebench would replace "
                             f"({shown}); add --overwrite to replace them, or choose an empty {self.flag}")
        return clash


def atomic_write(path: str | os.PathLike, write: Callable[[pathlib.Path], None]) -> None:
    """Call ``write(tmp)`` for a temporary file beside ``path``, then rename it to ``path``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def replaced_message(replaced: list[pathlib.Path]) -> str:
    """One line listing the files ``--overwrite`` replaced."""
    shown = ", ".join(str(p) for p in replaced[:10]) + (f" and {len(replaced) - 10} more" if len(replaced) > 10 else "")
    return f"piebench: replaced {len(replaced)} existing file(s): {shown}"
