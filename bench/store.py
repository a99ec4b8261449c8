"""The results store: one result row, one trajectory table and one checkpoint per run, plus claims.

Layout under the runs directory (the contract of design.md):

    results/<run_id>.parquet       one row: run_id, every RunConfig field, status, metrics, provenance
    trajectories/<run_id>.parquet  long table: run_id, epoch, step, split, series, modality, value
    predictions/<run_id>.parquet   per sample of the best checkpoint, test and valid: run_id, split,
                                   sample, target, prediction, probs, score, prediction_<modality>
    checkpoints/<run_id>.pt        best state_dict of an ok run (ensemble / unipre load these)
    evaluations/<run_id>.parquet   test-time evaluations of an ok run's best checkpoint (RunConfig
                                   test_noise / test_dataset): run_id, kind ("noise" / "ood"), sigma,
                                   test_dataset, then every task's test_<metric> column (NaN where absent)
    claims/<run_id>.claim          exists while some process is training the run

Every file is written under a hidden temporary name in its final folder, fsynced, then renamed over
the final name, so a kill at any moment leaves the old file or the new one, never a partial one.
Pandas and pyarrow skip names starting with "." when reading a folder, so
`pandas.read_parquet(runs_dir / "results")` never sees a temp file. The result row is written last:
an `ok` row implies that its trajectory and checkpoint exist; when a write fails, the files this save
already wrote are removed again. Temp names carry the writer's host and pid, so `remove_leftovers` (run
by every executor at start) deletes the temp files of writers killed mid-write, and the claims of
processes that died, without touching a live writer's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench import __version__
from bench.config import MODALITIES, PAIR_FIELDS, RUN_ID_SCHEME, RunConfig, modality_key
from bench.tasks import all_result_columns

RESULTS = "results"
TRAJECTORIES = "trajectories"
PREDICTIONS = "predictions"
CHECKPOINTS = "checkpoints"
EVALUATIONS = "evaluations"
CLAIMS = "claims"
STATUSES = ("ok", "failed")

# Every task's result columns (NaN where a run's task does not report them): one schema for every row.
METRIC_COLUMNS: tuple[str, ...] = all_result_columns()
EPOCH_COLUMNS = ("best_epoch", "epochs")
TRAJECTORY_COLUMNS = ("run_id", "epoch", "step", "split", "series", "modality", "value")
PREDICTION_COLUMNS = ("run_id", "split", "sample", "target", "prediction")
# One schema for every predictions file, whatever the task (class indices are stored as floats; `probs`
# holds the class probabilities of a classification run, `score` its continuous label), so a folder read
# keeps every column of every file.
_PREDICTION_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("split", pa.string()), ("sample", pa.string()), ("target", pa.float64()),
    ("prediction", pa.float64()), ("probs", pa.list_(pa.float64())), ("score", pa.float64()),
    *((f"prediction_{m}", pa.float64()) for m in MODALITIES),
])

# Method parameters get typed `param_<name>` columns in every row (null where a run does not set
# them), so every result file has the same schema and a folder read keeps them: param_types() takes
# them from the registered methods' Params. Anything else still gets a column (as JSON text), present
# only in the rows that set it.
_FIELD_TYPES = {"str": pa.string(), "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}
EVALUATION_KINDS = ("noise", "ood")
EVALUATION_COLUMNS = ("run_id", "kind", "sigma", "test_dataset")
# One schema for every evaluations file: the key columns, then every task's result metric (test_ ones).
_EVALUATION_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("kind", pa.string()), ("sigma", pa.float64()), ("test_dataset", pa.string()),
    *((name, pa.float64()) for name in METRIC_COLUMNS if name.startswith("test_")),
])
_TRAJECTORY_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("epoch", pa.int64()), ("step", pa.int64()), ("split", pa.string()),
    ("series", pa.string()), ("modality", pa.string()), ("value", pa.float64()),
])


class ResultLike(Protocol):
    """What save_result needs: the fields of bench.train.RunResult."""

    config: RunConfig
    run_id: str
    status: str
    error: str | None
    metrics: Mapping[str, float]
    trajectory: list[dict[str, Any]]
    state_dict: Mapping[str, Any] | None
    wall_s: float
    device: str
    data_fingerprint: str
    synthetic: bool
    torch_version: str


@dataclass
class RunRecord:
    """A RunResult-compatible record, for outcomes decided outside training (a dead worker, a failed dependency)."""

    config: RunConfig
    status: str = "failed"
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    state_dict: dict[str, Any] | None = None
    wall_s: float = 0.0
    device: str = ""
    data_fingerprint: str = ""
    synthetic: bool | None = None
    torch_version: str = ""
    torch_threads: int | None = None
    metric_columns: tuple[str, ...] = ()  # the task's result columns (not used by this store version yet)

    def __post_init__(self) -> None:
        if self.synthetic is None:
            self.synthetic = self.config.dataset.startswith("synth-")

    @property
    def run_id(self) -> str:
        return self.config.run_id


def failed_record(cfg: RunConfig, error: str, wall_s: float = 0.0, device: str = "",
                  metric_columns: tuple[str, ...] = ()) -> RunRecord:
    """A failed outcome for `cfg` with this error message (`metric_columns`: the task's result columns)."""
    return RunRecord(config=cfg, status="failed", error=error, wall_s=wall_s, device=device,
                     metric_columns=tuple(metric_columns))


# -- paths ---------------------------------------------------------------------------------------

def result_path(runs_dir: str | os.PathLike[str], run_id: str) -> Path:
    """The result row file of a run."""
    return Path(runs_dir) / RESULTS / f"{run_id}.parquet"


def trajectory_path(runs_dir: str | os.PathLike[str], run_id: str) -> Path:
    """The trajectory file of a run."""
    return Path(runs_dir) / TRAJECTORIES / f"{run_id}.parquet"


def checkpoint_path(runs_dir: str | os.PathLike[str], run_id: str) -> Path:
    """The best-checkpoint file of a run."""
    return Path(runs_dir) / CHECKPOINTS / f"{run_id}.pt"


def claim_path(runs_dir: str | os.PathLike[str], run_id: str) -> Path:
    """The claim file of a run."""
    return Path(runs_dir) / CLAIMS / f"{run_id}.claim"


def is_temp_name(name: str) -> bool:
    """Temp files (and anything hidden) are never results."""
    return name.startswith(".") or name.endswith(".tmp")


# -- atomic writes -------------------------------------------------------------------------------

TEMP_MAX_AGE_S = 24 * 3600.0  # a temp file of another host is abandoned after this long
ASIDE_MAX_AGE_S = 60.0  # a claim moved aside while being broken lives for milliseconds
_TEMP_NAME = re.compile(r"\..+\.([0-9a-f]{8})\.(\d+)-[0-9a-f]{8}\.tmp")


def _host_tag() -> str:
    """Short tag of this host for temp names (host names may hold dots)."""
    return hashlib.sha256(_host().encode()).hexdigest()[:8]


def temp_path(path: Path) -> Path:
    """A hidden temp name next to `path` that tells which host and process is writing it."""
    return path.parent / f".{path.name}.{_host_tag()}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _write_synced(path: Path, data: bytes) -> None:
    """Create `path` (it must not exist) with `data`, flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either absent/old or complete, never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _abandoned_temp(path: Path) -> bool:
    """A temp file whose writer died: its process is gone (this host), or it is a day old (any host)."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    match = _TEMP_NAME.fullmatch(path.name)
    if match and match.group(1) == _host_tag() and not pid_alive(int(match.group(2))):
        return True
    if path.name.endswith(".stale"):
        return age > ASIDE_MAX_AGE_S
    return age > TEMP_MAX_AGE_S


def remove_leftovers(runs_dir: str | os.PathLike[str], claim_ttl_s: float | None = None) -> list[Path]:
    """Delete what killed processes left behind: temp files of dead writers, stale claims. Returns them."""
    runs = Path(runs_dir)
    removed: list[Path] = []
    for folder in (RESULTS, TRAJECTORIES, CHECKPOINTS, PREDICTIONS, EVALUATIONS, CLAIMS):
        if not (runs / folder).is_dir():
            continue
        for path in sorted((runs / folder).iterdir()):
            if path.name.startswith("."):
                if path.is_file() and _abandoned_temp(path):
                    path.unlink(missing_ok=True)
                    removed.append(path)
            elif folder == CLAIMS and path.suffix == ".claim":
                if _break_if_stale(path, DEFAULT_CLAIM_TTL_S if claim_ttl_s is None else claim_ttl_s):
                    removed.append(path)
    return removed


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parquet_bytes(table: pa.Table) -> bytes:
    """A table serialised as parquet (written atomically by the caller)."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# -- provenance ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the git repository holding this package, or "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else "unknown"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- the result row ------------------------------------------------------------------------------

def config_columns(cfg: RunConfig) -> dict[str, tuple[Any, pa.DataType]]:
    """Every RunConfig field as (value, arrow type); pairs as JSON objects, modalities as the thesis key."""
    columns: dict[str, tuple[Any, pa.DataType]] = {}
    for f in dataclasses.fields(RunConfig):
        value = getattr(cfg, f.name)
        if f.name == "modalities":
            columns[f.name] = (modality_key(value), pa.string())
        elif f.name in PAIR_FIELDS:
            columns[f.name] = (json.dumps(dict(value), sort_keys=True), pa.string())
        else:
            kind = _FIELD_TYPES.get(str(f.type), pa.string())
            columns[f.name] = (_cast(value, kind), kind)
    return columns


def param_types() -> dict[str, pa.DataType]:
    """Every float/int/bool/str parameter of the registered methods, in the methods' table order (the
    first method to declare a name gives its type)."""
    from bench.methods import REGISTRY, method_order

    types: dict[str, pa.DataType] = {}
    for name in method_order():
        for f in dataclasses.fields(REGISTRY[name].Params):
            # "float" under `from __future__ import annotations`, else the class float itself
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            if f.name not in types and kind in _FIELD_TYPES:
                types[f.name] = _FIELD_TYPES[kind]
    return types


def param_columns(cfg: RunConfig) -> dict[str, tuple[Any, pa.DataType]]:
    """`param_<name>` for every known parameter (null when unset) and for each parameter the run sets."""
    given = dict(cfg.method_params)
    known = param_types()
    columns = {f"param_{name}": (_cast(given.get(name), kind), kind) for name, kind in known.items()}
    for name, value in given.items():
        if name not in known:
            text = value if isinstance(value, str) else json.dumps(value)
            columns[f"param_{name}"] = (text, pa.string())
    return columns


def _cast(value: Any, kind: pa.DataType) -> Any:
    """`value` as the Python type of `kind`, or None when it does not convert (the schema must not vary)."""
    if value is None:
        return None
    try:
        if pa.types.is_floating(kind):
            return float(value)
        if pa.types.is_integer(kind):
            return int(value) if float(value) == int(value) else None
        if pa.types.is_boolean(kind):
            return value if isinstance(value, bool) else None
        return value if isinstance(value, str) else json.dumps(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _metric(metrics: Mapping[str, Any], name: str) -> float:
    value = metrics.get(name)
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _epoch(metrics: Mapping[str, Any], name: str) -> int | None:
    value = _metric(metrics, name)
    return int(value) if math.isfinite(value) else None


def result_columns(result: ResultLike) -> dict[str, tuple[Any, pa.DataType]]:
    """The one result row as column -> (value, arrow type), in a fixed order."""
    cfg = result.config
    metrics = dict(result.metrics or {})
    columns: dict[str, tuple[Any, pa.DataType]] = {"run_id": (cfg.run_id, pa.string()),
                                                   "id_scheme": (RUN_ID_SCHEME, pa.int64())}
    columns.update(config_columns(cfg))
    columns.update(param_columns(cfg))
    columns["config_json"] = (json.dumps(cfg.to_dict(), sort_keys=True), pa.string())
    columns["status"] = (str(result.status), pa.string())
    columns["error"] = (None if result.error is None else str(result.error), pa.string())
    for name in METRIC_COLUMNS:
        columns[name] = (_metric(metrics, name), pa.float64())
    for name in EPOCH_COLUMNS:
        columns[name] = (_epoch(metrics, name), pa.int64())
    columns["metrics_json"] = (json.dumps({k: _metric(metrics, k) for k in sorted(metrics)}), pa.string())
    columns["wall_s"] = (float(result.wall_s or 0.0), pa.float64())
    columns["device"] = (str(result.device or ""), pa.string())
    columns["package_version"] = (__version__, pa.string())
    columns["git_commit"] = (git_commit(), pa.string())
    columns["torch_version"] = (str(getattr(result, "torch_version", "") or ""), pa.string())
    columns["torch_threads"] = (_cast(getattr(result, "torch_threads", None), pa.int64()), pa.int64())
    columns["data_fingerprint"] = (str(result.data_fingerprint or ""), pa.string())
    columns["synthetic"] = (bool(result.synthetic), pa.bool_())
    columns["finished_at"] = (_utc_now(), pa.string())
    return columns


def _row_table(columns: Mapping[str, tuple[Any, pa.DataType]]) -> pa.Table:
    """The one-row arrow table of a result, with an explicit schema."""
    schema = pa.schema([(name, kind) for name, (_, kind) in columns.items()])
    return pa.table({name: pa.array([value], type=kind) for name, (value, kind) in columns.items()},
                    schema=schema)


def _trajectory_table(run_id: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """The trajectory rows as an arrow table (missing keys get neutral defaults)."""
    rows = list(rows)

    def col(key: str, default: Any, convert: Any) -> list[Any]:
        return [convert(r.get(key, default)) if r.get(key) is not None else default for r in rows]

    data = {
        "run_id": [run_id] * len(rows),
        "epoch": col("epoch", -1, int),
        "step": col("step", -1, int),
        "split": col("split", "", str),
        "series": col("series", "", str),
        "modality": col("modality", "", str),
        "value": col("value", math.nan, float),
    }
    return pa.table(data, schema=_TRAJECTORY_SCHEMA)


def prediction_path(runs_dir: str | os.PathLike[str], run_id: str) -> Path:
    """The per-sample predictions file of a run."""
    return Path(runs_dir) / PREDICTIONS / f"{run_id}.parquet"


def _predictions_table(run_id: str, predictions: Mapping[str, Mapping[str, Any]]) -> pa.Table:
    """split -> column -> (N,) values (probs: (N, K)) as one table of the fixed schema.

    A column outside the schema is an error, never dropped."""
    names = set(_PREDICTION_SCHEMA.names)
    data: dict[str, list[Any]] = {name: [] for name in _PREDICTION_SCHEMA.names}
    for split, columns in predictions.items():
        unknown = sorted(set(columns) - names)
        if unknown:
            raise ValueError(f"prediction columns {unknown} are not in the predictions schema")
        size = len(columns["sample"])
        for name in _PREDICTION_SCHEMA.names:
            if name == "run_id":
                data[name].extend([run_id] * size)
            elif name == "split":
                data[name].extend([split] * size)
            elif name in columns:
                values = columns[name]
                data[name].extend(v.tolist() if hasattr(v, "tolist") else v for v in values)
            else:
                data[name].extend([None] * size)
    return pa.table(data, schema=_PREDICTION_SCHEMA)


def evaluation_path(runs_dir: str | os.PathLike[str], run_id: str) -> Path:
    """The test-time evaluations file of a run."""
    return Path(runs_dir) / EVALUATIONS / f"{run_id}.parquet"


def _evaluations_table(run_id: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Evaluation dicts (kind, sigma, test_dataset, test_<metric>...) as one table of the fixed schema.

    A kind outside EVALUATION_KINDS is an error; metrics outside the schema are dropped (the result row's
    metrics_json holds the clean run's full set, the evaluations keep the tasks' test columns)."""
    data: dict[str, list[Any]] = {name: [] for name in _EVALUATION_SCHEMA.names}
    for row in rows:
        if row.get("kind") not in EVALUATION_KINDS:
            raise ValueError(f"evaluation kind must be one of {EVALUATION_KINDS}, got {row.get('kind')!r}")
        data["run_id"].append(run_id)
        data["kind"].append(str(row["kind"]))
        data["sigma"].append(_metric(row, "sigma"))
        data["test_dataset"].append(str(row.get("test_dataset") or ""))
        for name in _EVALUATION_SCHEMA.names[4:]:
            data[name].append(_metric(row, name))
    return pa.table(data, schema=_EVALUATION_SCHEMA)


def read_evaluations(runs_dir: str | os.PathLike[str],
                     run_ids: Iterable[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Test-time evaluation rows (`evaluations/<run_id>.parquet`: EVALUATION_COLUMNS first, the metric
    columns after) of `run_ids` (all when None), and problems with skipped files."""
    frames, problems = _read_run_tables(Path(runs_dir) / EVALUATIONS, run_ids, EVALUATION_COLUMNS,
                                        "evaluations file", keep_extra=True)
    if not frames:
        return _EVALUATION_SCHEMA.empty_table().to_pandas(), problems
    return pd.concat(frames, ignore_index=True), problems


def save_result(runs_dir: str | os.PathLike[str], result: ResultLike) -> Path:
    """Store one finished run: trajectory, checkpoint and predictions (ok runs), then the result row;
    each atomic."""
    runs = Path(runs_dir)
    run_id = result.config.run_id
    if result.run_id != run_id:
        raise ValueError(f"result run_id {result.run_id} does not match its config ({run_id})")
    if result.status not in STATUSES:
        raise ValueError(f"result status must be one of {STATUSES}, got {result.status!r}")
    written: list[Path] = []
    try:
        _write_part(written, trajectory_path(runs, run_id),
                    lambda: _parquet_bytes(_trajectory_table(run_id, result.trajectory or [])))
        if result.status == "ok" and result.state_dict is not None:
            _write_part(written, checkpoint_path(runs, run_id), lambda: _checkpoint_bytes(result.state_dict))
        predictions = getattr(result, "predictions", None)
        if result.status == "ok" and predictions:
            _write_part(written, prediction_path(runs, run_id),
                        lambda: _parquet_bytes(_predictions_table(run_id, predictions)))
        evaluations = getattr(result, "evaluations", None)
        if result.status == "ok" and evaluations:
            _write_part(written, evaluation_path(runs, run_id),
                        lambda: _parquet_bytes(_evaluations_table(run_id, evaluations)))
        path = result_path(runs, run_id)
        _write_part(written, path, lambda: _parquet_bytes(_row_table(result_columns(result))))
    except BaseException:
        for done in written:  # no trajectory or checkpoint without its result row
            done.unlink(missing_ok=True)
        raise
    return path


def _write_part(written: list[Path], path: Path, data: Any) -> None:
    """Serialise and write one file of a result, noting it for the rollback."""
    atomic_write(path, data())
    written.append(path)


def _checkpoint_bytes(state_dict: Mapping[str, Any]) -> bytes:
    """A state_dict serialised with torch.save, tensors on the CPU."""
    import torch

    sink = io.BytesIO()
    torch.save({k: v.detach().cpu() if hasattr(v, "detach") else v for k, v in state_dict.items()}, sink)
    return sink.getvalue()


def load_checkpoint(runs_dir: str | os.PathLike[str], run_id: str) -> dict[str, Any]:
    """The best state_dict of a stored run (CPU tensors); FileNotFoundError when there is none."""
    import torch

    path = checkpoint_path(runs_dir, run_id)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint for run {run_id} ({path})")
    return torch.load(path, map_location="cpu", weights_only=True)


def has_checkpoint(runs_dir: str | os.PathLike[str], run_id: str) -> bool:
    """Whether a run has a stored checkpoint."""
    return checkpoint_path(runs_dir, run_id).is_file()


# -- readers -------------------------------------------------------------------------------------

def _parquet_files(folder: Path) -> list[Path]:
    """Parquet files of a folder, temp files excluded, sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and not is_temp_name(p.name))


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
    return frame, None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200]


def read_results(runs_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, list[str]]:
    """Every valid result row, and one "path: problem" line per skipped (corrupt, foreign) file."""
    frames: list[pd.DataFrame] = []
    problems: list[str] = []
    for path in _parquet_files(Path(runs_dir) / RESULTS):
        frame, problem = _read_result_file(path)
        if problem:
            problems.append(problem)
        else:
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["run_id", "status", *METRIC_COLUMNS]), problems
    results = pd.concat(frames, ignore_index=True)
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


OLD_SCHEME_MARK = "run(s) of an older run-id scheme"


def is_old_scheme_problem(problem: str) -> bool:
    """Whether a read_results problem line is the old-scheme note (not a corrupt file)."""
    return OLD_SCHEME_MARK in problem


def old_scheme_problem(runs_dir: Path, count: int) -> str:
    """The one line that says why old-scheme rows are left out, and what to do."""
    return (f"{runs_dir / RESULTS}: {count} {OLD_SCHEME_MARK} (before scheme {RUN_ID_SCHEME}: "
            "the id did not cover the label rule and the method's default parameters, so they may hold "
            "numbers of old defaults such as rounded MOSEI labels): left out of every listing and table; "
            "retrain with a fresh --runs-dir, or delete those result files to retrain them in place")


def _read_run_tables(folder: Path, run_ids: Iterable[str] | None, columns: Sequence[str], kind: str,
                     keep_extra: bool) -> tuple[list[pd.DataFrame], list[str]]:
    """The per-run parquet tables of a folder (`run_ids`, or all), each with `columns` first; problems."""
    if run_ids is None:
        paths = _parquet_files(folder)
    else:
        paths = [p for p in (folder / f"{rid}.parquet" for rid in dict.fromkeys(run_ids)) if p.is_file()]
    frames: list[pd.DataFrame] = []
    problems: list[str] = []
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


def read_trajectories(runs_dir: str | os.PathLike[str],
                      run_ids: Iterable[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Trajectory rows of `run_ids` (all stored runs when None), and problems with skipped files."""
    frames, problems = _read_run_tables(Path(runs_dir) / TRAJECTORIES, run_ids, TRAJECTORY_COLUMNS,
                                        "trajectory", keep_extra=False)
    if not frames:
        return _TRAJECTORY_SCHEMA.empty_table().to_pandas(), problems
    return pd.concat(frames, ignore_index=True), problems


def read_predictions(runs_dir: str | os.PathLike[str],
                     run_ids: Iterable[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Per-sample prediction rows (`predictions/<run_id>.parquet`: PREDICTION_COLUMNS first, any others
    after), and problems with skipped files; an empty frame with those columns when none is stored."""
    frames, problems = _read_run_tables(Path(runs_dir) / PREDICTIONS, run_ids, PREDICTION_COLUMNS,
                                        "prediction file", keep_extra=True)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PREDICTION_COLUMNS}), problems
    return pd.concat(frames, ignore_index=True), problems


def stored_status(runs_dir: str | os.PathLike[str]) -> dict[str, str]:
    """run_id -> "ok" | "failed" for every readable result file (corrupt ones are absent)."""
    statuses: dict[str, str] = {}
    for path in _parquet_files(Path(runs_dir) / RESULTS):
        status = read_status(runs_dir, path.stem)
        if status is not None:
            statuses[path.stem] = status
    return statuses


def read_status(runs_dir: str | os.PathLike[str], run_id: str) -> str | None:
    """The stored status of one run, or None when it has no readable result."""
    path = result_path(runs_dir, run_id)
    try:
        table = pq.read_table(path, columns=["run_id", "status"])
    except Exception:  # absent or unreadable: not stored
        return None
    if table.num_rows != 1 or table.column("run_id")[0].as_py() != run_id:
        return None
    status = table.column("status")[0].as_py()
    return status if status in STATUSES else None


def completed_ids(runs_dir: str | os.PathLike[str]) -> set[str]:
    """Run ids with an ok result."""
    return {rid for rid, status in stored_status(runs_dir).items() if status == "ok"}


def read_row(runs_dir: str | os.PathLike[str], run_id: str) -> dict[str, Any]:
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
    """Every metric the run reported (metrics_json), falling back to the fixed columns."""
    text = row.get("metrics_json")
    if isinstance(text, str) and text:
        return {k: float(v) for k, v in json.loads(text).items()}
    return {name: float(row[name]) for name in (*METRIC_COLUMNS, *EPOCH_COLUMNS) if name in row}


# -- claims --------------------------------------------------------------------------------------

DEFAULT_CLAIM_TTL_S = 2 * 3600.0


@dataclass(frozen=True)
class Claim:
    """A held claim on one run: only its holder trains the run."""

    run_id: str
    path: Path
    token: str


def _host() -> str:
    return socket.gethostname()


def try_claim(runs_dir: str | os.PathLike[str], run_id: str,
              ttl_s: float = DEFAULT_CLAIM_TTL_S) -> Claim | None:
    """Claim `run_id` for this process; None while another live process holds it. Stale claims are broken."""
    path = claim_path(runs_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        claim = _create_claim(path, run_id)
        if claim is not None:
            return claim
        if not _break_if_stale(path, ttl_s):
            return None
    return None


def _create_claim(path: Path, run_id: str) -> Claim | None:
    """Create the claim file exclusively, complete from its first instant; None when it already exists.

    Written to a temp file, then hard-linked to the claim name (atomic, fails if the name exists): a kill
    between creating and filling the file would otherwise leave an empty claim that blocks the run.
    """
    token = secrets.token_hex(8)
    data = json.dumps({"pid": os.getpid(), "host": _host(), "time": time.time(), "token": token}).encode()
    tmp = temp_path(path)
    try:
        _write_synced(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
        except OSError:  # a filesystem without hard links: exclusive create, then fill
            try:
                _write_synced(path, data)
            except FileExistsError:
                return None
    finally:
        tmp.unlink(missing_ok=True)
    return Claim(run_id=run_id, path=path, token=token)


def read_claim(path: Path) -> dict[str, Any] | None:
    """The holder of a claim file ({pid, host, time, token}), or None when unreadable / half-written."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name; a zombie has finished.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def claim_is_stale(info: Mapping[str, Any] | None, age_s: float, ttl_s: float) -> bool:
    """Stale: its process is dead on this host, it has not been refreshed for `ttl_s` seconds, or it has been
    unreadable for a minute (claims are written whole; a broken one would otherwise block its run)."""
    if info is None:
        return age_s > min(ttl_s, ASIDE_MAX_AGE_S)
    if info.get("host") == _host() and isinstance(info.get("pid"), int):
        if not pid_alive(info["pid"]):
            return True
    return age_s > ttl_s


def _break_if_stale(path: Path, ttl_s: float) -> bool:
    """Remove a stale claim; False when the claim is live. Safe against a concurrent breaker."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    info = read_claim(path)
    if not claim_is_stale(info, age, ttl_s):
        return False
    aside = path.parent / f".{path.name}.{secrets.token_hex(4)}.stale"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True  # someone else broke it first
    moved = read_claim(aside)
    if info is not None and (moved or {}).get("token") != info.get("token"):
        # A fresh claim replaced the stale one between our read and the rename: put it back.
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


def refresh_claim(claim: Claim) -> bool:
    """Touch a held claim so it does not age out; False when it is no longer ours."""
    info = read_claim(claim.path)
    if info is None or info.get("token") != claim.token:
        return False
    try:
        os.utime(claim.path)
    except FileNotFoundError:
        return False
    return True


def release_claim(claim: Claim) -> None:
    """Remove the claim file if it is still ours."""
    info = read_claim(claim.path)
    if info is not None and info.get("token") == claim.token:
        claim.path.unlink(missing_ok=True)


def claim_holder(runs_dir: str | os.PathLike[str], run_id: str) -> str:
    """A short description of who holds the claim on `run_id` ("" when nobody does)."""
    info = read_claim(claim_path(runs_dir, run_id))
    if info is None:
        return ""
    return f"pid {info.get('pid')} on {info.get('host')}"
