"""The ``piebench`` command line: thin click commands that parse, call the library, print.

Every command lives in its own module under :mod:`piebench.commands`; errors from the
library become one line on stderr and an exit code (2 = bad usage, 1 = runtime failure),
with the traceback only under ``--debug``.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import click

from ._version import __version__
from .errors import PiebenchError

#: (module, command attribute) for every sub-command.
COMMANDS = [
    ("piebench.commands.run", "run"),
    ("piebench.commands.listing", "list_cmd"),
    ("piebench.commands.leaderboard", "leaderboard"),
]
OPTIONAL_COMMANDS = [
    ("piebench.commands.bench", "bench"),
    ("piebench.commands.sweep", "sweep"),
    ("piebench.commands.sweep", "ablate"),
    ("piebench.commands.users_curve", "users_curve_cmd"),
    ("piebench.commands.report", "report"),
    ("piebench.commands.data", "data"),
    ("piebench.commands.enhance", "enhance"),
]


class DebugState:
    debug = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="piebench")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def cli(debug: bool) -> None:
    """piebench: benchmark personalized image enhancement (encoders x enhancers)."""
    DebugState.debug = debug


def _add_commands() -> None:
    for module, attr in COMMANDS:
        cli.add_command(getattr(importlib.import_module(module), attr))
    for module, attr in OPTIONAL_COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name == module:
                continue
            raise
        if hasattr(mod, attr):
            cli.add_command(getattr(mod, attr))


_add_commands()


def one_line(text: str) -> str:
    """``text`` as one line: newlines a user typed into a value are shown escaped."""
    return text.strip().replace("\r", "\\r").replace("\n", "\\n")


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="piebench", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("piebench: aborted", err=True)
        sys.exit(130)
    except click.UsageError as err:  # one line: click lists choices on several lines
        where = f"{err.ctx.command_path} --help" if err.ctx else "piebench --help"
        click.echo(f"piebench: error: {' '.join(err.format_message().split())} (see '{where}')", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        click.echo(f"piebench: error: {' '.join(err.format_message().split())}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except PiebenchError as err:
        if debug:
            traceback.print_exc()
        click.echo(f"piebench: error: {one_line(str(err))}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("piebench: interrupted", err=True)
        sys.exit(130)
    except OSError as err:  # a full disk, a vanished file, no permission: the environment, not a bug
        if debug:
            traceback.print_exc()
        where = f": {err.filename}" if err.filename else ""
        click.echo(f"piebench: error: {err.strerror or err}{where}", err=True)
        sys.exit(1)
    except Exception as err:  # noqa: BLE001 - one line, not a traceback, unless --debug
        if debug:
            traceback.print_exc()
        click.echo(f"piebench: internal error: {type(err).__name__}: {err} (rerun with --debug for the "
                   f"traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
