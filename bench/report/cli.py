"""`bench table`, `bench plot`, `bench report`: thin wrappers over bench.api."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from bench import api, store
from bench.config import PROFILES, ConfigError

PROFILE_HELP = (f"Profile the grid was run with: {', '.join(PROFILES)} (default: the grid file's, or the only "
                "one the store holds for it, else quick).")
SEEDS_HELP = "Seeds the table expects, comma-separated (default: the file's, or the one set the store holds, " \
             "else 0,1,2,3,4)."


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


def selection_options(profile: str | None, dataset: str | None, source: str | None, seeds: str | None,
                      method: str | None = None, optimizer: str | None = None,
                      modalities: str | None = None, label_rule: str | None = None,
                      task: str | None = None, model: str | None = None) -> dict[str, Any]:
    """The bench.api selection keyword arguments for the shared CLI filters (None: not given)."""
    if dataset is not None and not _split(dataset):
        raise ConfigError("--dataset needs at least one dataset (mosi, mosei)")
    return {"profile": profile, "datasets": _split(dataset), "source": source, "seeds": _seeds(seeds),
            "methods": _split(method), "optimizers": _split(optimizer), "modalities": modalities,
            "label_rule": label_rule, "task": task, "model": model}


TaskOption = typer.Option(None, "--task", help="Every row on this task (classification, regression or a "
                          "plugin's); rows whose method has no form for it are left out, with a note.")
ModelOption = typer.Option(None, "--model", help="Every row on this model (late_fusion, a plugin's, ...); rows "
                           "whose method needs a capability it lacks are left out, with a note.")


LabelRule = typer.Option(None, "--label-rule", help="MOSEI's classes the runs used: binned (default) or round.")
TestOption = typer.Option("exact", "--test", help="Test against the baseline and between adjacent ranks: exact "
                          "(default: exact sign-flip permutation test of the per-seed differences where runs are "
                          "paired, else Welch; 5 seeds cannot reach p < 0.05), t (paired t-test where paired, "
                          "else Welch) or welch (Welch everywhere).")
CorrectionOption = typer.Option("holm", "--correction", help="Multiplicity correction over all tests of one table: "
                                "holm (Holm-Bonferroni, default), bh (Benjamini-Hochberg) or none.")


def table(
    preset: str = typer.Argument(..., help="Preset (e.g. table-6.10, see `bench grid --help`) or grid file."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Store to read."),
    profile: str | None = typer.Option(None, help=PROFILE_HELP),
    dataset: str | None = typer.Option(None, "--dataset", help="Dataset families, comma-separated (mosi,mosei)."),
    source: str | None = typer.Option(None, help="auto, synth or real (as for `bench grid`)."),
    seeds: str | None = typer.Option(None, help=SEEDS_HELP),
    method: str | None = typer.Option(None, "--method", help="Only these methods (comma-separated)."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="Only this optimizer (adam, sgd)."),
    modalities: str | None = typer.Option(None, "--modalities", help="Only this combination: text,vision."),
    fmt: str = typer.Option("md", "--format", help="md, latex, csv or html."),
    out: Path | None = typer.Option(None, "--out", help="Write here instead of printing."),
    vs_thesis: bool = typer.Option(False, "--vs-thesis", help="Add the thesis's figure and the delta."),
    tune: bool = typer.Option(False, "--tune", help="Grid files with sweeps: per method and cell, the setting best "
                              "on validation (test metrics shown, the setting beside the cell)."),
    tune_metric: str = typer.Option("val_acc", "--tune-metric", help="val_acc (higher is better) or val_loss."),
    label_rule: str | None = LabelRule,
    task: str | None = TaskOption,
    model: str | None = ModelOption,
    rank: bool = typer.Option(False, "--rank", help="Instead: each method's mean rank across the cells and its "
                              "probability of improvement over late concatenation (bootstrap interval)."),
    evaluations: bool = typer.Option(False, "--evaluations", help="Instead: the test-time evaluations (runs "
                                     "trained with test_noise / test_dataset): the clean test metric beside its "
                                     "value per noise level and per out-of-domain dataset (md or csv)."),
    eval_metric: str = typer.Option("", "--eval-metric", help="Metric of --evaluations (default: the task's "
                                    "headline, acc for classification), e.g. loss or mae."),
    test: str = TestOption,
    correction: str = CorrectionOption,
    effects: bool = typer.Option(False, "--effects", help="md / LaTeX: each cell's difference to the baseline with "
                                 "its 95 % interval (HTML and CSV always carry it)."),
    per_seed: bool = typer.Option(False, "--per-seed", help="Each seed's value per cell, in the table's seed order "
                                  "(the CSV always carries them)."),
    rank_plot: Path | None = typer.Option(None, "--rank-plot", help="With --rank: also draw the performance "
                                          "profile as a PNG here."),
) -> None:
    """Print (or write) a preset's or grid file's table from the store: mean ± std over seeds, ranks, significance."""

    kwargs = selection_options(profile, dataset, source, seeds, method, optimizer, modalities, label_rule, task, model)
    if rank and evaluations:
        raise ConfigError("--rank and --evaluations are two different tables; choose one")
    if eval_metric and not evaluations:
        raise ConfigError("--eval-metric applies to --evaluations")
    if rank_plot is not None and not rank:
        raise ConfigError("--rank-plot applies to --rank")
    if evaluations:
        text = api.render_evaluations(preset, runs_dir, fmt, eval_metric, **kwargs)
    elif rank:
        text = api.ranking(preset, runs_dir, plot=rank_plot, **kwargs)
    else:
        text = api.render_table(preset, runs_dir, fmt, vs_thesis, tune=tune, tune_metric=tune_metric, test=test,
                                correction=correction, effects=effects, per_seed=per_seed, **kwargs)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    store.write_output(out, text)  # atomic: a full disk never leaves a truncated file
    typer.echo(f"written: {out}")


def plot(
    kind: str = typer.Argument(..., help="ratios, strengths, losses or prototypes; or series:<name> for any series "
                               "a method logs (e.g. series:ratio, series:helper_loss)."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Store to read."),
    run_id: list[str] | None = typer.Option(None, "--run-id", help="Plot these runs (repeatable)."),
    method: str | None = typer.Option(None, "--method", help="Methods, comma-separated (default per plot)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Dataset name, e.g. synth-mosi."),
    modalities: str | None = typer.Option(None, "--modalities", help="e.g. text,vision or audio+vision."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="adam or sgd."),
    dev_set: bool | None = typer.Option(None, "--dev-set/--no-dev-set", help="Only runs with / without."),
    seeds: str | None = typer.Option(None, "--seeds", help="Only these seeds, comma-separated."),
    task: str | None = typer.Option(None, "--task", help="Only runs of this task."),
    model: str | None = typer.Option(None, "--model", help="Only runs on this model."),
    out: Path | None = typer.Option(None, "--out", help="PNG path (default reports/<kind>-....png)."),
    out_dir: Path = typer.Option(Path("reports"), "--out-dir", help="Folder for the default path."),
    pdf: bool = typer.Option(False, "--pdf", help="Also write a PDF next to the PNG."),
) -> None:
    """Draw a trend figure (seeds as a mean ± std band) from stored trajectories."""
    from bench.report.plots import plot_kind

    plot_kind(kind)  # an unknown kind: one line naming the kinds
    paths = api.plot(kind, runs_dir, run_ids=run_id, methods=_split(method), dataset=dataset, modalities=modalities,
                     optimizer=optimizer, dev_set=dev_set, seeds=_seeds(seeds), task=task, model=model, out=out,
                     out_dir=out_dir, pdf=pdf)
    for path in paths:
        typer.echo(f"written: {path}")


def report(
    preset: str = typer.Argument(..., help="Preset (e.g. table-6.10) or grid file."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Store to read."),
    out_dir: Path = typer.Option(Path("reports"), "--out-dir", help="Where <preset>-report.html goes."),
    profile: str | None = typer.Option(None, help=PROFILE_HELP),
    dataset: str | None = typer.Option(None, "--dataset", help="Dataset families, comma-separated (mosi,mosei)."),
    source: str | None = typer.Option(None, help="auto, synth or real (as for `bench grid`)."),
    seeds: str | None = typer.Option(None, help=SEEDS_HELP),
    label_rule: str | None = LabelRule,
    task: str | None = TaskOption,
    model: str | None = ModelOption,
    test: str = TestOption,
    correction: str = CorrectionOption,
) -> None:
    """Write one standalone HTML page: the preset's tables (vs the thesis) and its figures."""

    path = api.report(preset, runs_dir, out_dir, test=test, correction=correction,
                      **selection_options(profile, dataset, source, seeds, label_rule=label_rule, task=task,
                                                        model=model))
    typer.echo(f"written: {path}")


def register(app: typer.Typer) -> None:
    """Add the report commands to the bench app."""
    app.command("table")(table)
    app.command("plot")(plot)
    app.command("report")(report)
