"""`bench report PRESET`: one standalone HTML page with the preset's tables and figures."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from bench import __version__, store
from bench.config import ConfigError
from bench.report import labels, sources
from bench.report.model import StatsOptions, TableModel
from bench.report.plots import build_figure, plot_kind, png_bytes
from bench.report.reference import normalise_table
from bench.report.render import SYNTHETIC_NOTICE, html_fragment, html_page
from bench.report.tables import baseline_pool, models_from


@dataclass(frozen=True)
class FigureSpec:
    """A figure a table's page shows: plot kind, the methods and configurations it draws."""

    kind: str
    methods: tuple[str, ...]
    configs: tuple[str, ...]


# The thesis figures that go with each table (one figure per dataset and modality combination).
REPORT_FIGURES: dict[str, tuple[FigureSpec, ...]] = {
    "6.2": (FigureSpec("losses", ("unimodal",), ("standard",)),),
    "6.3": (FigureSpec("ratios", ("concat", "ogm"), ("standard", "dev_set")),
            FigureSpec("ratios", ("concat", "ogm_ge"), ("standard", "dev_set")),
            FigureSpec("losses", ("concat", "ogm_ge"), ("dev_set",))),
    "6.4": (FigureSpec("ratios", ("concat", "acc"), ("standard",)),),
    "6.5": (FigureSpec("losses", ("concat", "ogm", "ogm_ge"), ("100_epochs_no_early_stop_dev_set",)),),
    "6.6": (FigureSpec("ratios", ("ogm", "ogm_ge"), ("modulate_first_5_epochs", "modulate_all_epochs")),),
    "6.7": (FigureSpec("strengths", ("concat", "agm"), ("standard", "dev_set")),),
    "6.8": (FigureSpec("prototypes", ("pmr",), ("standard", "dev_set")),),
    "6.9": (FigureSpec("losses", ("concat", "reconboost"), ("standard",)),),
    "6.10": (FigureSpec("ratios", ("concat", "ogm"), ("standard",)),
             FigureSpec("losses", ("concat",), ("standard",))),
}


@dataclass
class RenderedFigure:
    """A figure for the page: its caption and PNG, or why it is absent."""

    caption: str
    png: bytes | None = None
    problem: str = ""


def write_report(preset: str, runs_dir: Path, out_dir: Path, **expand_kwargs: Any) -> Path:
    """Write <out_dir>/<preset>-report.html (the table files own <preset>.html) and return its path."""
    cells = sources.expand_preset(preset, **expand_kwargs)
    results, problems = sources.read_results(Path(runs_dir))
    sources.print_warnings(problems)
    return write_page(preset, cells, results, problems, baseline_pool(preset, cells, expand_kwargs),
                      Path(runs_dir), Path(out_dir))


def write_page(name: str, cells: Sequence[Any], results: pd.DataFrame, problems: Sequence[str],
               baseline_cells: Sequence[Any], runs_dir: Path, out_dir: Path,
               options: StatsOptions | None = None) -> Path:
    """Write <out_dir>/<name>-report.html for these cells and stored rows; its path (options: the test and the
    correction of the tables, bench.report.model.StatsOptions)."""
    models = models_from(name, cells, results, problems, baseline_cells, options=options)
    figures = [fig for model in models for fig in table_figures(model, cells, results, Path(runs_dir))]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-report.html"
    store.write_output(path, page_html(name, Path(runs_dir), models, figures))
    return path


def table_figures(model: TableModel, cells: Sequence[Any], results: pd.DataFrame,
                  runs_dir: Path) -> list[RenderedFigure]:
    """The figures of one table, one per spec, dataset and modality combination with stored runs."""
    rendered = []
    mine = [c for c in cells if normalise_table(c.table) == model.table]
    for spec in REPORT_FIGURES.get(model.table, ()):
        chosen = [c for c in mine if c.method in spec.methods and c.config_label in spec.configs]
        groups: dict[tuple[str, str], list[str]] = {}
        for cell in chosen:
            groups.setdefault((cell.dataset, cell.modalities), []).extend(cfg.run_id for cfg in cell.configs)
        for (dataset, modalities), run_ids in groups.items():
            caption = (f"{plot_kind(spec.kind).title}: {labels.block_name(modalities)}, {dataset}, "
                       f"{', '.join(labels.method_name(m) for m in spec.methods)} "
                       f"({', '.join(spec.configs)})")
            rendered.append(_render_one(spec.kind, caption, results, run_ids, runs_dir))
    return rendered


def _render_one(kind: str, caption: str, results: pd.DataFrame, run_ids: Sequence[str],
                runs_dir: Path) -> RenderedFigure:
    if not len(results) or "status" not in results:
        return RenderedFigure(caption, problem="no stored runs yet")
    rows = results[(results["status"] == "ok") & results["run_id"].isin(list(dict.fromkeys(run_ids)))]
    if not len(rows):
        return RenderedFigure(caption, problem="no successful runs stored yet")
    traj, problems = sources.read_trajectories(runs_dir, list(rows["run_id"]))
    sources.print_warnings(problems)
    try:
        figure = build_figure(kind, rows, traj)
    except ConfigError as err:
        return RenderedFigure(caption, problem=str(err))
    return RenderedFigure(caption, png=png_bytes(figure))


def page_html(preset: str, runs_dir: Path, models: Sequence[TableModel],
              figures: Sequence[RenderedFigure]) -> str:
    """The report page: banner, tables (with thesis figures and deltas), figures."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<h1>bench report: {html.escape(preset)}</h1>"]
    if any(m.any_synthetic for m in models):
        parts.append(f'<p class="synthetic">{SYNTHETIC_NOTICE}: the surrogate data is generated, '
                     "calibrated to the thesis's unimodal results; its numbers are not CMU-MOSI / "
                     "CMU-MOSEI results.</p>")
    parts.append(f"<p>Store: <code>{html.escape(str(runs_dir))}</code> · bench {__version__} · {stamp}</p>")
    parts += [html_fragment(model, vs_thesis=True) for model in models]
    parts.append("<section><h2>Figures</h2>")
    if not figures:
        parts.append("<p>No figures are defined for this preset.</p>")
    for figure in figures:
        parts.append(_figure_html(figure))
    parts.append("</section>")
    return html_page(f"bench report: {preset}", "\n".join(parts))


def _figure_html(figure: RenderedFigure) -> str:
    caption = html.escape(figure.caption)
    if figure.png is None:
        return f"<p><em>{caption}</em>: not drawn ({html.escape(figure.problem)}).</p>"
    data = base64.b64encode(figure.png).decode("ascii")
    return (f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")
