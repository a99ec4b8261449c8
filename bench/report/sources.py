"""Where the report reads from: the store (results, trajectories) and the presets (cells).

Thin indirections, so tests can swap in fakes and the report never reaches past the contracts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from bench import selection
from bench.plugins import load_recorded
from bench.presets import preset_names as names
from bench.store import read_results as store_read_results
from bench.store import read_trajectories as store_read_trajectories


def read_results(runs_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Valid result rows and 'path: problem' lines for files that were skipped (and for recorded plugin files
    that could not be loaded again: every plugin a row records is loaded, so its parts are known)."""

    rows, problems = store_read_results(Path(runs_dir))
    recorded = rows["plugin_files"] if "plugin_files" in rows else ()
    return rows, [*problems, *load_recorded(recorded)]


def read_trajectories(runs_dir: Path, run_ids: Iterable[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Trajectory rows of `run_ids` (all runs when None) and problems with skipped files."""

    ids = None if run_ids is None else list(run_ids)
    return store_read_trajectories(Path(runs_dir), ids)


def expand_preset(preset: str, **expand_kwargs: Any) -> list[Any]:
    """The preset's cells (bench.selection.expand_preset)."""

    return selection.expand_preset(preset, **expand_kwargs)  # looked up now: tests swap it


def preset_names() -> list[str]:
    """Names of the known presets."""

    return list(names())


def print_warnings(problems: Iterable[str]) -> None:
    """Skipped files, one 'warning:' line each on stderr."""
    for problem in problems:
        print(f"warning: skipped {problem}", file=sys.stderr)
