"""`bench table`, `bench plot`, `bench report`: thin wrappers over bench.report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bench.config import PROFILES, ConfigError


def _split(value: str | None) -> tuple[str, ...] | None:
    """'a,b' -> ('a', 'b'); None or blank -> None."""
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return items or None


def _seeds(value: str | None) -> tuple[int, ...] | None:
    items = _split(value)
    if items is None:
        return None
    try:
        return tuple(int(s) for s in items)
    except ValueError as err:
        raise ConfigError(f"--seeds takes comma-separated integers, got {value!r}") from err


def expand_options(profile: str, dataset: str, source: str, seeds: str, method: str | None,
                   optimizer: str | None, modalities: str | None, label_rule: str | None = None) -> dict[str, Any]:
    """The bench.presets.expand keyword arguments for the shared CLI filters."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    datasets = _split(dataset)
    if not datasets:
        raise ConfigError("--dataset needs at least one dataset (mosi, mosei)")
    kwargs: dict[str, Any] = {"profile": profile, "datasets": datasets, "source": source,
                              "seeds": _seeds(seeds) or (0, 1, 2, 3, 4)}
    if method:
        kwargs["methods"] = _split(method)
    if optimizer:
        kwargs["optimizers"] = _split(optimizer)
    if modalities:
        kwargs["modalities"] = [modalities]
    if label_rule:
        kwargs["overrides"] = {"label_rule": label_rule}
    return kwargs


LabelRule = typer.Option(None, "--label-rule", help="MOSEI's classes the runs used: binned (default) or round.")


def table(
    preset: str = typer.Argument(..., help="Preset, e.g. table-6.10 (see `bench grid --help`)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Store to read."),
    profile: str = typer.Option("quick", help=f"Profile the grid was run with: {', '.join(PROFILES)}."),
    dataset: str = typer.Option("mosi,mosei", "--dataset", help="Dataset families, comma-separated."),
    source: str = typer.Option("auto", help="auto, synth or real (as for `bench grid`)."),
    seeds: str = typer.Option("0,1,2,3,4", help="Seeds the table expects, comma-separated."),
    method: str | None = typer.Option(None, "--method", help="Only these methods (comma-separated)."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="Only this optimizer (adam, sgd)."),
    modalities: str | None = typer.Option(None, "--modalities", help="Only this combination: text,vision."),
    fmt: str = typer.Option("md", "--format", help="md, latex, csv or html."),
    out: Path | None = typer.Option(None, "--out", help="Write here instead of printing."),
    vs_thesis: bool = typer.Option(False, "--vs-thesis", help="Add the thesis's figure and the delta."),
    label_rule: str | None = LabelRule,
) -> None:
    """Print (or write) a preset's table from the store: mean ± std over seeds, ranks, significance."""
    from bench.report.tables import render_table

    kwargs = expand_options(profile, dataset, source, seeds, method, optimizer, modalities, label_rule)
    text = render_table(preset, runs_dir, fmt, vs_thesis, **kwargs)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"written: {out}")


def plot(
    kind: str = typer.Argument(..., help="ratios, strengths, losses or prototypes."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Store to read."),
    run_id: list[str] | None = typer.Option(None, "--run-id", help="Plot these runs (repeatable)."),
    method: str | None = typer.Option(None, "--method", help="Methods, comma-separated (default per plot)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Dataset name, e.g. synth-mosi."),
    modalities: str | None = typer.Option(None, "--modalities", help="e.g. text,vision or audio+vision."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="adam or sgd."),
    dev_set: bool | None = typer.Option(None, "--dev-set/--no-dev-set", help="Only runs with / without."),
    seeds: str | None = typer.Option(None, "--seeds", help="Only these seeds, comma-separated."),
    out: Path | None = typer.Option(None, "--out", help="PNG path (default reports/<kind>-....png)."),
    out_dir: Path = typer.Option(Path("reports"), "--out-dir", help="Folder for the default path."),
    pdf: bool = typer.Option(False, "--pdf", help="Also write a PDF next to the PNG."),
) -> None:
    """Draw a trend figure (seeds as a mean ± std band) from stored trajectories."""
    from bench.report.plots import PLOT_KINDS, Selection
    from bench.report.plots import plot as draw

    if kind not in PLOT_KINDS:
        raise ConfigError(f"unknown plot {kind!r}; choose from {', '.join(PLOT_KINDS)}")
    selection = Selection(
        run_ids=tuple(run_id) if run_id else None, methods=_split(method), dataset=dataset,
        modalities=modalities, optimizer=optimizer, dev_set=dev_set, seeds=_seeds(seeds),
    )
    for path in draw(kind, runs_dir, selection, out=out, out_dir=out_dir, pdf=pdf):
        typer.echo(f"written: {path}")


def report(
    preset: str = typer.Argument(..., help="Preset, e.g. table-6.10."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Store to read."),
    out_dir: Path = typer.Option(Path("reports"), "--out-dir", help="Where <preset>-report.html goes."),
    profile: str = typer.Option("quick", help=f"Profile the grid was run with: {', '.join(PROFILES)}."),
    dataset: str = typer.Option("mosi,mosei", "--dataset", help="Dataset families, comma-separated."),
    source: str = typer.Option("auto", help="auto, synth or real (as for `bench grid`)."),
    seeds: str = typer.Option("0,1,2,3,4", help="Seeds the table expects, comma-separated."),
    label_rule: str | None = LabelRule,
) -> None:
    """Write one standalone HTML page: the preset's tables (vs the thesis) and its figures."""
    from bench.report.page import write_report

    kwargs = expand_options(profile, dataset, source, seeds, None, None, None, label_rule)
    path = write_report(preset, runs_dir, out_dir, **kwargs)
    typer.echo(f"written: {path}")


def register(app: typer.Typer) -> None:
    """Add the report commands to the bench app."""
    app.command("table")(table)
    app.command("plot")(plot)
    app.command("report")(report)
