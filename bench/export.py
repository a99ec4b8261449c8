"""`bench export tensorboard|csv`: copies of the store in formats other tools read.

The parquet store (bench.store) stays the source of truth: an export is a snapshot, read through the
store's public readers and rewritten on every export. The TensorBoard export needs the optional
`tensorboard` package (`pip install 'bench[tensorboard]'`); the CSV export needs nothing more.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from bench.config import ConfigError
from bench.data.registry import root_name
from bench.report.sources import read_results  # loads the plugins the rows record
from bench.store import TRAJECTORY_COLUMNS, read_trajectories

# Columns of a result row that name a run's configuration; the CSV joins them into every trajectory row.
RUN_COLUMNS = ("dataset", "method", "modalities", "optimizer", "dev_set", "seed")
# Result fields shown with the run in TensorBoard (config text) and offered to its HParams dashboard.
HPARAM_FIELDS = ("run_id", "dataset", "method", "modalities", "optimizer", "dev_set", "seed", "lr",
                 "batch_size", "step_every", "max_epochs", "profile", "status")
TENSORBOARD_HINT = "pip install 'bench[tensorboard]'"
PROGRESS_EVERY = 25  # runs between two plain progress lines
EVENT_FILE_PREFIX = "events.out.tfevents."
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


@dataclass(frozen=True)
class Selection:
    """Which stored runs to export: methods and datasets (None: all)."""

    methods: tuple[str, ...] | None = None
    datasets: tuple[str, ...] | None = None
    tasks: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None

    def mask(self, frame: pd.DataFrame) -> pd.Series:
        """The rows selected; a dataset matches by name (synth-mosi) or by its root spec (mosi: the one its
        spec derives from, bench.data.registry.root_name)."""
        keep = pd.Series(True, index=frame.index)
        for column, wanted in (("method", self.methods), ("task", self.tasks), ("model", self.models)):
            if wanted and column in frame:
                keep &= frame[column].astype(str).isin(wanted)
        if self.datasets:
            names = frame["dataset"].astype(str)
            keep &= names.isin(self.datasets) | names.map(root_name).isin(self.datasets)
        return keep

    def describe(self) -> str:
        """The filters as the flags that set them."""
        flags = [f"{flag} {','.join(values)}" for flag, values in (
            ("--method", self.methods), ("--dataset", self.datasets), ("--task", self.tasks), ("--model", self.models))
            if values]
        return " ".join(flags) or "no filter"


def _warn(problems: list[str]) -> None:
    for problem in problems:
        print(f"warning: skipped {problem}", file=sys.stderr)


def selected_results(runs_dir: Path, selection: Selection) -> pd.DataFrame:
    """The selected result rows, ordered by configuration; ConfigError when none match."""

    results, problems = read_results(runs_dir)
    _warn(problems)
    if len(results):
        results = results[selection.mask(results)]
    if not len(results):
        raise ConfigError(f"no stored runs under {runs_dir} match the selection ({selection.describe()})")
    results = with_own_param_columns(results)
    return results.sort_values([*RUN_COLUMNS, "run_id"], kind="stable").reset_index(drop=True)


def param_column_names(rows: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(method, parameter) -> its export column: param_<name>, or param_<method>.<name> where two methods of
    `rows` have a parameter of that name (SATI's `scale` and a plugin's are different things)."""
    owners: dict[str, set[str]] = {}
    for method, text in zip(rows["method"].astype(str), rows.get("method_params", pd.Series(dtype=object)),
                            strict=False):
        for name in _json_object(text):
            owners.setdefault(name, set()).add(method)
    return {(method, name): f"param_{method}.{name}" if len(methods) > 1 else f"param_{name}"
            for name, methods in owners.items() for method in methods}


def with_own_param_columns(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with the store's shared param_<name> columns replaced by one column per parameter and owner
    (`param_column_names`), filled from each row's method_params."""
    names = param_column_names(rows)
    shared = [c for c in rows.columns if c.startswith("param_")]
    values: dict[str, list[Any]] = {column: [None] * len(rows) for column in dict.fromkeys(names.values())}
    for i, (method, text) in enumerate(zip(rows["method"].astype(str), rows["method_params"], strict=True)):
        for name, value in _json_object(text).items():
            values[names[(method, name)]][i] = value if not isinstance(value, (list, dict)) else json.dumps(value)
    own = pd.DataFrame(values, index=rows.index)
    return pd.concat([rows.drop(columns=shared), own], axis=1)


def run_trajectory(runs_dir: Path, run_id: str) -> pd.DataFrame:
    """One run's trajectory rows (none when it has no readable file)."""

    rows, problems = read_trajectories(runs_dir, [run_id])
    _warn(problems)
    return rows


class Progress:
    """A rich progress bar on a terminal, else a line every PROGRESS_EVERY runs and at the end."""

    def __init__(self, total: int, what: str, live: bool = True) -> None:
        self.total, self.what, self.done = total, what, 0
        self.bar: Any = None
        if live and sys.stdout.isatty():
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(transient=True)
            self.task = self.bar.add_task(what, total=total)

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.advance(self.task)
        elif self.done % PROGRESS_EVERY == 0 or self.done == self.total:
            typer.echo(f"{self.what}: {self.done}/{self.total} runs")

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


# -- TensorBoard ----------------------------------------------------------------------------------

def safe_part(value: Any) -> str:
    """One path component from any value: unsafe characters become '_'; never empty, '.' or '..'."""
    part = _UNSAFE.sub("_", str(value)).strip("._")[:80]
    return part or "_"


def run_folder(row: Mapping[str, Any]) -> Path:
    """<dataset>/<method>/<modalities>/<optimizer>[-dev]/seed<k>-<run_id[:8]>, each part sanitised."""
    optimizer = f"{row['optimizer']}-dev" if _plain(row.get("dev_set")) else str(row["optimizer"])
    leaf = f"seed{row['seed']}-{str(row['run_id'])[:8]}"
    return Path(*(safe_part(p) for p in (row["dataset"], row["method"], row["modalities"], optimizer, leaf)))


def run_folders(results: pd.DataFrame) -> dict[str, Path]:
    """run_id -> its folder; runs whose folders would clash (same 8-digit prefix) get the full run id."""
    folders = {str(row["run_id"]): run_folder(row) for row in results.to_dict("records")}
    taken = Counter(folders.values())
    for run_id, folder in folders.items():
        if taken[folder] > 1:
            folders[run_id] = folder.with_name(f"{folder.name.rsplit('-', 1)[0]}-{safe_part(run_id)}")
    return folders


def scalar_tag(split: str, series: str, modality: str) -> str:
    """`<split>/<series>[/<modality>]`, e.g. train/ratio/audio or valid/loss."""
    return "/".join(p for p in (split, series, modality) if p)


def scalars_by_step(trajectory: pd.DataFrame) -> Iterator[tuple[int, list[tuple[str, float]]]]:
    """(step, [(tag, value), ...]) by increasing step; the rows of one step in their stored order."""
    for step, rows in trajectory.groupby("step", sort=True):
        tags = [scalar_tag(*parts) for parts in zip(rows["split"], rows["series"], rows["modality"], strict=True)]
        yield int(step), list(zip(tags, rows["value"].astype(float), strict=True))


def _plain(value: Any) -> Any:
    """A numpy / pandas scalar as the Python value; NaN and None as None."""
    value = value.item() if hasattr(value, "item") else value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def run_hparams(row: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The run's HPARAM_FIELDS and the method parameters it sets, under their export columns (param_<name>,
    or param_<method>.<name> where another exported method shares the name: `with_own_param_columns`)."""
    values = {name: _plain(row.get(name)) for name in HPARAM_FIELDS}
    values.update({name: _plain(value) for name, value in row.items() if str(name).startswith("param_")})
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
            for k, v in values.items() if v is not None}


def _json_object(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def config_markdown(row: Mapping[str, Any]) -> str:
    """The run's config and outcome as a Markdown table (TensorBoard's text dashboard renders it)."""
    lines = ["| field | value |", "| --- | --- |"]
    config = _json_object(row.get("config_json"))
    fields = {"run_id": row.get("run_id"), "status": row.get("status"), "error": row.get("error"),
              **config, "test_acc": row.get("test_acc"), "test_loss": row.get("test_loss"),
              "data_fingerprint": row.get("data_fingerprint"), "git_commit": row.get("git_commit")}
    for name, value in fields.items():
        value = _plain(value)
        if value is not None:
            shown = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"| {name} | {shown.replace('|', '/')} |")
    return "\n".join(lines)


def _finished_at(row: Mapping[str, Any]) -> float:
    """The run's finish time (seconds since the epoch); 0 when unknown."""
    try:
        return datetime.fromisoformat(str(row.get("finished_at"))).timestamp()
    except ValueError:
        return 0.0


def tensorboard_modules() -> Any:
    """(EventFileWriter, Event, Summary, hparams_pb, text_pb); ConfigError naming the extra when missing."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb
        from tensorboard.plugins.text.summary_v2 import text_pb
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as err:
        raise ConfigError(f"bench export tensorboard needs the tensorboard package: {TENSORBOARD_HINT}") from err
    return EventFileWriter, Event, Summary, hparams_pb, text_pb


def clear_events(folder: Path) -> None:
    """Remove the event files of an earlier export of this run (TensorBoard would show both)."""
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(EVENT_FILE_PREFIX) and path.is_file():
                path.unlink()


def write_run_events(folder: Path, row: Mapping[str, Any], trajectory: pd.DataFrame) -> int:
    """One run's event file: config text and hparams at step 0, then its scalars; returns the scalar count."""
    EventFileWriter, Event, Summary, hparams_pb, text_pb = tensorboard_modules()
    clear_events(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wall = _finished_at(row)
    writer = EventFileWriter(str(folder), max_queue_size=1024)
    try:
        writer.add_event(Event(wall_time=wall, step=0, summary=text_pb("config", config_markdown(row))))
        writer.add_event(Event(wall_time=wall, step=0,
                               summary=hparams_pb(run_hparams(row), trial_id=str(row["run_id"]),
                                                  start_time_secs=wall)))
        count = 0
        for step, scalars in scalars_by_step(trajectory):
            values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars]
            writer.add_event(Event(wall_time=wall, step=step, summary=Summary(value=values)))
            count += len(values)
    finally:
        writer.close()
    return count


def export_tensorboard(runs_dir: Path, out: Path, selection: Selection, progress: bool = True) -> dict[str, Path]:
    """Write every selected run's trajectory as TensorBoard events under `out`; run_id -> its folder."""
    tensorboard_modules()  # fail before reading or writing anything
    results = selected_results(runs_dir, selection)
    folders = run_folders(results)
    with Progress(len(results), "tensorboard", progress) as bar:
        for row in results.to_dict("records"):
            write_run_events(out / folders[row["run_id"]], row, run_trajectory(runs_dir, row["run_id"]))
            bar.advance()
    return {run_id: out / folder for run_id, folder in folders.items()}


# -- CSV ------------------------------------------------------------------------------------------

def _replace_when_done(path: Path) -> Path:
    """A hidden temp name next to `path` (the caller renames it over `path` once complete)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def export_csv(runs_dir: Path, out: Path, selection: Selection, progress: bool = True) -> dict[str, Path]:
    """Write results.csv (every selected result row) and trajectories.csv (their rows, config joined in)."""
    results = selected_results(runs_dir, selection)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.csv", "trajectories": out / "trajectories.csv"}
    tmp = {name: _replace_when_done(path) for name, path in paths.items()}
    try:
        results.to_csv(tmp["results"], index=False, lineterminator="\n")
        write_trajectories_csv(runs_dir, results, tmp["trajectories"], progress)
        for name, path in paths.items():
            os.replace(tmp[name], path)
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)
    return paths


def write_trajectories_csv(runs_dir: Path, results: pd.DataFrame, path: Path, progress: bool) -> int:
    """Every trajectory row of the runs in `results`, one run at a time, with RUN_COLUMNS joined in."""

    columns = ["run_id", *RUN_COLUMNS, *TRAJECTORY_COLUMNS[1:]]
    pd.DataFrame(columns=columns).to_csv(path, index=False, lineterminator="\n")
    count = 0
    with Progress(len(results), "csv", progress) as bar, path.open("a", encoding="utf-8", newline="") as handle:
        for row in results.to_dict("records"):
            rows = run_trajectory(runs_dir, row["run_id"])
            for name in RUN_COLUMNS:
                rows[name] = row[name]
            rows[columns].to_csv(handle, index=False, header=False, lineterminator="\n")
            count += len(rows)
            bar.advance()
    return count


# -- the CLI --------------------------------------------------------------------------------------

export_app = typer.Typer(name="export", no_args_is_help=True,
                         help="Copy stored runs into TensorBoard event files or flat CSV files "
                              "(the parquet store stays the source of truth).")

RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="Store to read.")]
MethodOpt = Annotated[str | None, typer.Option("--method", help="Only these methods (comma-separated).")]
DatasetOpt = Annotated[str | None, typer.Option(
    "--dataset", help="Only these datasets, by name (synth-mosi) or root dataset (mosi), comma-separated.")]
NoProgressOpt = Annotated[bool, typer.Option("--no-progress", help="Plain progress lines, no live bar.")]


TaskOpt = Annotated[str | None, typer.Option("--task", help="Only runs of these tasks (comma-separated).")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="Only runs on these models (comma-separated).")]


def _selection(method: str | None, dataset: str | None, task: str | None = None,
               model: str | None = None) -> Selection:
    def items(value: str | None) -> tuple[str, ...] | None:
        parts = tuple(v.strip() for v in (value or "").split(",") if v.strip())
        return parts or None

    return Selection(methods=items(method), datasets=items(dataset), tasks=items(task), models=items(model))


TENSORBOARD_HELP = "\n\n".join((
    "Write stored trajectories as TensorBoard event files; view them with `tensorboard --logdir OUT`.",
    "One folder per run: <dataset>/<method>/<modalities>/<optimizer>/seed<k>-<first 8 digits of the run id> "
    "(the optimizer folder is <optimizer>-dev for runs with a dev set). Scalars are tagged <split>/<series>, "
    "or <split>/<series>/<modality> for a per-modality series, e.g. train/ratio/audio, valid/loss, test/acc.",
    "The x axis (step) is the number of optimizer steps taken when the value was logged: per-step series at "
    "every step, per-epoch losses and accuracies at the step that ended the epoch, test metrics at the last "
    "step. Values are float32 (TensorBoard's scalars); every event carries the run's finish time as its wall "
    "time, so only the step axis is meaningful. Each run also has its config as text (TEXT tab) and as "
    "hparams (HPARAMS tab).",
    "Re-exporting replaces a run's event file. The parquet store stays the source of truth.",
))
CSV_HELP = "\n\n".join((
    "Write flat CSV copies for spreadsheets: OUT/results.csv and OUT/trajectories.csv.",
    "results.csv: every stored result row, every column of the store. trajectories.csv: every trajectory "
    "row (run_id, epoch, step, split, series, modality, value) with the run's dataset, method, modalities, "
    "optimizer, dev_set and seed joined in.",
    "A snapshot: the parquet store under --runs-dir stays the source of truth (pandas.read_parquet reads it).",
))


@export_app.command("tensorboard", help=TENSORBOARD_HELP)
def tensorboard_command(
    runs_dir: RunsDirOpt = Path("runs"),
    out: Path = typer.Option(Path("reports/tensorboard"), "--out", help="Log directory to write."),
    method: MethodOpt = None,
    dataset: DatasetOpt = None,
    task: TaskOpt = None,
    model: ModelOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    folders = export_tensorboard(runs_dir, out, _selection(method, dataset, task, model), progress=not no_progress)
    typer.echo(f"written: {out} ({len(folders)} runs); view with: tensorboard --logdir {out}")


@export_app.command("csv", help=CSV_HELP)
def csv_command(
    runs_dir: RunsDirOpt = Path("runs"),
    out: Path = typer.Option(Path("reports/csv"), "--out", help="Folder for results.csv and trajectories.csv."),
    method: MethodOpt = None,
    dataset: DatasetOpt = None,
    task: TaskOpt = None,
    model: ModelOpt = None,
    no_progress: NoProgressOpt = False,
) -> None:
    paths = export_csv(runs_dir, out, _selection(method, dataset, task, model), progress=not no_progress)
    typer.echo("written: " + ", ".join(str(p) for p in paths.values()))


def register(app: typer.Typer) -> None:
    """Add the `export` sub-app to the bench CLI."""
    app.add_typer(export_app, name="export")
