"""Reports: tables (md, LaTeX, csv, html), statistics against the baseline, trend plots, HTML page.

Public API: `render_table`, `write_table_files`, `build_tables` (bench.report.tables), `plot`
(bench.report.plots), `write_report` (bench.report.page). Imported lazily: plotting pulls in
matplotlib, which table-only callers do not need.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_tables", "plot", "render_table", "write_report", "write_table_files"]

_HOMES = {"build_tables": "tables", "render_table": "tables", "write_table_files": "tables",
          "plot": "plots", "write_report": "page"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'bench.report' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"bench.report.{_HOMES[name]}"), name)
