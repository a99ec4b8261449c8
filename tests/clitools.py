"""Calling the CLI in-process from tests."""

from __future__ import annotations

from bench import cli


def bench(*args: str) -> int:
    """Run the CLI in-process; its exit code (0 when it returns normally)."""
    try:
        cli.main(list(args))
    except SystemExit as done:
        return int(done.code or 0)
    return 0
