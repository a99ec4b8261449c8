"""The Python API, for notebooks: what the CLI does, as functions (the CLI commands are thin wrappers).

    import bench.api as api

    api.run("ogm", "text,vision", dataset="mosi", profile="smoke", seeds=[0, 1], params={"alpha": 0.7})
    api.grid("table-6.10", profile="smoke", datasets="mosi", seeds=[0, 1])   # or a grid file: "my-grid.toml"
    api.results()                          # every stored result row: run_id, every config field, metrics
    api.table("my-grid.toml", tune=True)   # the table as a tidy DataFrame (one line per cell and metric)
    api.trajectories(methods=["ogm"])      # per-step / per-epoch series of the selected runs
    api.predictions()                      # per-sample predictions (runs/predictions/, once stored)
    api.evaluations()                      # test-time evaluations (noise / out of domain; runs/evaluations/)

Selections (`preset_or_file` plus the keyword arguments of `cells`: profile, datasets, source, seeds,
methods, optimizers, modalities, dev_set) mean what the CLI flags mean. Functions that train print
what `bench run` / `bench grid` print through `echo` (default `print`; None for silence); notes about a
selection go to stderr. Bad input raises ConfigError; a selection with no stored run raises
EmptySelection (a ConfigError) saying what the store holds.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench import execute, store
from bench.config import PROFILES, ConfigError, RunConfig, canonical_modalities, modality_key
from bench.data import load_dataset
from bench.data.loader import real_file_path
from bench.data.registry import DATASETS, declared_file, is_synthetic, names_text, spec_for
from bench.execute import default_executor, merge_options, resolve_options
from bench.params import check_params
from bench.plan.deps import job_graph
from bench.plan.resolve import explain, plan, planned_for
from bench.plugins import activate, code_changes
from bench.presets import jobs_with_dependencies, resolve_dataset
from bench.presets import preset_names as names
from bench.report import evaluations as report_evaluations
from bench.report import labels, modality_view, sources
from bench.report import ranking as rank
from bench.report import tune as tuning
from bench.report.sources import print_warnings
from bench.selection import (
    DEFAULT_SEEDS,
    EmptySelection,
    GridQuery,
    as_seeds,
    as_tuple,
    check_stored,
    print_note,
    resolve,
)
from bench.store import PREDICTION_COLUMNS, PREDICTIONS, read_evaluations, read_predictions  # noqa: F401  (re-exported for notebooks)

Echo = Callable[[str], None] | None

__all__ = ["EmptySelection", "Execution", "all_ok", "cells", "evaluations", "grid", "job_table", "jobs", "plot",
           "predictions", "render_evaluations", "render_table", "report", "results", "run", "run_configs", "select",
           "table", "table_models", "trajectories", "write_tables", "preset_names", "explain_run", "explain_cells",
           "run_plans"]


def preset_names() -> list[str]:
    """The names of the built-in presets (`bench grid NAME`)."""

    return names()


# -- execution -------------------------------------------------------------------------------------

# Old names of Slurm settings in the `slurm=` mapping -> the slurm backend's option names.
_SLURM_KEYS = {"gpus": "gpus_per_job", "gpus_per_node": "gpus_per_job", "timeout_min": "time",
               "cpus": "cpus_per_task"}


@dataclass(frozen=True)
class Execution:
    """How runs are trained: the executor (a registered backend; None: local with several workers or a GPU,
    else inline) and its options (name -> value; strings are converted by the backend's options dataclass),
    retries and the progress display. `exec_opt_names`: the options given as --exec-opt (errors name them)."""

    executor: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    retry_failed: bool = False
    progress: bool = True
    exec_opt_names: frozenset[str] = frozenset()

    @classmethod
    def from_arguments(cls, executor: str | None = None, workers: int | None = None,
                       workers_per_gpu: int | None = None, retry_failed: bool = False, progress: bool = True,
                       slurm: Mapping[str, Any] | None = None,
                       exec_opts: Mapping[str, Any] | None = None) -> Execution:
        """From run/grid's keyword arguments: `workers`, `workers_per_gpu` and the `slurm` mapping are aliases
        of options; the same option given there and in `exec_opts` with different values is a ConfigError."""

        named = {_SLURM_KEYS.get(k, k): v for k, v in (slurm or {}).items()}
        named.update(workers=workers, workers_per_gpu=workers_per_gpu)
        options, via_exec_opt = merge_options(named, dict(exec_opts or {}))
        return cls(executor, options, retry_failed, progress, frozenset(via_exec_opt))

    def resolved(self) -> tuple[str, Any]:
        """The executor's name and its options dataclass; ConfigError for anything wrong, before anything is
        built."""

        executor = self.executor or default_executor(self.options)
        return executor, resolve_options(executor, self.options, self.exec_opt_names)


def _train(jobs: Sequence[RunConfig], runs_dir: Path, execution: Execution, echo: Echo = print) -> Any:
    """bench.execute.run_jobs on the job graph of `jobs` with these options; the Summary (echo None: silent)."""
    from bench.tasks import all_result_columns

    executor, options = execution.resolved()
    return execute.run_jobs(job_graph(jobs), runs_dir, executor, options, retry_failed=execution.retry_failed,
                            progress=execution.progress, metric_columns=all_result_columns(), quiet=echo is None)


def _say(echo: Echo, text: str) -> None:
    if echo is not None:
        echo(text)


def announce_synthetic(echo: Echo, datasets: Iterable[str]) -> None:
    """Say when the runs use the surrogate."""
    synth = sorted({d for d in datasets if is_synthetic(d)})
    if synth:
        _say(echo, f"note: using the synthetic surrogate ({', '.join(synth)}): real MOSI/MOSEI files were "
                   "not found under $BENCH_DATA_DIR (or --source synth was given)")


def _print_failures(echo: Echo, summary: Any, limit: int = 20) -> None:
    for run_id, error in summary.failures[:limit]:
        _say(echo, f"failed {run_id}: {error}")
    if len(summary.failures) > limit:
        _say(echo, f"... and {len(summary.failures) - limit} more failures")


def stored_rows(runs_dir: str | Path, configs: Sequence[RunConfig]) -> pd.DataFrame:
    """The stored result row of each config, in order; status "missing" (and the config's fields) where the
    store has no readable row."""

    rows = []
    for cfg in dict.fromkeys(configs):
        try:
            rows.append(store.read_row(runs_dir, cfg.run_id))
        except (OSError, ValueError):
            rows.append({"run_id": cfg.run_id, **{k: v for k, (v, _) in store.config_columns(cfg).items()},
                         "status": "missing"})
    return pd.DataFrame(rows, columns=None if rows else ["run_id", "status", *store.METRIC_COLUMNS])


# -- bench run -------------------------------------------------------------------------------------

def run_configs(method: str, modalities: str | Sequence[str], dataset: str = "mosi", **options: Any) -> list[RunConfig]:
    """The one-cell grid of `bench run`: the thesis defaults for this method/modalities/dataset, options on top
    (keywords as `run_plans`)."""
    return [planned.config for planned in run_plans(method, modalities, dataset, **options)]


def explain_run(method: str, modalities: str | Sequence[str], dataset: str = "mosi", **options: Any) -> str:
    """`bench run --explain`: every field of the run's config (first seed), its value and the layer that set it."""

    return explain(run_plans(method, modalities, dataset, **options)[0])


def run_plans(method: str, modalities: str | Sequence[str], dataset: str = "mosi", *, source: str = "auto",
                optimizer: str = "adam", lr: float | None = None, dev_set: bool = False,
                step_every: int | None = None, seeds: Sequence[int] = DEFAULT_SEEDS, profile: str = "quick",
                params: Mapping[str, Any] | None = None, window: tuple[int, int] | None = None,
                label_rule: str | None = None, task: str | None = None,
                task_params: Mapping[str, Any] | None = None, model: str | None = None,
                model_params: Mapping[str, Any] | None = None, test_noise: Sequence[float] | str = (),
                test_dataset: str | None = None, plugins: Sequence[str | Path] | None = None) -> list[Any]:
    """The planned configs (bench.plan.resolve.Planned) of `bench run`, one per seed.

    test_noise / test_dataset: the test-time evaluations (RunConfig fields; a test dataset must fit the
    run's modalities, feature sizes and classes, checked here, before anything trains)."""
    activate([str(path) for path in plugins or ()])  # the user's parts first: they may be named below
    from bench.methods import validate_config

    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    mods = canonical_modalities(modalities)
    name = resolve_dataset(dataset, source)
    _check_dataset_name(dataset, name)
    label = "dev_set" if dev_set else ("step_every_4" if step_every == 4 else "standard")
    overrides: dict[str, Any] = {"method_params": check_params(method, dict(params or {}))}
    if lr is not None:
        overrides["lr"] = lr
    if dev_set:
        overrides["dev_set"] = True
    if step_every is not None:
        overrides["step_every"] = step_every
    if window is not None:
        overrides["window"] = tuple(window)
    if label_rule is not None:
        overrides["label_rule"] = label_rule
    overrides.update(task_params=dict(task_params or {}), model_params=dict(model_params or {}))
    if task is not None:  # else the method's default: classification, or its only task
        overrides["task"] = task
    if model:
        overrides["model"] = model
    if test_noise:
        overrides["test_noise"] = test_noise
    if test_dataset:
        overrides["test_dataset"] = resolve_dataset(test_dataset, source)
        _check_dataset_name(test_dataset, overrides["test_dataset"])
    plans = [plan(name, method, mods, profile=profile, optimizer=optimizer, config_label=label, seed=seed,
                  **overrides) for seed in as_seeds(seeds) or ()]
    available = dataset_modalities(name, profile)
    for planned in plans:
        validate_config(planned.config, available)
    check_test_datasets(p.config for p in plans)
    return plans


def _check_dataset_name(given: str, name: str) -> None:
    """FileNotFoundError unless `name` is a built-in dataset (bench.data.surrogates) or an existing file."""

    if name not in DATASETS and not Path(name).expanduser().is_file():
        raise FileNotFoundError(f"dataset {given!r} is neither {names_text()} nor an existing file")


def check_test_datasets(configs: Iterable[RunConfig]) -> None:
    """ConfigError when a run's test_dataset does not fit it (modalities, feature sizes, classes): one line
    naming each mismatch, before anything trains. Each dataset is loaded once."""
    from bench.train import check_transfer, ood_label_rule

    loaded: dict[tuple[str, str, str | None], Any] = {}

    def data(name: str, profile: str, rule: str | None) -> Any:
        if (name, profile, rule) not in loaded:
            loaded[(name, profile, rule)] = load_dataset(name, profile, label_rule=rule)
        return loaded[(name, profile, rule)]

    checked: set[tuple[Any, ...]] = set()
    for cfg in configs:
        key = (cfg.dataset, cfg.test_dataset, cfg.profile, cfg.label_rule, cfg.modalities, cfg.task)
        if not cfg.test_dataset or key in checked:
            continue
        checked.add(key)
        check_transfer(cfg, data(cfg.dataset, cfg.profile, cfg.label_rule),
                       data(cfg.test_dataset, cfg.profile, ood_label_rule(cfg)))


def dataset_modalities(name: str, profile: str) -> tuple[str, ...] | None:
    """The modalities of a dataset file, checked before anything trains (None for the built-in names).

    A file given by path is loaded (and validated: a bad file is a DataError, exit 2, not a failed run);
    a named real dataset must exist. The surrogate has every modality.
    """

    spec = DATASETS.get(name)
    if spec is not None and spec.synthetic:
        return None
    if spec is not None and declared_file(name) is None and spec.files:
        real_file_path(name)  # a registered real dataset: DataError saying where the file must be
        return None
    return load_dataset(name, profile).modalities


def run(method: str, modalities: str | Sequence[str], dataset: str = "mosi", *, source: str = "auto",
        optimizer: str = "adam", lr: float | None = None, dev_set: bool = False, step_every: int | None = None,
        seeds: Sequence[int] = DEFAULT_SEEDS, profile: str = "quick", params: Mapping[str, Any] | None = None,
        window: tuple[int, int] | None = None, label_rule: str | None = None, task: str | None = None,
        task_params: Mapping[str, Any] | None = None, model: str | None = None,
        model_params: Mapping[str, Any] | None = None, test_noise: Sequence[float] | str = (),
        test_dataset: str | None = None, plugins: Sequence[str | Path] | None = None,
        runs_dir: str | Path = "runs", executor: str | None = None,
        workers: int | None = None, workers_per_gpu: int | None = None, retry_failed: bool = False,
        progress: bool = True, slurm: Mapping[str, Any] | None = None, exec_opts: Mapping[str, Any] | None = None,
        echo: Echo = print) -> pd.DataFrame:
    """Train one configuration over seeds (`bench run`); the result rows, one per seed (stored ones skip).

    executor / exec_opts: a registered backend and its options (`bench.execute.EXECUTORS`); workers,
    workers_per_gpu and slurm (partition, time, gpus_per_job, array_parallelism, ...) are aliases of options.
    """
    execution = Execution.from_arguments(executor, workers, workers_per_gpu, retry_failed, progress, slurm, exec_opts)
    execution.resolved()  # conflicting options are errors before anything is built
    configs = run_configs(method, modalities, dataset, source=source, optimizer=optimizer, lr=lr, dev_set=dev_set,
                          step_every=step_every, seeds=seeds, profile=profile, params=params, window=window,
                          label_rule=label_rule, task=task, task_params=task_params, model=model,
                          model_params=model_params, test_noise=test_noise, test_dataset=test_dataset,
                          plugins=plugins)
    first = configs[0]
    synthetic = " (synthetic surrogate)" if is_synthetic(first.dataset) else ""
    announce_synthetic(echo, [first.dataset])
    task_text = first.task + (f" {dict(first.task_params)}" if first.task_params else "")
    labels_text = f"labels {first.label_rule}, " if first.task == "classification" else ""
    _say(echo, f"{method} {modality_key(first.modalities)} on {first.dataset}{synthetic}, profile {profile}, "
               f"task {task_text}, {labels_text}model {first.model}, {first.optimizer} lr {first.lr:g}, "
               f"params {dict(first.method_params)}, {len(configs)} seed(s)")
    if first.test_noise or first.test_dataset:
        extra = [f"noise sigma {', '.join(f'{s:g}' for s in first.test_noise)}"] if first.test_noise else []
        extra += [f"out of domain on {first.test_dataset}"] if first.test_dataset else []
        _say(echo, f"test-time evaluations: {'; '.join(extra)} (stored in {Path(runs_dir) / 'evaluations'})")
    summary = _train(configs, Path(runs_dir), execution, echo)  # echo None: no progress lines either
    rows = stored_rows(runs_dir, configs)
    if echo is not None:
        for line in seed_lines(configs, rows):
            echo(line)
    _print_failures(echo, summary)
    return rows


def all_ok(rows: pd.DataFrame) -> bool:
    """Whether every run of these rows (from `run` or `grid`) is stored ok: their exit code is 1 otherwise."""
    return bool((rows["status"] == "ok").all()) if len(rows) else True


def _fmt(value: Any, digits: int = 2) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else f"{number:.{digits}f}"


def _mean_std(values: Sequence[float], digits: int = 2) -> str:
    """'mean ± std' with ddof=1 ('n/a' without values)."""
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.{digits}f} ± {_fmt(std, digits)}"


def seed_lines(configs: Sequence[RunConfig], rows: pd.DataFrame) -> list[str]:
    """One line per seed, then mean ± std (ddof=1) over the ok seeds."""
    from bench.tasks import make_task

    by_id = {row["run_id"]: row for row in rows.to_dict("records")} if len(rows) else {}
    first = configs[0] if configs else None
    names = (make_task(first.task, dict(first.task_params), spec_for(first.dataset)).summary_metrics
             if first is not None else ("acc", "loss"))
    lines: list[str] = []
    values: dict[str, list[float]] = {name: [] for name in names}
    for cfg in configs:
        row = by_id.get(cfg.run_id)
        if row is None or row["status"] == "missing":
            lines.append(f"seed {cfg.seed}  missing  {cfg.run_id}")
            continue
        shown = "  ".join(f"{name} {_fmt(row.get(f'test_{name}'), 3 if name in DETAIL_METRICS else 2)}"
                          for name in names)
        line = (f"seed {cfg.seed}  {row['status']:<6}  {shown}"
                f"  epochs {_fmt(row['epochs'], 0)}  wall {_fmt(row['wall_s'], 1)}s  {cfg.run_id}")
        if row["status"] != "ok":
            line += f"  {row['error']}"
        else:
            for name in names:
                values[name].append(float(row[f"test_{name}"]))
        lines.append(line)
    count = len(next(iter(values.values()), []))
    summary = "  ".join(f"{name} {_mean_std(values[name], 3 if name in DETAIL_METRICS else 2)}" for name in names)
    lines.append(f"mean ± std over {count} ok seed(s) (ddof=1): {summary}")
    return lines


# Metrics on a scale where two decimals are too few (MAE, correlation).
DETAIL_METRICS = ("mae", "corr")


# -- grids: presets and grid files ---------------------------------------------------------------------

def cells(preset_or_file: str, *, profile: str | None = None, datasets: str | Sequence[str] | None = None,
          source: str | None = None, seeds: str | Sequence[int] | None = None,
          methods: str | Sequence[str] | None = None, optimizers: str | Sequence[str] | None = None,
          modalities: str | Sequence[str] | None = None, dev_set: bool | None = None,
          label_rule: str | None = None, task: str | None = None, model: str | None = None,
          plugins: Sequence[str | Path] | None = None) -> list[Any]:
    """The cells (one configuration over its seeds each) of a preset or a grid file; flags as the CLI's.

    profile / datasets / source / seeds override the preset's defaults or the file's values; methods,
    optimizers, modalities (one combination per item) and dev_set filter its cells.
    """
    return GridQuery(preset_or_file, profile, datasets, source, seeds, methods, optimizers, modalities,
                     dev_set, label_rule, task, model, tuple(map(str, plugins or ()))).cells()


def check_data(grid_cells: Sequence[Any], profile: str) -> None:
    """Every dataset of the cells can be read: a missing real file is an error now, not 250 failed runs."""
    for name in sorted({c.dataset for c in grid_cells}):
        dataset_modalities(name, profile)
    check_test_datasets(cfg for cell in grid_cells for cfg in cell.configs)


def explain_cells(grid_cells: Sequence[Any]) -> str:
    """`bench grid --explain`: per cell, the first seed's fields, values and the layer that set each."""

    blocks = []
    for cell in grid_cells:
        cfg = cell.configs[0]
        head = (f"== {cell.table} | {cell.dataset} | {cell.modalities} | {cell.method} | {cell.config_label}/"
                f"{cell.optimizer} | seeds {', '.join(str(c.seed) for c in cell.configs)} (seed {cfg.seed} shown)")
        blocks.append(f"{head}\n{explain(planned_for(cfg))}")
    return "\n\n".join(blocks)


def job_table(grid_cells: Sequence[Any], runs_dir: str | Path = "runs") -> pd.DataFrame:
    """Every run of these cells plus their dependencies (first), with the stored status ('-': none)."""

    stored = store.stored_status(runs_dir)
    labels: dict[str, list[str]] = {}
    for cell in grid_cells:
        for cfg in cell.configs:
            names = labels.setdefault(cfg.run_id, [])
            if cell.config_label not in names:
                names.append(cell.config_label)
    records = [{"run_id": cfg.run_id, "dataset": cfg.dataset, "modalities": modality_key(cfg.modalities),
                "method": cfg.method, "optimizer": cfg.optimizer,
                "config": ",".join(labels.get(cfg.run_id, ["(dependency)"])), "seed": cfg.seed,
                "dependency": cfg.run_id not in labels, "stored": stored.get(cfg.run_id, "-")}
               for cfg in jobs_with_dependencies(grid_cells)]
    columns = ["run_id", "dataset", "modalities", "method", "optimizer", "config", "seed", "dependency", "stored"]
    return pd.DataFrame.from_records(records, columns=columns)


def jobs(preset_or_file: str, runs_dir: str | Path = "runs", **selection: Any) -> pd.DataFrame:
    """`bench grid --dry-run` as a frame: the runs a grid trains and what is stored of them."""
    return job_table(cells(preset_or_file, **selection), runs_dir)


def grid(preset_or_file: str, *, runs_dir: str | Path = "runs", executor: str | None = None,
         workers: int | None = None, workers_per_gpu: int | None = None, retry_failed: bool = False,
         progress: bool = True, slurm: Mapping[str, Any] | None = None, exec_opts: Mapping[str, Any] | None = None,
         echo: Echo = print, **selection: Any) -> pd.DataFrame:
    """Train every run of a preset or grid file not stored yet (`bench grid`), dependencies first.

    Returns the result rows of every run of the grid (dependencies included); `selection` as for `cells`;
    the execution arguments as for `run`.
    """

    execution = Execution.from_arguments(executor, workers, workers_per_gpu, retry_failed, progress, slurm, exec_opts)
    execution.resolved()
    query = GridQuery(preset_or_file, **selection)
    grid_cells = query.cells()
    job_list = jobs_with_dependencies(grid_cells)
    check_data(grid_cells, query.resolved_profile())
    announce_synthetic(echo, (c.dataset for c in grid_cells))
    _say(echo, f"{query.name} ({query.resolved_profile()}): {len(grid_cells)} cells, {len(job_list)} runs incl. "
               "dependencies")
    summary = _train(job_list, Path(runs_dir), execution, echo)
    _say(echo, str(summary))
    _print_failures(echo, summary)
    return stored_rows(runs_dir, job_list)


# -- reading the store -----------------------------------------------------------------------------

def results(runs_dir: str | Path = "runs") -> pd.DataFrame:
    """Every valid result row: run_id, every RunConfig field (modalities as 'text+vision', method_params as
    JSON and one param_<name> column per parameter), config_json, status, error, metrics (test_acc, test_loss,
    val_acc, val_loss, per-modality test accuracy), provenance. Skipped files are warnings on stderr."""

    rows, problems = sources.read_results(Path(runs_dir))
    sources.print_warnings(problems)
    return rows


@dataclass(frozen=True)
class Selected:
    """A reading command's selection, resolved against the store: the query, its cells, the store's rows."""

    query: GridQuery
    cells: list[Any]
    results: pd.DataFrame
    problems: list[str]
    target_rows: pd.DataFrame


def older_code_runs(rows: pd.DataFrame) -> Counter[str]:
    """Per change ("method agm@1 -> agm@2"), how many stored rows were planned for code other than the code
    loaded now (their run ids are not the ones planning gives today, so they are never reused)."""
    changes: Counter[str] = Counter()
    for text in rows["config_json"] if "config_json" in rows else ():
        try:
            changes.update(code_changes(RunConfig.from_dict(json.loads(text))))
        except (TypeError, ValueError):  # a row that does not decode is reported by the reader
            continue
    return changes


def select(preset_or_file: str, runs_dir: str | Path = "runs", **selection: Any) -> Selected:
    """Resolve a selection against the store: profile and seeds left open are taken from the store where it
    holds exactly one; EmptySelection when nothing of it is stored, a note on stderr when only some is."""

    results_frame, problems = sources.read_results(Path(runs_dir))
    sources.print_warnings(problems)
    resolved = resolve(GridQuery(preset_or_file, **selection), results_frame)
    print_note(resolved.note)
    selected_cells = resolved.query.cells()
    print_note(check_stored(resolved, selected_cells, results_frame, Path(runs_dir)))
    return Selected(resolved.query, selected_cells, results_frame, problems, resolved.target_rows)


def _baseline_kwargs(query: GridQuery) -> dict[str, Any]:
    """The selection flags the baseline pool (bench.report.tables.baseline_pool) expands 'all' with."""
    if not query.is_file:
        return query.expand_kwargs()
    datasets = query.datasets or query.spec().datasets
    return {"profile": query.resolved_profile(), "datasets": datasets, "source": query.resolved_source(),
            "seeds": query.resolved_seeds()}


def table_models(preset_or_file: str, runs_dir: str | Path = "runs", *, tune: bool = False,
                 tune_metric: str = "val_acc", test: str = "exact", correction: str = "holm",
                 **selection: Any) -> list[Any]:
    """The table models (bench.report.model.TableModel) of a preset or grid file from the store.

    tune: per method and cell, show the parameter setting with the best mean validation metric
    (`tune_metric`: val_acc or val_loss) over seeds, with its test metrics (bench.report.tune).
    test: exact (paired exact sign-flip test where runs are paired, else Welch), t (paired t-test, else
    Welch) or welch; correction: holm, bh or none over the table's tests (bench.report.stats).
    """
    from bench.report.model import StatsOptions
    from bench.report.tables import baseline_pool, models_from

    options = StatsOptions(test, correction)  # before any reading, so a typo costs nothing
    chosen = select(preset_or_file, runs_dir, **selection)
    grid_cells, notes, choices = chosen.cells, [], []
    if tune:
        choices = tuning.tune(grid_cells, chosen.results, tune_metric)
        grid_cells = [c.cell for c in choices]
        notes.append(tuning.caption_note(tune_metric, choices))
    baselines = baseline_pool(chosen.query.name, grid_cells, _baseline_kwargs(chosen.query))
    models = models_from(chosen.query.name, grid_cells, chosen.results, chosen.problems, baselines, notes, options)
    by_cell = {id(c.cell): c.note for c in choices}
    for model in models:
        for result in model.cells():
            result.note = by_cell.get(id(result.cell), result.note)
    return models


def table(preset_or_file: str, runs_dir: str | Path = "runs", *, tune: bool = False, tune_metric: str = "val_acc",
          test: str = "exact", correction: str = "holm", **selection: Any) -> pd.DataFrame:
    """The table as a tidy frame: one line per cell and metric (mean, std, n, rank, thesis, delta, test, p-value
    and corrected p-value, difference with its interval, per-seed values, verdict, note), as `bench table
    --format csv` writes it."""
    from bench.report.render import tidy_frame

    return tidy_frame(table_models(preset_or_file, runs_dir, tune=tune, tune_metric=tune_metric, test=test,
                                   correction=correction, **selection))


def _check_format(fmt: str) -> None:
    from bench.report.render import FORMATS

    if fmt not in (*FORMATS, "tex"):  # before any reading, so a typo costs nothing
        raise ConfigError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")


def ranking(preset_or_file: str, runs_dir: str | Path = "runs", metric: str = "", *, plot: str | Path | None = None,
            **selection: Any) -> str:
    """`bench table --rank`: every method's mean rank over the selection's cells, its probability of
    improvement over the reference baseline (late concatenation) and the interquartile mean of its normalised
    scores, with bootstrap intervals, and the performance profile, as markdown (plot: also draw the profile as
    a PNG there). A selection of several tasks (a preset with a regression cell) is ranked per task."""
    chosen = select(preset_or_file, runs_dir, **selection)
    by_task: dict[str, list[Any]] = {}
    for cell in chosen.cells:
        by_task.setdefault(cell.configs[0].task, []).append(cell)
    if metric and len(by_task) > 1:
        raise ConfigError(f"--metric names one metric, but the cells have the tasks {', '.join(sorted(by_task))}: "
                          "select one with --task")
    sections = []
    for index, (task, cells) in enumerate(sorted(by_task.items())):
        where = None if plot is None else Path(plot)
        if where is not None and index:  # a second task's profile beside the first: <stem>-<task>.png
            where = where.with_stem(f"{where.stem}-{task}")
        sections.append(_rank_section(chosen, cells, task, metric, where))
    return "\n".join(sections)


def _rank_section(chosen: Selected, cells: Sequence[Any], task: str, metric: str, plot: Path | None) -> str:
    """The --rank markdown of the cells of one task."""
    from bench.tasks import metric_direction, task_class

    column = metric or f"test_{task_class(task).headline}"
    rows = rank.rows_from_cells(cells, chosen.results, column)
    baseline = labels.baseline_method()
    aggregates = rank.aggregate(rows, column, baseline, higher_is_better=metric_direction(column) == "max")
    synthetic = any(is_synthetic(cell.dataset) for cell in cells)
    count = rows.groupby(list(rank.CELL_COLUMNS)).ngroups if len(rows) else 0
    head = (f"### {'SYNTHETIC SURROGATE — not MOSI/MOSEI results — ' if synthetic else ''}"
            f"{chosen.query.name}: methods across {count} cells by {column}\n\n")
    foot = (f"\nMean rank: per cell (dataset x modality block x optimizer x configuration) methods ranked by "
            f"their mean over seeds, 1 = best, ties share the rank, averaged over the cells a method is in (cells "
            f"hold different method sets, e.g. the thesis ran fewer methods on three modalities). "
            f"P(improvement): per cell the chance that a seed of the method beats a seed of "
            f"{labels.method_name(baseline)} (ties count half), averaged over cells; 95 % interval from a "
            f"stratified bootstrap over seeds ({rank.BOOTSTRAP_SAMPLES} resamples, seed {rank.BOOTSTRAP_SEED}). "
            f"{rank.RANK_FOOT}\n")
    profile = rank.profile_section(rows, column, aggregates, metric_direction(column) == "max", plot,
                                   f"{chosen.query.name}: {column}", labels.method_name)
    return head + rank.markdown(aggregates, labels.method_name(baseline), labels.method_name) + foot + profile


EVALUATION_FORMATS = ("md", "csv")


def evaluations(runs_dir: str | Path = "runs", run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Stored test-time evaluations (`<runs_dir>/evaluations/`): run_id, kind ("noise" / "ood"), sigma,
    test_dataset and every task's test_<metric> column; empty (with those columns) when none is stored."""

    frame, problems = read_evaluations(runs_dir, run_ids)
    print_warnings(problems)
    return frame


def evaluations_frame(preset_or_file: str, runs_dir: str | Path = "runs", metric: str = "",
                      **selection: Any) -> tuple[pd.DataFrame, Any, Selected]:
    """The tidy evaluations table of a selection (bench.report.evaluations), its metric and the selection."""
    from bench.report.tables import baseline_pool

    chosen = select(preset_or_file, runs_dir, **selection)
    shown = report_evaluations.table_metric(chosen.cells, metric)
    baselines = baseline_pool(chosen.query.name, chosen.cells, _baseline_kwargs(chosen.query))
    ids = [cfg.run_id for cell in [*chosen.cells, *baselines] for cfg in cell.configs]
    frame = report_evaluations.evaluations_frame(chosen.cells, chosen.results, evaluations(runs_dir, ids), shown,
                                                 baselines)
    return frame, shown, chosen


def render_evaluations(preset_or_file: str, runs_dir: str | Path = "runs", fmt: str = "md", metric: str = "",
                       **selection: Any) -> str:
    """`bench table --evaluations`: per cell, the clean test metric beside its noisy and out-of-domain
    values (mean ± std over seeds, † / ‡ against late concatenation), as md or csv."""

    if fmt not in EVALUATION_FORMATS:
        raise ConfigError(f"--evaluations renders {' or '.join(EVALUATION_FORMATS)}, not {fmt!r}")
    frame, shown, chosen = evaluations_frame(preset_or_file, runs_dir, metric, **selection)
    if fmt == "csv":
        return frame.to_csv(index=False)
    synthetic = any(is_synthetic(cell.dataset) for cell in chosen.cells)
    return report_evaluations.markdown(frame, chosen.query.name, shown, synthetic)


def render_modality_view(preset_or_file: str, runs_dir: str | Path = "runs", fmt: str = "md",
                         **selection: Any) -> str:
    """`bench table --modality-view`: per cell and modality, the branch's metrics against its own label and the
    multimodal one (bench.report.modality_view), as md or csv."""
    if fmt not in EVALUATION_FORMATS:
        raise ConfigError(f"--modality-view renders {' or '.join(EVALUATION_FORMATS)}, not {fmt!r}")
    chosen = select(preset_or_file, runs_dir, **selection)
    frame = modality_view.view_frame(chosen.cells, chosen.results)
    if fmt == "csv":
        return frame.to_csv(index=False)
    synthetic = any(is_synthetic(cell.dataset) for cell in chosen.cells)
    return modality_view.markdown(frame, chosen.query.name, synthetic)


def render_table(preset_or_file: str, runs_dir: str | Path = "runs", fmt: str = "md", vs_thesis: bool = False, *,
                 tune: bool = False, tune_metric: str = "val_acc", test: str = "exact", correction: str = "holm",
                 effects: bool = False, per_seed: bool = False, **selection: Any) -> str:
    """The table as text (`bench table`): md, latex, csv or html (test, correction: see table_models;
    effects: the difference to the baseline with its interval in md / LaTeX cells; per_seed: each seed's value)."""
    from bench.report.render import render

    _check_format(fmt)
    models = table_models(preset_or_file, runs_dir, tune=tune, tune_metric=tune_metric, test=test,
                          correction=correction, **selection)
    return render(models, fmt, vs_thesis, effects=effects, per_seed=per_seed)


def write_tables(preset_or_file: str, runs_dir: str | Path = "runs", out_dir: str | Path = "reports",
                 vs_thesis: bool = True, **selection: Any) -> dict[str, Path]:
    """Write <out_dir>/<name>.{md,tex,csv,html} (name: the preset's or the grid file's); {format: path}."""
    from bench.report.render import render
    from bench.report.tables import FILE_SUFFIXES

    models = table_models(preset_or_file, runs_dir, **selection)
    name = GridQuery(preset_or_file).name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt, suffix in FILE_SUFFIXES.items():
        paths[fmt] = out / f"{name}.{suffix}"
        store.write_output(paths[fmt], render(models, fmt, vs_thesis))
    return paths


def report(preset_or_file: str, runs_dir: str | Path = "runs", out_dir: str | Path = "reports", *,
           test: str = "exact", correction: str = "holm", **selection: Any) -> Path:
    """Write <out_dir>/<name>-report.html (`bench report`): the tables vs the thesis and their figures
    (test, correction: see table_models)."""
    from bench.report.model import StatsOptions
    from bench.report.page import write_page
    from bench.report.tables import baseline_pool

    options = StatsOptions(test, correction)
    chosen = select(preset_or_file, runs_dir, **selection)
    baselines = baseline_pool(chosen.query.name, chosen.cells, _baseline_kwargs(chosen.query))
    return write_page(chosen.query.name, chosen.cells, chosen.results, chosen.problems, baselines, Path(runs_dir),
                      Path(out_dir), options)


def _run_selection(run_ids: Sequence[str] | None, methods: str | Sequence[str] | None, dataset: str | None,
                   modalities: str | None, optimizer: str | None, dev_set: bool | None,
                   seeds: str | Sequence[int] | None, task: str | None = None, model: str | None = None) -> Any:
    from bench.report.plots import Selection

    return Selection(run_ids=tuple(run_ids) if run_ids else None, methods=as_tuple(methods), dataset=dataset,
                     modalities=modalities, optimizer=optimizer, dev_set=dev_set, seeds=as_seeds(seeds),
                     task=task, model=model)


def trajectories(runs_dir: str | Path = "runs", run_ids: Sequence[str] | None = None, *,
                 methods: str | Sequence[str] | None = None, dataset: str | None = None,
                 modalities: str | None = None, optimizer: str | None = None, dev_set: bool | None = None,
                 seeds: str | Sequence[int] | None = None, task: str | None = None,
                 model: str | None = None) -> pd.DataFrame:
    """The trajectories of the selected ok runs (long: run_id, epoch, step, split, series, modality, value)
    joined with their dataset, modalities, method, optimizer, dev_set, seed, profile and method_params.
    An empty frame when nothing matches."""
    from bench.report.plots import filter_runs

    rows = filter_runs(results(runs_dir), _run_selection(run_ids, methods, dataset, modalities, optimizer,
                                                         dev_set, seeds, task, model))
    traj, problems = sources.read_trajectories(Path(runs_dir), list(rows["run_id"]) if len(rows) else [])
    sources.print_warnings(problems)
    config = ["run_id", "dataset", "modalities", "method", "optimizer", "dev_set", "seed", "profile",
              "method_params"]
    present = [c for c in config if c in rows]
    return traj.merge(rows[present], on="run_id", how="left") if len(rows) else traj.assign(
        **{c: pd.Series(dtype=object) for c in config[1:]})


def predictions(runs_dir: str | Path = "runs", run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-sample predictions of ok runs (`<runs_dir>/predictions/<run_id>.parquet`): columns run_id, split,
    sample, target, prediction, and any others stored; `run_ids` (default: every ok run).

    Files without the five columns, or unreadable, are skipped with a warning on stderr, and so is an ok run
    whose file is missing (one line each), so a frame with fewer runs than asked never goes unnoticed.
    """
    ok = {rid for rid, status in store.stored_status(runs_dir).items() if status == "ok"}
    ids = sorted(ok) if run_ids is None else [rid for rid in run_ids if rid in ok]
    frame, problems = read_predictions(runs_dir, ids, report_missing=True)
    print_warnings(problems)
    return frame


def plot(kind: str, runs_dir: str | Path = "runs", *, run_ids: Sequence[str] | None = None,
         methods: str | Sequence[str] | None = None, dataset: str | None = None, modalities: str | None = None,
         optimizer: str | None = None, dev_set: bool | None = None, seeds: str | Sequence[int] | None = None,
         task: str | None = None, model: str | None = None, out: str | Path | None = None,
         out_dir: str | Path = "reports", pdf: bool = False) -> list[Path]:
    """Draw a trend figure (`bench plot`: ratios, strengths, losses, prototypes); the written paths."""
    from bench.report.plots import plot as draw

    selection = _run_selection(run_ids, methods, dataset, modalities, optimizer, dev_set, seeds, task, model)
    return draw(kind, Path(runs_dir), selection, out=None if out is None else Path(out), out_dir=Path(out_dir),
                pdf=pdf)

