"""Public table API: a preset's cells joined to the store, rendered in every format."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench import store
from bench.config import ConfigError
from bench.report import sources
from bench.report.labels import baseline_method
from bench.report.metricsets import THESIS_TASK, cell_task, result_columns
from bench.report.model import StatsOptions, TableModel, build_models
from bench.report.render import FORMATS, render

FILE_SUFFIXES: dict[str, str] = {"md": "md", "latex": "tex", "csv": "csv", "html": "html"}


def build_tables(preset: str, runs_dir: Path, **expand_kwargs: Any) -> list[TableModel]:
    """The preset's table models from the store; skipped store files are printed as warnings."""
    cells = sources.expand_preset(preset, **expand_kwargs)
    results, problems = sources.read_results(Path(runs_dir))
    sources.print_warnings(problems)
    return models_from(preset, cells, results, problems, baseline_pool(preset, cells, expand_kwargs))


def models_from(preset: str, cells: Sequence[Any], results: pd.DataFrame, problems: Sequence[str] = (),
                baseline_cells: Sequence[Any] = (), extra_notes: Sequence[str] = (),
                options: StatsOptions | None = None) -> list[TableModel]:
    """Table models from given cells and result rows (the part of build_tables that needs no store);
    options: the test and the correction (bench.report.model.StatsOptions)."""
    notes = list(extra_notes)
    if problems:
        notes.append(f"{len(problems)} unreadable or foreign result file(s) skipped (see the warnings).")
    return build_models(preset, cells, _ensure_columns(results), baseline_cells, notes, options)


def render_table(preset: str, runs_dir: Path, fmt: str = "md", vs_thesis: bool = False,
                 **expand_kwargs: Any) -> str:
    """The preset's table(s) as text in `fmt` (md, latex, csv, html)."""
    if fmt not in (*FORMATS, "tex"):  # before any reading, so a typo costs nothing
        raise ConfigError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
    return render(build_tables(preset, runs_dir, **expand_kwargs), fmt, vs_thesis)


def write_table_files(preset: str, runs_dir: Path, out_dir: Path, vs_thesis: bool = True,
                      **expand_kwargs: Any) -> dict[str, Path]:
    """Write <out_dir>/<preset>.{md,tex,csv,html}; returns {format: path} (format 'latex' is .tex)."""
    models = build_tables(preset, runs_dir, **expand_kwargs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt, suffix in FILE_SUFFIXES.items():
        path = out_dir / f"{preset}.{suffix}"
        store.write_output(path, render(models, fmt, vs_thesis))
        paths[fmt] = path
    return paths


def baseline_pool(preset: str, cells: Sequence[Any], expand_kwargs: dict[str, Any]) -> list[Any]:
    """Late Concatenation cells of the whole grid, for tables whose preset has no baseline rows.

    The whole grid is 'all' (the thesis's classification protocol); for another task's cells it is the
    preset itself without its method filter (a baseline is only ever of the same task).
    """

    baseline = baseline_method()
    covered = {(c.dataset, c.modalities, c.optimizer) for c in cells if c.method == baseline}
    # Only multimodal cells have a Late Concatenation counterpart; expand the grid only if one lacks it.
    lacking = [c for c in cells
               if "+" in c.modalities and (c.dataset, c.modalities, c.optimizer) not in covered]
    if not lacking or preset == "all":
        return []
    kwargs = {k: v for k, v in expand_kwargs.items() if k not in ("methods",)}
    tasks = {cell_task(c) for c in lacking}
    grid = "all" if tasks == {THESIS_TASK} else preset
    try:
        return [c for c in sources.expand_preset(grid, **kwargs)
                if c.method == baseline and cell_task(c) in tasks]
    except ConfigError:  # no grid to take a baseline from: the table says none was tested
        return []


RESULT_COLUMNS = ("run_id", "dataset", "status", "test_acc", "test_loss", "data_fingerprint", "synthetic",
                  "git_commit")


def _ensure_columns(results: pd.DataFrame) -> pd.DataFrame:
    """Only the columns the join reads (the rows are wide): these and every task's table metrics; an empty
    store still has them all."""

    wanted = list(dict.fromkeys((*RESULT_COLUMNS, *result_columns())))
    missing = [c for c in wanted if c not in results.columns]
    results = results.assign(**dict.fromkeys(missing)) if missing else results
    return results[wanted]
