"""Provenance of a stored result: the code's git commit and the time a run finished."""

from __future__ import annotations

import functools
import subprocess
from datetime import datetime, timezone
from pathlib import Path


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the git repository holding this package, or "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else "unknown"


def utc_now() -> str:
    """Now in UTC, to the second, ISO 8601 with the offset."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
