"""CLI commands that train and inspect runs: `bench run`, `bench grid`, `bench ls`, `bench rerun`.

Bad input raises ConfigError (cli.main turns it into exit code 2 and one line); a grid with a failed
run exits 1 (sys.exit, which cli.main passes through).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from bench import api, execute, gridfile, store
from bench.api import all_ok
from bench.config import (
    PROFILES,
    SEED_LIMIT,
    ConfigError,
    RunConfig,
    canonical_modalities,
    modality_key,
    noise_levels,
)
from bench.data import data_fingerprint
from bench.execute import default_device
from bench.params import check_value
from bench.plugins import code_changes, load_recorded
from bench.presets import dependencies, jobs_with_dependencies
from bench.report import sources
from bench.selection import EmptySelection, GridQuery

# Options several commands share, each defined once (flag and help text); defaults stay in the signatures.
ExplainOpt = Annotated[bool, typer.Option("--explain", help="Print every field of the config, its value and "
                                          "the layer that set it (profile < dataset recipe < method recipe < "
                                          "configuration < user); train nothing.")]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Results store.")]
LabelRuleOpt = Annotated[str | None, typer.Option(
    "--label-rule", help="MOSEI's 7 classes: binned ([133]'s bins, the default) or round (round half to even).")]

# -- parsing helpers -------------------------------------------------------------------------------


def parse_list(value: str | None) -> list[str] | None:
    """'a,b' -> ['a', 'b']; None or blank -> None."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def parse_seeds(value: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2); ConfigError for anything else."""
    try:
        seeds = tuple(dict.fromkeys(int(s) for s in value.split(",") if s.strip()))
    except ValueError as err:
        raise ConfigError(f"--seeds must be comma-separated integers, got {value!r}") from err
    if not seeds or min(seeds) < 0 or max(seeds) >= SEED_LIMIT:
        raise ConfigError(f"--seeds needs one or more integers in [0, 2**32) = [0, {SEED_LIMIT - 1}], got {value!r}")
    return seeds


def parse_modality_filter(value: str | None) -> list[str] | None:
    """'text+vision,audio+vision' -> two combinations; 'text,vision' (no '+') -> one combination."""
    if value is None or not value.strip():
        return None
    if "+" in value:
        return [modality_key(canonical_modalities(part)) for part in value.split(",") if part.strip()]
    return [modality_key(canonical_modalities(value))]


def parse_window(value: str) -> tuple[int, int]:
    """'0:4' -> (0, 4); '0:' or '0:-1' -> every epoch from 0."""
    start, sep, end = value.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(start), (int(end) if end.strip() else -1)
    except ValueError as err:
        raise ConfigError(f"--window must look like START:END (epochs, inclusive), got {value!r}") from err


def parse_noise(value: str | None) -> tuple[float, ...]:
    """--test-noise '0.1,0.5,1.0' -> (0.1, 0.5, 1.0); ConfigError for anything but numbers >= 0."""

    if value is not None and not value.strip():
        raise ConfigError("--test-noise needs one or more standard deviations, e.g. 0.1,0.5,1.0")
    try:
        return noise_levels(value)
    except ConfigError as err:
        raise ConfigError(f"--test-noise: {err}") from err


def parse_value(text: str) -> Any:
    """A --param value: JSON when it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_pairs(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """Repeated name=value options (values as JSON when they parse); checked where they are used."""
    pairs: dict[str, Any] = {}
    for item in items or ():
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"{flag} must look like name=value, got {item!r}")
        pairs[name.strip()] = parse_value(raw.strip())
    return pairs


def parse_params(items: Sequence[str] | None, method: str) -> dict[str, Any]:
    """--param name=value pairs, checked against the method's parameters (bench.params: alpha=1 is 1.0)."""

    return {name: check_value(method, name, value) for name, value in parse_pairs(items, "--param").items()}


# -- execution options: declared once, added to bench run, bench grid and bench reproduce ---------------

# name -> (flag declaration, default). The flags after --exec-opt are aliases of executor options
# (bench.execute.backend: each backend's options dataclass names its alias flag).
EXECUTION_OPTIONS: dict[str, tuple[Any, Any]] = {
    "executor": (Annotated[str | None, typer.Option(
        "--executor", help="A registered executor: inline, local, slurm, ... (default: local with several workers "
                           "or a GPU, else inline).")], None),
    "exec_opt": (Annotated[list[str] | None, typer.Option(
        "--exec-opt", help="Executor option key=value (repeatable), checked against the executor's options, e.g. "
                           "local: workers, workers_per_gpu; slurm: partition, time (minutes), gpus_per_job, "
                           "array_parallelism, account, qos, constraint, cpus_per_task, mem_gb, setup.")], None),
    "retry_failed": (Annotated[bool, typer.Option("--retry-failed", help="Retrain stored failures.")], False),
    "no_progress": (Annotated[bool, typer.Option("--no-progress", help="Plain output, no live display.")], False),
    "workers": (Annotated[int | None, typer.Option("--workers", help="Worker processes (local executor).")], None),
    "workers_per_gpu": (Annotated[int | None, typer.Option("--workers-per-gpu", help="Workers per visible GPU.")],
                        None),
    "partition": (Annotated[str | None, typer.Option("--partition", help="Slurm partition.")], None),
    "time_min": (Annotated[int | None, typer.Option("--time", help="Slurm time limit per job, minutes.")], None),
    "gpus_per_job": (Annotated[int | None, typer.Option("--gpus-per-job", help="Slurm GPUs per job.")], None),
    "array_parallelism": (Annotated[int | None, typer.Option("--array-parallelism",
                                                              help="Slurm jobs at once.")], None),
    "slurm_cluster": (Annotated[str | None, typer.Option("--slurm-cluster", hidden=True,
                                                         help="submitit cluster (local/debug for testing).")], None),
}


def parse_exec_opts(items: Sequence[str] | None) -> dict[str, str]:
    """--exec-opt key=value pairs; the values stay strings (the executor's options dataclass converts them)."""
    pairs: dict[str, str] = {}
    for item in items or ():
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise ConfigError(f"--exec-opt must look like key=value, got {item!r}")
        if name in pairs and pairs[name] != raw.strip():
            raise ConfigError(f"--exec-opt {name} given twice ({pairs[name]!r} and {raw.strip()!r})")
        pairs[name] = raw.strip()
    return pairs


def execution_kwargs(executor: str | None = None, exec_opt: Sequence[str] | None = None, retry_failed: bool = False,
                     no_progress: bool = False, workers: int | None = None, workers_per_gpu: int | None = None,
                     partition: str | None = None, time_min: int | None = None, gpus_per_job: int | None = None,
                     array_parallelism: int | None = None, slurm_cluster: str | None = None) -> dict[str, Any]:
    """The execution keyword arguments of bench.api.run / bench.api.grid for the CLI's flags."""
    slurm = {"partition": partition, "time": time_min, "gpus_per_job": gpus_per_job,
             "array_parallelism": array_parallelism, "cluster": slurm_cluster}
    return {"executor": executor, "workers": workers, "workers_per_gpu": workers_per_gpu,
            "retry_failed": retry_failed, "progress": not no_progress, "slurm": slurm,
            "exec_opts": parse_exec_opts(exec_opt)}


def with_execution_options(**defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: add the EXECUTION_OPTIONS flags to a command (`defaults` overrides theirs); the command gets
    them as one argument, `execution` (execution_kwargs' dict)."""
    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "execution"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=flag,
                                   default=defaults.get(name, default))
                 for name, (flag, default) in EXECUTION_OPTIONS.items()]

        @functools.wraps(command)
        def with_options(**kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in EXECUTION_OPTIONS}
            return command(**kwargs, execution=execution_kwargs(**given))

        with_options.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        return with_options

    return wrap


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C during training exits 130 (finished runs are stored; rerunning resumes)."""
    try:
        yield
    except KeyboardInterrupt as err:
        # Exit here: typer turns KeyboardInterrupt into a return value that cli.main does not pass on.
        typer.echo("interrupted: finished runs are stored; rerun the same command to resume", err=True)
        sys.exit(128 + getattr(err, "signum", 2))  # 130 for Ctrl-C, 143 for SIGTERM


def _exit_unless_all_ok(rows: Any) -> None:
    """Exit 1 unless every run is stored ok."""

    if not all_ok(rows):
        sys.exit(1)  # typer.Exit would be swallowed by cli.main's standalone_mode=False


# -- bench run -------------------------------------------------------------------------------------

@with_execution_options()
def run_command(
    method: str = typer.Option(..., "--method", help="Method name (bench.methods registry)."),
    modalities: str = typer.Option(..., "--modalities", help="Comma-separated, e.g. text,vision."),
    dataset: str = typer.Option("mosi", "--dataset", help="mosi, mosei, synth-mosi, synth-mosei or a file path."),
    source: str = typer.Option("auto", "--source", help="auto (real files if present), synth or real."),
    optimizer: str = typer.Option("adam", "--optimizer", help="adam or sgd."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (default: the thesis's)."),
    dev_set: bool = typer.Option(False, "--dev-set", help="Compute ratios on the development split."),
    step_every: int | None = typer.Option(None, "--step-every", help="Optimizer step every N batches."),
    seeds: str = typer.Option("0,1,2,3,4", "--seeds", help="Comma-separated seeds."),
    profile: str = typer.Option("quick", "--profile", help=f"One of {', '.join(PROFILES)}."),
    param: list[str] | None = typer.Option(None, "--param", help="Method parameter name=value (repeatable)."),
    window: str | None = typer.Option(None, "--window", help="Modulation window START:END (epochs)."),
    label_rule: LabelRuleOpt = None,
    task: str | None = typer.Option(None, "--task", help="Default: the method's (classification, or its only "
                                    "task). classification (the thesis's) or regression "
                             "(MMSA's protocol: score in [-3, 3], L1 loss, Acc-2/F1/Acc-7/Acc-5/MAE/Corr)."),
    task_param: list[str] | None = typer.Option(None, "--task-param", help="Task option name=value, e.g. "
                                                "loss=mse or checkpoint=mae (regression)."),
    model: str | None = typer.Option(None, "--model", help="Model name (bench.models registry; default: the "
                                     "method's, late_fusion for the thesis methods)."),
    model_param: list[str] | None = typer.Option(None, "--model-param", help="Model parameter name=value, e.g. "
                                                 "text_hidden=128 (repeatable)."),
    test_noise: str | None = typer.Option(None, "--test-noise", help="After training, also test the best "
                                          "checkpoint with Gaussian noise of these standard deviations on every "
                                          "modality's features, e.g. 0.1,0.5,1.0 (seeded; see bench table "
                                          "--evaluations)."),
    test_dataset: str | None = typer.Option(None, "--test-dataset", help="Also test on this dataset's test "
                                            "split (out of domain; same modalities, feature sizes and classes)."),
    runs_dir: RunsDir = Path("runs"),
    explain: ExplainOpt = False,
    execution: dict[str, Any] | None = None,
) -> None:
    """Train one configuration over seeds (thesis defaults, flags on top); print per-seed results."""

    if explain:
        typer.echo(api.explain_run(
            method, modalities, dataset, source=source, optimizer=optimizer, lr=lr, dev_set=dev_set,
            step_every=step_every, seeds=parse_seeds(seeds), profile=profile, params=parse_params(param, method),
            window=parse_window(window) if window is not None else None, label_rule=label_rule, task=task,
            task_params=parse_pairs(task_param, "--task-param"), model=model,
            model_params=parse_pairs(model_param, "--model-param"), test_noise=parse_noise(test_noise),
            test_dataset=test_dataset))
        return
    execution = execution or {}
    api.Execution.from_arguments(**execution).resolved()  # conflicting flags before the parameters are parsed
    seed_list = parse_seeds(seeds)
    with _interruptible():
        rows = api.run(method, modalities, dataset, source=source, optimizer=optimizer, lr=lr, dev_set=dev_set,
                       step_every=step_every, seeds=seed_list, profile=profile, params=parse_params(param, method),
                       window=parse_window(window) if window is not None else None, label_rule=label_rule,
                       task=task, task_params=parse_pairs(task_param, "--task-param"), model=model,
                       model_params=parse_pairs(model_param, "--model-param"),
                       test_noise=parse_noise(test_noise), test_dataset=test_dataset, runs_dir=runs_dir,
                       echo=typer.echo, **execution)
    _exit_unless_all_ok(rows)


# -- bench grid ------------------------------------------------------------------------------------

@with_execution_options()
def grid_command(
    preset: str | None = typer.Argument(None, help="Preset name (e.g. table-6.10) or grid file (my-grid.toml)."),
    show: bool = typer.Option(False, "--show", help="Print the preset (or file) as a grid file and exit."),
    profile: str | None = typer.Option(None, "--profile", help=f"One of {', '.join(PROFILES)} (default: the "
                                       "file's, else quick)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Comma-separated: mosi, mosei (or synth-*)."),
    source: str | None = typer.Option(None, "--source", help="auto (real files if present), synth or real."),
    method: str | None = typer.Option(None, "--method", help="Only these methods (comma-separated)."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="Only these optimizers (comma-separated)."),
    modalities: str | None = typer.Option(None, "--modalities",
                                          help="Only these combinations, e.g. text+vision,audio+vision."),
    dev_set: bool | None = typer.Option(None, "--dev-set/--no-dev-set", help="Only dev-set rows / only others."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated seeds (default: the file's, else "
                                     "0,1,2,3,4)."),
    label_rule: LabelRuleOpt = None,
    task: str | None = typer.Option(None, "--task", help="Every row on this task (over the preset's or file's); "
                                    "rows whose method has no form for it are left out, with a note."),
    model: str | None = typer.Option(None, "--model", help="Every row on this model (a plugin's too); rows whose "
                                     "method needs a capability it lacks are left out, with a note."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the jobs and what is stored; train nothing."),
    runs_dir: RunsDir = Path("runs"),
    explain: ExplainOpt = False,
    yes: bool = typer.Option(False, "--yes", help=f"Build a grid file of more than {gridfile.MAX_RUNS:,} runs."),
    execution: dict[str, Any] | None = None,
) -> None:
    """Train every run of a preset or grid file that is not stored yet (resumable), dependencies first."""
    with gridfile.confirmed(yes):
        _grid(preset, show, profile, dataset, source, method, optimizer, modalities, dev_set, seeds, label_rule,
              dry_run, runs_dir, explain, execution, task, model)


def _grid(preset: str | None, show: bool, profile: str | None, dataset: str | None, source: str | None,
          method: str | None, optimizer: str | None, modalities: str | None, dev_set: bool | None,
          seeds: str | None, label_rule: str | None, dry_run: bool, runs_dir: Path, explain: bool,
          execution: dict[str, Any] | None, task: str | None = None, model: str | None = None) -> None:
    """bench grid, after --yes is taken."""

    if preset is None:
        raise ConfigError("bench grid needs a preset (e.g. table-6.10) or a grid file (my-grid.toml)")
    execution = execution or {}
    if dry_run and execution.get("retry_failed"):
        raise ConfigError("--dry-run trains nothing; it conflicts with --retry-failed")
    selection = {"profile": profile, "datasets": parse_list(dataset), "source": source,
                 "seeds": parse_seeds(seeds) if seeds is not None else None, "methods": parse_list(method),
                 "optimizers": parse_list(optimizer), "modalities": parse_modality_filter(modalities),
                 "dev_set": dev_set, "label_rule": label_rule, "task": task, "model": model}
    if show:
        typer.echo(show_grid(preset, selection), nl=False)
        return
    if explain:
        typer.echo(api.explain_cells(GridQuery(preset, **selection).cells()))
        return
    if dry_run:
        query = GridQuery(preset, **selection)
        cells = query.cells()
        api.check_data(cells, query.resolved_profile())
        api.announce_synthetic(typer.echo, (c.dataset for c in cells))
        print_dry_run(cells, runs_dir)
        return
    with _interruptible():
        rows = api.grid(preset, runs_dir=runs_dir, echo=typer.echo, **execution, **selection)
    _exit_unless_all_ok(rows)


def show_grid(target: str, selection: dict[str, Any]) -> str:
    """`bench grid --show`: a preset (or a grid file, normalised) as grid-file text."""

    query = GridQuery(target, **selection)
    filters = [flag for flag, value in (("--method", query.methods), ("--optimizer", query.optimizers),
                                        ("--modalities", query.modalities), ("--dev-set", query.dev_set))
               if value is not None]
    if filters:
        raise ConfigError(f"--show writes the whole grid; {filters[0]} does not apply (edit the file instead)")
    spec = query.spec()
    if spec is None:
        return gridfile.preset_as_file(target, query.profile, query.datasets, query.seeds, query.resolved_source())
    changes = {k: v for k, v in (("profile", query.profile), ("seeds", query.seeds),
                                 ("datasets", query.datasets), ("source", query.source)) if v is not None}
    return gridfile.to_toml(spec.replace(**changes), [f"bench grid file {spec.where}, as `bench grid --show` "
                                                      "reads it."])


def print_dry_run(cells: Sequence[Any], runs_dir: Path) -> None:
    """The job list with what is stored; trains nothing."""

    jobs = api.job_table(cells, runs_dir)
    typer.echo(f"{'run_id':<16}  {'dataset':<12} {'modalities':<18} {'method':<11} {'optimizer':<9} "
               f"{'config':<22} {'seed':>4}  stored")
    for job in jobs.itertuples():
        typer.echo(f"{job.run_id:<16}  {job.dataset:<12} {job.modalities:<18} {job.method:<11} "
                   f"{job.optimizer:<9} {job.config:<22} {job.seed:>4}  {job.stored}")
    ok, failed = int((jobs["stored"] == "ok").sum()), int((jobs["stored"] == "failed").sum())
    typer.echo(f"{len(jobs)} jobs ({len(cells)} cells, {int(jobs['dependency'].sum())} dependency runs): {ok} already "
               f"stored ok, {failed} stored failures, {len(jobs) - ok - failed} to train")


# -- bench ls --------------------------------------------------------------------------------------

def ls_command(
    runs_dir: RunsDir = Path("runs"),
    preset: str | None = typer.Option(None, "--preset", help="Also show what this preset or grid file lacks."),
    profile: str | None = typer.Option(None, "--profile", help="Profile of --preset (default: the file's, or "
                                       "the one the store holds, else quick)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Datasets of --preset."),
    source: str | None = typer.Option(None, "--source", help="Data source of --preset."),
    seeds: str | None = typer.Option(None, "--seeds", help="Seeds of --preset (default: the file's, or the set "
                                     "the store holds, else 0,1,2,3,4)."),
    label_rule: LabelRuleOpt = None,
    task: str | None = typer.Option(None, "--task", help="Only runs of this task (with --preset: every row on it)."),
    model: str | None = typer.Option(None, "--model", help="Only runs on this model (with --preset: every row on "
                                     "it)."),
) -> None:
    """What is stored (counts by dataset / method / status), corrupt files, what a preset lacks."""

    if preset is not None:
        chosen = api.select(preset, runs_dir, profile=profile, datasets=parse_list(dataset), source=source,
                            seeds=parse_seeds(seeds) if seeds is not None else None, label_rule=label_rule,
                            task=task, model=model)
        results, problems = chosen.results, chosen.problems
    else:
        results, problems = sources.read_results(runs_dir)
        if not len(results) and not problems:
            raise EmptySelection(f"no stored runs under {runs_dir} (bench run or bench grid trains some)")
        results = filter_parts(results, dataset, task, model)
    typer.echo(f"{runs_dir}: {len(results)} stored run(s)")
    if len(results):
        columns = [c for c in ("dataset", "task", "model", "method") if c in results]
        counts = results.groupby([*columns, "status"]).size().unstack("status", fill_value=0)
        typer.echo(counts.to_string())
        print_older_code(results)
    for problem in problems:
        typer.echo(f"{'left out' if store.is_old_scheme_problem(problem) else 'corrupt'}: {problem}")
    print_mixed_data(results)
    if preset is not None:
        print_preset_status(chosen.query, chosen.cells, results)


def filter_parts(results: Any, dataset: str | None, task: str | None, model: str | None) -> Any:
    """The stored rows of these datasets (comma-separated), task and model (None: any)."""
    wanted = {"dataset": parse_list(dataset), "task": (task,) if task else None, "model": (model,) if model else None}
    for column, values in wanted.items():
        if values and column in results:
            results = results[results[column].astype(str).isin(values)]
    return results


def print_older_code(results: Any) -> None:
    """How many stored runs were trained by code other than the code loaded now (a bumped version, an edited
    plugin): their ids are not the ones a new plan gives, so they are never reused."""
    older = api.older_code_runs(results)
    if older:
        shown = "; ".join(f"{change} ({count} runs)" for change, count in older.most_common(8))
        typer.echo(f"{sum(older.values())} stored run(s) came from older code, never reused for the code loaded "
                   f"now: {shown}")


def print_mixed_data(results: Any) -> None:
    """Warn when one dataset's runs were trained on different data (the run id does not hash the data)."""
    if not len(results) or "data_fingerprint" not in results:
        return
    ok = results[(results["status"] == "ok") & (results["data_fingerprint"].astype(str) != "")]
    for dataset, prints in ok.groupby("dataset")["data_fingerprint"]:
        distinct = sorted(set(prints.astype(str)))
        if len(distinct) > 1:
            shown = ", ".join(f"{d[:12]} ({int((prints == d).sum())} runs)" for d in distinct)
            typer.echo(f"warning: {dataset} runs were trained on {len(distinct)} different data versions: {shown}")


def print_preset_status(query: Any, cells: Sequence[Any], results: Any) -> None:
    """How much of a preset or grid file is stored; the cells that still lack runs."""

    jobs = jobs_with_dependencies(cells)
    status = dict(zip(results["run_id"], results["status"], strict=True)) if len(results) else {}
    ok = sum(1 for cfg in jobs if status.get(cfg.run_id) == "ok")
    failed = sum(1 for cfg in jobs if status.get(cfg.run_id) == "failed")
    kind = "grid file" if query.is_file else "preset"
    typer.echo(f"{kind} {query.name} ({query.resolved_profile()}): {len(jobs)} runs incl. dependencies, "
               f"{ok} ok, {failed} failed, {len(jobs) - ok - failed} missing")
    for cell in cells:
        lacking = [cfg.seed for cfg in cell.configs if status.get(cfg.run_id) != "ok"]
        if lacking:
            typer.echo(f"  lacks {cell.table} {cell.dataset} {cell.modalities} {cell.method} "
                       f"{cell.config_label}/{cell.optimizer}: seeds {','.join(map(str, lacking))}")


# -- bench rerun -----------------------------------------------------------------------------------

def metric_differences(stored: dict[str, float], fresh: dict[str, float]) -> list[str]:
    """One line per metric that differs (NaN equals NaN); empty when every metric matches exactly."""
    lines = []
    for name in sorted(set(stored) | set(fresh)):
        a, b = stored.get(name), fresh.get(name)
        a = None if a is None else float(a)
        b = None if b is None else float(b)
        same = a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))
        if not same:
            delta = f" (delta {b - a:+.6g})" if a is not None and b is not None else ""
            lines.append(f"{name}: stored {a!r} -> rerun {b!r}{delta}")
    return lines


def rerun_command(
    run_id: str = typer.Argument(..., help="Run id of a stored run."),
    runs_dir: RunsDir = Path("runs"),
    device: str | None = typer.Option(None, "--device", help="Device (default: cpu, or cuda if stored on a GPU)."),
) -> None:
    """Retrain a stored run from its config_json and check that every metric matches exactly."""

    try:
        row = store.read_row(runs_dir, run_id)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    for problem in load_recorded([row.get("plugin_files")]):
        typer.echo(f"warning: {problem}", err=True)
    cfg = store.stored_config(row)
    changed = code_changes(cfg)
    if changed:
        raise ConfigError(f"run {run_id} was trained by other code than is loaded now ({'; '.join(changed)}): "
                          "a rerun would not test the stored numbers; check out that code (or plugin file) first")
    check_same_data(run_id, cfg)
    deps = {}
    for dep in dependencies(cfg):
        deps[dep.run_id] = store.load_checkpoint(runs_dir, dep.run_id)
    where = device or _rerun_device(str(row.get("device") or "cpu"))
    threads = _stored_threads(row)
    typer.echo(f"rerunning {run_id}: {execute.describe(cfg)} on {where} (stored on {row.get('device')}"
               f"{f', {threads} CPU thread(s)' if threads else ''})")
    job_fn = execute.default_job_fn()
    with _torch_threads(threads):
        result = job_fn(cfg, deps, device=where)
    differences = metric_differences(store.stored_metrics(row), dict(result.metrics or {}))
    differences += evaluation_differences(runs_dir, run_id, list(getattr(result, "evaluations", None) or []))
    if result.status != row["status"]:
        differences.insert(0, f"status: stored {row['status']} -> rerun {result.status} ({result.error})")
    if differences:
        typer.echo("rerun differs from the stored run:")
        for line in differences:
            typer.echo(f"  {line}")
        sys.exit(1)
    typer.echo(f"every metric matches exactly ({len(store.stored_metrics(row))} metrics, status {result.status})")


def evaluation_key(row: dict[str, Any]) -> str:
    """'noise sigma=0.5' / 'ood synth-mosei': which test-time evaluation a row is."""
    if row.get("kind") == "noise":
        return f"noise sigma={float(row['sigma']):g}"
    return f"{row.get('kind')} {row.get('test_dataset', '')}"


def evaluation_differences(runs_dir: Path, run_id: str, fresh: list[dict[str, Any]]) -> list[str]:
    """metric_differences of each stored test-time evaluation against the rerun's (prefixed by which)."""

    stored_rows, _ = store.read_evaluations(runs_dir, [run_id])
    stored = {evaluation_key(r): r for r in stored_rows.to_dict("records")}
    rerun = {evaluation_key(r): r for r in fresh}
    lines = []
    for key in sorted(set(stored) | set(rerun)):
        if key not in stored or key not in rerun:
            lines.append(f"{key}: {'stored' if key in stored else 'rerun'} only")
            continue
        names = [c for c in stored[key] if c.startswith("test_") and c != "test_dataset"
                 and not math.isnan(float(stored[key][c]))]
        lines += [f"{key} {line}" for line in metric_differences({n: stored[key][n] for n in names},
                                                                 {n: rerun[key].get(n) for n in names})]
    return lines


def check_same_data(run_id: str, cfg: RunConfig) -> None:
    """ConfigError when the data a run was pinned to (data_version) is not what its dataset holds now."""

    if not cfg.data_version:
        return
    now = data_fingerprint(cfg.dataset, cfg.profile)  # DataError when the file is gone
    if now != cfg.data_version:
        raise ConfigError(f"cannot rerun {run_id}: its data changed since it was trained ({cfg.dataset} was "
                          f"{cfg.data_version[:12]}, is now {now[:12]}); an exact rerun needs the original data")


def _stored_threads(row: Any) -> int | None:
    """The torch CPU thread count the stored run used (None when unknown)."""
    value = row.get("torch_threads")
    try:
        return int(value) if value is not None and not math.isnan(float(value)) else None
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run with the stored thread count: CPU float reductions depend on it, so exact reruns need it."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rerun_device(stored: str) -> str:

    return "cuda" if stored.startswith("cuda") and default_device() == "cuda" else "cpu"


def register(app: typer.Typer) -> None:
    """Add run, grid, ls and rerun to the bench app."""
    app.command("run")(run_command)
    app.command("grid")(grid_command)
    app.command("ls")(ls_command)
    app.command("rerun")(rerun_command)
