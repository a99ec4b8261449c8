"""CLI commands that train and inspect runs: `bench run`, `bench grid`, `bench ls`, `bench rerun`.

Bad input raises ConfigError (cli.main turns it into exit code 2 and one line); a grid with a failed
run exits 1 (sys.exit, which cli.main passes through).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.config import PROFILES, ConfigError, RunConfig, canonical_modalities, modality_key

# Options several commands share, each defined once (flag and help text); defaults stay in the signatures.
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Results store.")]
ExecutorOpt = Annotated[str | None, typer.Option("--executor", help="inline, local or slurm.")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Worker processes (local executor).")]
WorkersPerGpuOpt = Annotated[int, typer.Option("--workers-per-gpu", help="Workers per visible GPU.")]
RetryFailedOpt = Annotated[bool, typer.Option("--retry-failed", help="Retrain stored failures.")]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="Plain output, no live display.")]
PartitionOpt = Annotated[str | None, typer.Option("--partition", help="Slurm partition.")]
TimeOpt = Annotated[int | None, typer.Option("--time", help="Slurm time limit per job, minutes.")]
GpusPerJobOpt = Annotated[int | None, typer.Option("--gpus-per-job", help="Slurm GPUs per job.")]
ArrayParallelismOpt = Annotated[int | None, typer.Option("--array-parallelism", help="Slurm array parallelism.")]
LabelRuleOpt = Annotated[str | None, typer.Option(
    "--label-rule", help="MOSEI's 7 classes: binned ([133]'s bins, the default) or round (round half to even).")]
SlurmClusterOpt = Annotated[str | None, typer.Option("--slurm-cluster", hidden=True,
                                                     help="submitit cluster (local/debug for testing).")]

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
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds needs one or more integers >= 0, got {value!r}")
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


def parse_value(text: str) -> Any:
    """A --param value: JSON when it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(items: Sequence[str] | None, method: str) -> dict[str, Any]:
    """--param name=value pairs; ints become floats where the method's parameter is a float."""
    from bench.methods import get_method

    params_cls = get_method(method).Params
    types = {f.name: str(f.type) for f in dataclasses.fields(params_cls)}
    params: dict[str, Any] = {}
    for item in items or ():
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--param must look like name=value, got {item!r}")
        value = parse_value(raw.strip())
        if types.get(name.strip()) == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # alpha=1 and alpha=1.0 are the same run
        params[name.strip()] = value
    return params


# -- execution options shared by run and grid ------------------------------------------------------

@dataclasses.dataclass
class ExecOptions:
    """How `run` and `grid` execute: store, executor, workers, retry, progress, Slurm settings."""

    runs_dir: Path
    executor: str | None
    workers: int | None
    workers_per_gpu: int
    retry_failed: bool
    progress: bool
    slurm: dict[str, Any]

    def resolved_executor(self) -> str:
        """--executor, or local when several workers or a GPU are available, else inline."""
        from bench.execute import check_options, gpu_count

        executor = self.executor or ("local" if (self.workers or 1) > 1 or gpu_count() else "inline")
        check_options(executor, self.workers, self.workers_per_gpu)
        given = sorted(k for k, v in self.slurm.items() if v is not None and k != "cluster")
        if given and executor != "slurm":
            raise ConfigError(f"--{given[0].replace('_', '-')} only applies to --executor slurm")
        return executor


def _exec_options(runs_dir: Path, executor: str | None, workers: int | None, workers_per_gpu: int,
                  retry_failed: bool, no_progress: bool, partition: str | None, time_min: int | None,
                  gpus_per_job: int | None, array_parallelism: int | None, slurm_cluster: str | None) -> ExecOptions:
    slurm = {"partition": partition, "time": time_min, "gpus": gpus_per_job,
             "array_parallelism": array_parallelism, "cluster": slurm_cluster}
    return ExecOptions(runs_dir, executor, workers, workers_per_gpu, retry_failed, not no_progress, slurm)


def _run(jobs: list[RunConfig], opts: ExecOptions) -> Any:
    """run_jobs with the CLI's execution options; Ctrl-C exits 130."""
    from bench import execute

    executor = opts.resolved_executor()
    slurm = {k: v for k, v in opts.slurm.items() if v is not None}
    try:
        return execute.run_jobs(jobs, opts.runs_dir, executor=executor, workers=opts.workers,
                                workers_per_gpu=opts.workers_per_gpu, retry_failed=opts.retry_failed,
                                progress=opts.progress, slurm_options=slurm)
    except KeyboardInterrupt:
        # Exit here: typer turns KeyboardInterrupt into a return value that cli.main does not pass on.
        typer.echo("interrupted: finished runs are stored; rerun the same command to resume", err=True)
        sys.exit(130)


def _announce_synthetic(datasets: Iterable[str]) -> None:
    synth = sorted({d for d in datasets if d.startswith("synth-")})
    if synth:
        typer.echo(f"note: using the synthetic surrogate ({', '.join(synth)}): real MOSI/MOSEI files were "
                   "not found under $BENCH_DATA_DIR (or --source synth was given)")


def _print_failures(summary: Any, limit: int = 20) -> None:
    for run_id, error in summary.failures[:limit]:
        typer.echo(f"failed {run_id}: {error}")
    if len(summary.failures) > limit:
        typer.echo(f"... and {len(summary.failures) - limit} more failures")


def _exit_with(summary: Any) -> None:
    code = summary.exit_code
    if code:
        sys.exit(code)  # typer.Exit would be swallowed by cli.main's standalone_mode=False


# -- bench run -------------------------------------------------------------------------------------

def run_configs(method: str, modalities: str, dataset: str, source: str, optimizer: str, lr: float | None,
                dev_set: bool, step_every: int | None, seeds: Sequence[int], profile: str,
                params: Sequence[str] | None, window: str | None,
                label_rule: str | None = None) -> list[RunConfig]:
    """The one-cell grid of `bench run`: thesis defaults for this method/modalities/dataset, flags on top."""
    from bench.methods import validate_config
    from bench.presets import resolve_dataset, thesis_config

    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    mods = canonical_modalities(modalities)
    name = resolve_dataset(dataset, source)
    if name not in ("mosi", "mosei", "synth-mosi", "synth-mosei") and not Path(name).expanduser().is_file():
        raise FileNotFoundError(f"dataset {dataset!r} is neither mosi, mosei, synth-mosi, synth-mosei "
                                "nor an existing file")
    label = "dev_set" if dev_set else ("step_every_4" if step_every == 4 else "standard")
    overrides: dict[str, Any] = {"method_params": parse_params(params, method)}
    if lr is not None:
        overrides["lr"] = lr
    if dev_set:
        overrides["dev_set"] = True
    if step_every is not None:
        overrides["step_every"] = step_every
    if window is not None:
        overrides["window"] = parse_window(window)
    if label_rule is not None:
        overrides["label_rule"] = label_rule
    configs = [thesis_config(name, method, mods, profile=profile, optimizer=optimizer, config_label=label,
                             seed=seed, **overrides) for seed in seeds]
    available = dataset_modalities(name, profile)
    for cfg in configs:
        validate_config(cfg, available)
    return configs


def dataset_modalities(name: str, profile: str) -> tuple[str, ...] | None:
    """The modalities of a dataset file, checked before anything trains (None for the built-in names).

    A file given by path is loaded (and validated: a bad file is a DataError, exit 2, not a failed run);
    a named real dataset must exist. The surrogate has every modality.
    """
    from bench.data import load_dataset
    from bench.data.loader import real_file_path

    if name.startswith("synth-"):
        return None
    if name in ("mosi", "mosei"):
        real_file_path(name)  # DataError saying where the file must be
        return None
    return load_dataset(name, profile).modalities


def _fmt(value: Any, digits: int = 2) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else f"{number:.{digits}f}"


def _mean_std(values: Sequence[float]) -> str:
    """'mean ± std' with ddof=1 ('n/a' without values)."""
    if not values:
        return "n/a"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{mean:.2f} ± {_fmt(std)}"


def print_seed_table(configs: Sequence[RunConfig], runs_dir: Path) -> None:
    """One line per seed from the store, then mean ± std (ddof=1) over the ok seeds."""
    from bench import store

    accs, losses = [], []
    for cfg in configs:
        try:
            row = store.read_row(runs_dir, cfg.run_id)
        except (OSError, ValueError):
            typer.echo(f"seed {cfg.seed}  missing  {cfg.run_id}")
            continue
        line = (f"seed {cfg.seed}  {row['status']:<6}  acc {_fmt(row['test_acc'])}  loss {_fmt(row['test_loss'])}"
                f"  epochs {_fmt(row['epochs'], 0)}  wall {_fmt(row['wall_s'], 1)}s  {cfg.run_id}")
        if row["status"] != "ok":
            line += f"  {row['error']}"
        else:
            accs.append(float(row["test_acc"]))
            losses.append(float(row["test_loss"]))
        typer.echo(line)
    typer.echo(f"mean ± std over {len(accs)} ok seed(s) (ddof=1): acc {_mean_std(accs)}  loss {_mean_std(losses)}")


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
    runs_dir: RunsDir = Path("runs"),
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    workers_per_gpu: WorkersPerGpuOpt = 1,
    retry_failed: RetryFailedOpt = False,
    no_progress: NoProgressOpt = False,
    partition: PartitionOpt = None,
    time_min: TimeOpt = None,
    gpus_per_job: GpusPerJobOpt = None,
    array_parallelism: ArrayParallelismOpt = None,
    slurm_cluster: SlurmClusterOpt = None,
) -> None:
    """Train one configuration over seeds (thesis defaults, flags on top); print per-seed results."""
    opts = _exec_options(runs_dir, executor, workers, workers_per_gpu, retry_failed, no_progress, partition,
                         time_min, gpus_per_job, array_parallelism, slurm_cluster)
    opts.resolved_executor()  # reject conflicting flags before anything is built
    configs = run_configs(method, modalities, dataset, source, optimizer, lr, dev_set, step_every,
                          parse_seeds(seeds), profile, param, window, label_rule)
    first = configs[0]
    synthetic = " (synthetic surrogate)" if first.dataset.startswith("synth-") else ""
    _announce_synthetic([first.dataset])
    typer.echo(f"{method} {modality_key(first.modalities)} on {first.dataset}{synthetic}, profile {profile}, "
               f"labels {first.label_rule}, {first.optimizer} lr {first.lr:g}, params {dict(first.method_params)}, "
               f"{len(configs)} seed(s)")
    summary = _run(configs, opts)
    print_seed_table(configs, runs_dir)
    _print_failures(summary)
    _exit_with(summary)


# -- bench grid ------------------------------------------------------------------------------------

def grid_command(
    preset: str = typer.Argument(..., help="Preset name, e.g. table-6.10 (see `bench ls`)."),
    profile: str = typer.Option("quick", "--profile", help=f"One of {', '.join(PROFILES)}."),
    dataset: str = typer.Option("mosi,mosei", "--dataset", help="Comma-separated: mosi, mosei (or synth-*)."),
    source: str = typer.Option("auto", "--source", help="auto (real files if present), synth or real."),
    method: str | None = typer.Option(None, "--method", help="Only these methods (comma-separated)."),
    optimizer: str | None = typer.Option(None, "--optimizer", help="Only these optimizers (comma-separated)."),
    modalities: str | None = typer.Option(None, "--modalities",
                                          help="Only these combinations, e.g. text+vision,audio+vision."),
    dev_set: bool | None = typer.Option(None, "--dev-set/--no-dev-set", help="Only dev-set rows / only others."),
    seeds: str = typer.Option("0,1,2,3,4", "--seeds", help="Comma-separated seeds."),
    label_rule: LabelRuleOpt = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="List the jobs and what is stored; train nothing."),
    runs_dir: RunsDir = Path("runs"),
    executor: ExecutorOpt = None,
    workers: WorkersOpt = None,
    workers_per_gpu: WorkersPerGpuOpt = 1,
    retry_failed: RetryFailedOpt = False,
    no_progress: NoProgressOpt = False,
    partition: PartitionOpt = None,
    time_min: TimeOpt = None,
    gpus_per_job: GpusPerJobOpt = None,
    array_parallelism: ArrayParallelismOpt = None,
    slurm_cluster: SlurmClusterOpt = None,
) -> None:
    """Train every run of a preset that is not stored yet (resumable), dependencies first."""
    from bench.presets import expand, jobs_with_dependencies

    if dry_run and retry_failed:
        raise ConfigError("--dry-run trains nothing; it conflicts with --retry-failed")
    opts = _exec_options(runs_dir, executor, workers, workers_per_gpu, retry_failed, no_progress, partition,
                         time_min, gpus_per_job, array_parallelism, slurm_cluster)
    if not dry_run:
        opts.resolved_executor()
    cells = expand(preset, profile=profile, datasets=parse_list(dataset) or [], source=source,
                   seeds=parse_seeds(seeds), methods=parse_list(method), optimizers=parse_list(optimizer),
                   modalities=parse_modality_filter(modalities), dev_set=dev_set,
                   overrides={"label_rule": label_rule} if label_rule else None)
    jobs = jobs_with_dependencies(cells)
    for name in sorted({c.dataset for c in cells}):
        dataset_modalities(name, profile)  # a missing real file is an error now, not 250 failed runs
    _announce_synthetic(c.dataset for c in cells)
    if dry_run:
        print_dry_run(cells, jobs, runs_dir)
        return
    typer.echo(f"{preset} ({profile}): {len(cells)} cells, {len(jobs)} runs incl. dependencies")
    summary = _run(jobs, opts)
    typer.echo(str(summary))
    _print_failures(summary)
    _exit_with(summary)


def job_labels(cells: Sequence[Any]) -> dict[str, str]:
    """run_id -> the config label(s) of the cells it belongs to."""
    labels: dict[str, list[str]] = {}
    for cell in cells:
        for cfg in cell.configs:
            names = labels.setdefault(cfg.run_id, [])
            if cell.config_label not in names:
                names.append(cell.config_label)
    return {rid: ",".join(names) for rid, names in labels.items()}


def print_dry_run(cells: Sequence[Any], jobs: Sequence[RunConfig], runs_dir: Path) -> None:
    """The job list with what is stored; trains nothing."""
    from bench import store

    stored = store.stored_status(runs_dir)
    labels = job_labels(cells)
    typer.echo(f"{'run_id':<16}  {'dataset':<12} {'modalities':<18} {'method':<11} {'optimizer':<9} "
               f"{'config':<22} {'seed':>4}  stored")
    for cfg in jobs:
        typer.echo(f"{cfg.run_id:<16}  {cfg.dataset:<12} {modality_key(cfg.modalities):<18} {cfg.method:<11} "
                   f"{cfg.optimizer:<9} {labels.get(cfg.run_id, '(dependency)'):<22} {cfg.seed:>4}  "
                   f"{stored.get(cfg.run_id, '-')}")
    ok = sum(1 for cfg in jobs if stored.get(cfg.run_id) == "ok")
    failed = sum(1 for cfg in jobs if stored.get(cfg.run_id) == "failed")
    deps = len(jobs) - len(labels)
    typer.echo(f"{len(jobs)} jobs ({len(cells)} cells, {deps} dependency runs): {ok} already stored ok, "
               f"{failed} stored failures, {len(jobs) - ok - failed} to train")


# -- bench ls --------------------------------------------------------------------------------------

def ls_command(
    runs_dir: RunsDir = Path("runs"),
    preset: str | None = typer.Option(None, "--preset", help="Also show what this preset still lacks."),
    profile: str = typer.Option("quick", "--profile", help="Profile of --preset."),
    dataset: str = typer.Option("mosi,mosei", "--dataset", help="Datasets of --preset."),
    source: str = typer.Option("auto", "--source", help="Data source of --preset."),
    seeds: str = typer.Option("0,1,2,3,4", "--seeds", help="Seeds of --preset."),
    label_rule: LabelRuleOpt = None,
) -> None:
    """What is stored (counts by dataset / method / status), corrupt files, what a preset lacks."""
    from bench import store

    results, problems = store.read_results(runs_dir)
    typer.echo(f"{runs_dir}: {len(results)} stored run(s)")
    if len(results):
        counts = results.groupby(["dataset", "method", "status"]).size().unstack("status", fill_value=0)
        typer.echo(counts.to_string())
    for problem in problems:
        typer.echo(f"{'left out' if store.is_old_scheme_problem(problem) else 'corrupt'}: {problem}")
    print_mixed_data(results)
    if preset is not None:
        print_preset_status(preset, results, runs_dir, profile=profile, datasets=parse_list(dataset) or [],
                            source=source, seeds=parse_seeds(seeds),
                            overrides={"label_rule": label_rule} if label_rule else None)


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


def print_preset_status(preset: str, results: Any, runs_dir: Path, **expand_kwargs: Any) -> None:
    """How much of a preset is stored; the cells that still lack runs."""
    from bench.presets import expand, jobs_with_dependencies

    cells = expand(preset, **expand_kwargs)
    jobs = jobs_with_dependencies(cells)
    status = dict(zip(results["run_id"], results["status"], strict=True)) if len(results) else {}
    ok = sum(1 for cfg in jobs if status.get(cfg.run_id) == "ok")
    failed = sum(1 for cfg in jobs if status.get(cfg.run_id) == "failed")
    typer.echo(f"preset {preset} ({expand_kwargs.get('profile')}): {len(jobs)} runs incl. dependencies, "
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
    from bench import execute, store
    from bench.presets import dependencies

    try:
        row = store.read_row(runs_dir, run_id)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    cfg = store.stored_config(row)
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
    if result.status != row["status"]:
        differences.insert(0, f"status: stored {row['status']} -> rerun {result.status} ({result.error})")
    if differences:
        typer.echo("rerun differs from the stored run:")
        for line in differences:
            typer.echo(f"  {line}")
        sys.exit(1)
    typer.echo(f"every metric matches exactly ({len(store.stored_metrics(row))} metrics, status {result.status})")


def check_same_data(run_id: str, cfg: RunConfig) -> None:
    """ConfigError when the data a run was pinned to (data_version) is not what its dataset holds now."""
    from bench.data import data_fingerprint

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
    from bench.execute import default_device

    return "cuda" if stored.startswith("cuda") and default_device() == "cuda" else "cpu"


def register(app: typer.Typer) -> None:
    """Add run, grid, ls and rerun to the bench app."""
    app.command("run")(run_command)
    app.command("grid")(grid_command)
    app.command("ls")(ls_command)
    app.command("rerun")(rerun_command)
