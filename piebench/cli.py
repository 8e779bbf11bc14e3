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


class DebugState:
    debug = False


#: Every sub-command: name -> (module, command attribute, the first sentence of its help). A
#: command's module is imported only when that command runs, so ``piebench --help`` and
#: ``piebench list`` do not load what ``run`` or ``report`` need; the summary shown by ``--help``
#: is kept equal to the command's own help by tests/integration/test_cli_errors.py.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "ablate": ("piebench.commands.sweep", "ablate",
               "Each --set change against the base config; PSNR deltas paired per image with 95% CIs."),
    "bench": ("piebench.commands.bench", "bench",
              "Images/s, MP/s, latency p50/p95, GFLOPs/MP and peak memory of ENHANCER's forward pass "
              "(or, with --sampler, the training sampler's batches/s)."),
    "data": ("piebench.commands.data", "data",
             "Prepare datasets: `prepare fivek` (image store), `synth` (Lightroom presets -> users)."),
    "enhance": ("piebench.commands.enhance", "enhance",
                "Enhance --input photos; write them to --out (same names, format and bit depth) plus index.html."),
    "leaderboard": ("piebench.commands.leaderboard", "leaderboard",
                    "One table per evaluation spec of the finished runs in RUNS_DIR: ranked entries, then bounds "
                    "and baselines."),
    "list": ("piebench.commands.listing", "list_cmd",
             "Show what is installed, which plugin (and version) provides it, and a description."),
    "report": ("piebench.commands.report", "report",
               "Write OUT/index.html for RUN_DIRS or for --protocol P (figures and images embedded)."),
    "run": ("piebench.commands.run", "run",
            "Train and evaluate ENCODER + ENHANCER; print the results table and the record path."),
    "sweep": ("piebench.commands.sweep", "sweep",
              "Run a grid of ENCODERS x ENHANCERS over SEEDS (finished runs are reused, unfinished resumed)."),
    "users-curve": ("piebench.commands.users_curve", "users_curve_cmd",
                    "Train at each number of training users; score the same held-out users from their references."),
}


def _short_help(name: str, limit: int) -> str:
    """The summary of command ``name`` shortened as click shortens a loaded command's help."""
    return click.Command(name, help=COMMANDS[name][2]).get_short_help_str(limit)


class LazyGroup(click.Group):
    """A group that imports a sub-command's module only when the command is looked up to run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        with formatter.section("Commands"):
            formatter.write_dl([(name, _short_help(name, limit)) for name in names])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="piebench")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def cli(debug: bool) -> None:
    """piebench: benchmark personalized image enhancement (encoders x enhancers)."""
    DebugState.debug = debug


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
