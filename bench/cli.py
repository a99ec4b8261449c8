"""The `bench` command line: thin wrappers that parse options and call the modules.

Bad input (ConfigError, DataError, a missing file) exits with code 2 and one line naming the problem;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import errno
import importlib
import sys

import typer

from bench import __version__, plugins
from bench.config import ConfigError
from bench.data.types import DataError

app = typer.Typer(
    name="bench",
    help="Benchmark harness for modality-imbalance methods on CMU-MOSI / CMU-MOSEI (and a synthetic surrogate).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its own commands: register(app) adds commands or sub-apps.
COMMAND_MODULES = ("bench.data.cli", "bench.calibrate", "bench.cli_runs", "bench.cli_parts", "bench.report.cli",
                   "bench.reproduce", "bench.perf", "bench.export")

_DEBUG = {"on": False, "registered": False}


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    plugin: list[str] | None = typer.Option(None, "--plugin", help="A Python file that registers your own "
                                            "method, model or task, or a dataset spec .toml (repeatable)."),
    dataset_spec: list[str] | None = typer.Option(None, "--dataset-spec", help="A dataset spec file (TOML, "
                                                  "docs/datasets.md) declaring a data file (repeatable)."),
) -> None:
    _DEBUG["on"] = debug
    if plugin or dataset_spec:
        plugins.activate([*(plugin or []), *(dataset_spec or [])])
    if version:
        typer.echo(f"bench {__version__}")
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)


def _register_commands() -> None:
    """Add every module's commands to `app`, once per process."""
    if _DEBUG.get("registered"):
        return
    _DEBUG["registered"] = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # not written yet
                continue
            raise
        module.register(app)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input, not a bug."""

    return (ConfigError, DataError, FileNotFoundError, IsADirectoryError, PermissionError, FileExistsError,
            NotADirectoryError)


# OSErrors about the path the user gave (exit 2, like a missing file): a read-only filesystem, a name too
# long. Any other OSError on the store or an output path (a full disk, an I/O error) is the machine's, not
# the input's: one line too, but exit 1.
USER_ERRNOS = frozenset({errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES, errno.EPERM})


def os_error_code(err: OSError) -> int:
    """The exit code of an OSError that reached the command line: 2 for the user's path, else 1."""
    return 2 if isinstance(err, user_errors()) or err.errno in USER_ERRNOS else 1


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    _register_commands()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        # standalone_mode=False: typer returns the exit code of typer.Exit (and 130 for Ctrl-C)
        code = app(args=args, standalone_mode=False)
    except user_errors() as err:
        if debug:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except OSError as err:  # a full disk, a read-only store, an I/O error: one line, never a traceback
        if debug:
            raise
        typer.echo(f"error: {' '.join(str(err).split())}", err=True)
        sys.exit(os_error_code(err))
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.exceptions.TyperException as err:  # usage errors: typer's own click exceptions
        show = getattr(err, "show", None)
        if debug or not callable(show):
            raise
        show()
        sys.exit(int(getattr(err, "exit_code", 2)))
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
