"""Errors the CLI turns into one line and an exit code (2 = bad usage, 1 = runtime failure)."""

from __future__ import annotations

import difflib


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its class name when the message is empty)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class PiebenchError(Exception):
    """Base class: ``str(err)`` is the one line shown to the user."""

    exit_code = 1


class UsageError(PiebenchError):
    """Bad input from the user: an unknown name, an invalid value, a missing path (exit 2)."""

    exit_code = 2


class RunFailed(PiebenchError):
    """A run stopped for a reason worth reporting (non-finite loss, interrupted, I/O)."""

    exit_code = 1


class PluginError(PiebenchError):
    """A plugin misbehaved (failed import, duplicate name, wrong hook, wrong output shape)."""

    exit_code = 1


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` when a close choice exists, else an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
