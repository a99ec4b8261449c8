"""Reading the store: result rows, trajectories, predictions, evaluations, statuses, stored configs.

Readers import neither torch nor a registry: the columns are those of the files. Each file is read on
its own (a corrupt or foreign file is reported by path and skipped, never fatal), and a folder whose files
have differing columns (a failed row written without metric columns) reads as the union of the columns.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from bench.config import RUN_ID_SCHEME, RunConfig
from bench.store.layout import EVALUATIONS, PREDICTIONS, RESULTS, TRAJECTORIES, PathLike, parquet_files, result_path
from bench.store.schema import (
    EPOCH_COLUMNS,
    EVALUATION_COLUMNS,
    METRIC_PREFIXES,
    PREDICTION_COLUMNS,
    STATUSES,
    TRAJECTORY_COLUMNS,
    TRAJECTORY_SCHEMA,
    evaluation_schema,
)

OLD_SCHEME_MARK = "run(s) of an older run-id scheme"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200]


def concat_union(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The frames stacked, keeping every column of every frame: the widest frame's columns in its order,
    then any other frame's extra columns in the order they appear (NaN/None where a frame lacks one)."""
    widest = max(frames, key=lambda frame: len(frame.columns))
    order = dict.fromkeys(widest.columns)
    for frame in frames:
        order.update(dict.fromkeys(frame.columns))
    return pd.concat(frames, ignore_index=True)[list(order)]


# -- result rows ---------------------------------------------------------------------------------

def _read_result_file(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """One result file as a one-row frame, or the reason it is not a valid result."""
    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as err:  # any unreadable file is reported, never fatal
        return None, f"{path}: unreadable parquet ({type(err).__name__}: {_one_line(err)})"
    missing = [c for c in ("run_id", "status", "config_json") if c not in frame.columns]
    if missing:
        return None, f"{path}: not a bench result (missing column(s) {', '.join(missing)})"
    if len(frame) != 1:
        return None, f"{path}: not a bench result ({len(frame)} rows, expected 1)"
    if str(frame["run_id"].iloc[0]) != path.stem:
        return None, f"{path}: run_id {frame['run_id'].iloc[0]!r} does not match the file name"
    if str(frame["status"].iloc[0]) not in STATUSES:
        return None, f"{path}: unknown status {frame['status'].iloc[0]!r}"
    problem = identity_problem(path, frame.iloc[0].to_dict())
    if problem:
        return None, problem
    return frame, None


def identity_problem(path: Path, row: Mapping[str, Any]) -> str | None:
    """Why a current-scheme row's stored config does not belong to its run id (a copied, hand-merged or
    edited row), or None. Rows of an older scheme are left to the old-scheme note (their ids differ anyway)."""
    scheme = pd.to_numeric(pd.Series([row.get("id_scheme")]), errors="coerce").iloc[0]
    if pd.isna(scheme) or scheme < RUN_ID_SCHEME:
        return None
    run_id = str(row.get("run_id"))
    try:
        config_id = RunConfig.from_dict(json.loads(str(row.get("config_json")))).run_id
    except (ValueError, TypeError) as err:  # ConfigError and JSON errors are ValueErrors
        return f"{path}: left out: its stored config does not decode ({type(err).__name__}: {_one_line(err)})"
    if config_id != run_id:
        return (f"{path}: left out: its stored config hashes to run id {config_id}, not {run_id} "
                "(a copied or edited row); delete the file to retrain the run")
    return None


def read_results(runs_dir: PathLike) -> tuple[pd.DataFrame, list[str]]:
    """Every valid result row (the union of the files' columns), and one "path: problem" line per skipped
    (corrupt, foreign) file; an empty store reads as a frame with the columns run_id and status."""
    frames: list[pd.DataFrame] = []
    problems: list[str] = []
    for path in parquet_files(Path(runs_dir) / RESULTS):
        frame, problem = _read_result_file(path)
        if problem:
            problems.append(problem)
        else:
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run_id", "status"]), problems
    results = concat_union(frames)
    old = old_scheme_mask(results)
    if old.any():
        problems.append(old_scheme_problem(Path(runs_dir), int(old.sum())))
    return results[~old].reset_index(drop=True), problems


def old_scheme_mask(results: pd.DataFrame) -> pd.Series:
    """Rows written by an older run-id scheme (no `id_scheme`, or a lower one)."""
    if "id_scheme" not in results.columns:
        return pd.Series(True, index=results.index)
    scheme = pd.to_numeric(results["id_scheme"], errors="coerce")
    return scheme.isna() | (scheme < RUN_ID_SCHEME)


def is_old_scheme_problem(problem: str) -> bool:
    """Whether a read_results problem line is the old-scheme note (not a corrupt file)."""
    return OLD_SCHEME_MARK in problem


def old_scheme_problem(runs_dir: Path, count: int) -> str:
    """The one line that says why old-scheme rows are left out, and what to do."""
    return (f"{runs_dir / RESULTS}: {count} {OLD_SCHEME_MARK} (before scheme {RUN_ID_SCHEME}: "
            "the id did not cover the code that trained the run, nor in older schemes the label rule and the "
            "method's default parameters, so they may hold numbers of code or defaults since changed): left "
            "out of every listing and table; retrain with a fresh --runs-dir, or delete those result files "
            "to retrain them in place")


def stored_status(runs_dir: PathLike) -> dict[str, str]:
    """run_id -> "ok" | "failed" for every valid result file (corrupt and foreign ones are absent)."""
    return {rid: state[0] for rid, state in stored_states(runs_dir).items()}


def stored_states(runs_dir: PathLike) -> dict[str, tuple[str, str | None]]:
    """run_id -> (status, error_kind) for every valid result file (read_state)."""
    states: dict[str, tuple[str, str | None]] = {}
    for path in parquet_files(Path(runs_dir) / RESULTS):
        state = read_state(runs_dir, path.stem)
        if state is not None:
            states[path.stem] = state
    return states


def read_status(runs_dir: PathLike, run_id: str) -> str | None:
    """The stored status of one run, or None when it has no valid result."""
    state = read_state(runs_dir, run_id)
    return None if state is None else state[0]


STATE_COLUMNS = ("run_id", "status", "config_json", "id_scheme", "error_kind")


def _read_columns(path: Path, columns: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of a parquet file, reduced to `columns` where it has them all (a row written before a
    column existed is read whole)."""
    try:
        return pq.read_table(path, columns=list(columns)).to_pylist()
    except (KeyError, ValueError):  # pyarrow: a column the file lacks (ArrowInvalid is a ValueError)
        return pq.read_table(path).to_pylist()


def read_state(runs_dir: PathLike, run_id: str) -> tuple[str, str | None] | None:
    """(status, error_kind) of one run's valid result (error_kind: bench.store.ERROR_KINDS, None for an ok
    run or a deterministic failure), or None when it has no valid result (absent, unreadable, or a row whose
    config does not hash to its run id)."""
    path = result_path(runs_dir, run_id)
    try:
        row = _read_columns(path, STATE_COLUMNS)
    except Exception:  # absent or unreadable: not stored
        return None
    if len(row) != 1 or row[0].get("run_id") != run_id or row[0].get("status") not in STATUSES:
        return None
    if identity_problem(path, row[0]):
        return None
    kind = row[0].get("error_kind")
    return str(row[0]["status"]), (str(kind) if kind else None)


def completed_ids(runs_dir: PathLike) -> set[str]:
    """Run ids with an ok result."""
    return {rid for rid, status in stored_status(runs_dir).items() if status == "ok"}


def read_row(runs_dir: PathLike, run_id: str) -> dict[str, Any]:
    """The stored result row of one run as a dict; FileNotFoundError / ValueError when absent or invalid."""
    path = result_path(runs_dir, run_id)
    if not path.is_file():
        raise FileNotFoundError(f"no stored result for run {run_id} under {Path(runs_dir)}")
    frame, problem = _read_result_file(path)
    if problem:
        raise ValueError(problem)
    return frame.iloc[0].to_dict()


def stored_config(row: Mapping[str, Any]) -> RunConfig:
    """The RunConfig a stored row was trained with (from config_json)."""
    return RunConfig.from_dict(json.loads(row["config_json"]))


def stored_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """Every metric the run reported (metrics_json), falling back to the row's metric columns
    (test_/val_ columns that are not RunConfig fields, and the epoch columns)."""
    text = row.get("metrics_json")
    if isinstance(text, str) and text:
        return {k: float(v) for k, v in json.loads(text).items()}
    config_fields = {f.name for f in dataclasses.fields(RunConfig)}
    names = [name for name in row if str(name).startswith(METRIC_PREFIXES) and name not in config_fields]
    return {name: float(row[name]) for name in (*names, *EPOCH_COLUMNS) if name in row}


# -- per-run tables ------------------------------------------------------------------------------

def _read_run_tables(folder: Path, run_ids: Iterable[str] | None, columns: Sequence[str], kind: str,
                     keep_extra: bool, report_missing: bool = False) -> tuple[list[pd.DataFrame], list[str]]:
    """The per-run parquet tables of a folder (`run_ids`, or all), each with `columns` first; problems
    (with `report_missing`, also one line per asked run id that has a result row but no file here)."""
    frames: list[pd.DataFrame] = []
    problems: list[str] = []
    if run_ids is None:
        paths = parquet_files(folder)
    else:
        asked = [folder / f"{rid}.parquet" for rid in dict.fromkeys(run_ids)]
        paths = [p for p in asked if p.is_file()]
        if report_missing:
            runs_dir = folder.parent
            problems += [f"{p}: missing (the stored run's {kind} is left out)" for p in asked
                         if not p.is_file() and result_path(runs_dir, p.stem).is_file()]
    for path in paths:
        try:
            frame = pq.read_table(path).to_pandas()
        except Exception as err:  # reported, never fatal
            problems.append(f"{path}: unreadable parquet ({type(err).__name__}: {_one_line(err)})")
            continue
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            problems.append(f"{path}: not a bench {kind} (missing column(s) {', '.join(missing)})")
            continue
        extra = [c for c in frame.columns if c not in columns] if keep_extra else []
        frames.append(frame[[*columns, *extra]])
    return frames, problems


def read_trajectories(runs_dir: PathLike, run_ids: Iterable[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Trajectory rows of `run_ids` (all stored runs when None), and problems with skipped files."""
    # every stored run, ok or failed, has a trajectory file: an asked-for one that is absent is reported
    frames, problems = _read_run_tables(Path(runs_dir) / TRAJECTORIES, run_ids, TRAJECTORY_COLUMNS,
                                        "trajectory", keep_extra=False, report_missing=True)
    if not frames:
        return TRAJECTORY_SCHEMA.empty_table().to_pandas(), problems
    return pd.concat(frames, ignore_index=True), problems


def read_predictions(runs_dir: PathLike, run_ids: Iterable[str] | None = None,
                     report_missing: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Per-sample prediction rows (`predictions/<run_id>.parquet`: PREDICTION_COLUMNS first, any others
    after, the union over the files), and problems with skipped files (with `report_missing`, also each asked
    run that is stored but has no file); an empty frame with those columns when none is stored."""
    frames, problems = _read_run_tables(Path(runs_dir) / PREDICTIONS, run_ids, PREDICTION_COLUMNS,
                                        "prediction file", keep_extra=True, report_missing=report_missing)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PREDICTION_COLUMNS}), problems
    return concat_union(frames), problems


def read_evaluations(runs_dir: PathLike, run_ids: Iterable[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Test-time evaluation rows (`evaluations/<run_id>.parquet`: EVALUATION_COLUMNS first, the metric
    columns after, the union over the files) of `run_ids` (all when None), and problems with skipped files."""
    frames, problems = _read_run_tables(Path(runs_dir) / EVALUATIONS, run_ids, EVALUATION_COLUMNS,
                                        "evaluations file", keep_extra=True)
    if not frames:
        return evaluation_schema(()).empty_table().to_pandas(), problems
    return concat_union(frames), problems
