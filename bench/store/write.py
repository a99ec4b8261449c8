"""Saving one finished run: trajectory, checkpoint, predictions and evaluations (ok runs), then the result row.

Every file is written atomically (bench.store.atomic). The result row is written last: an `ok` row
implies that its trajectory and checkpoint exist; when a write fails, the files this save already wrote
are removed again. Each file's schema is built here, from the result being saved (bench.store.schema).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.store import atomic
from bench.store.checkpoints import checkpoint_bytes
from bench.store.layout import (
    PathLike,
    checkpoint_path,
    evaluation_path,
    prediction_path,
    result_path,
    trajectory_path,
)
from bench.store.record import ResultLike
from bench.store.schema import (
    EVALUATION_KINDS,
    STATUSES,
    TRAJECTORY_SCHEMA,
    Columns,
    evaluation_schema,
    metric_columns_of,
    metric_value,
    modality_targets_of,
    prediction_schema,
    result_columns,
)


def save_result(runs_dir: PathLike, result: ResultLike) -> Path:
    """Store one finished run: trajectory, checkpoint, predictions and evaluations (ok runs), then the
    result row; each atomic. Returns the result row's path."""
    runs = Path(runs_dir)
    run_id = result.config.run_id
    if result.run_id != run_id:
        raise ValueError(f"result run_id {result.run_id} does not match its config ({run_id})")
    if result.status not in STATUSES:
        raise ValueError(f"result status must be one of {STATUSES}, got {result.status!r}")
    ok = result.status == "ok"
    written: list[Path] = []
    try:
        _write_part(written, trajectory_path(runs, run_id),
                    lambda: parquet_bytes(trajectory_table(run_id, result.trajectory or [])))
        if ok and result.state_dict is not None:
            _write_part(written, checkpoint_path(runs, run_id), lambda: checkpoint_bytes(result.state_dict))
        predictions = getattr(result, "predictions", None)
        if ok and predictions:
            schema = prediction_schema(result.config.modalities, modality_targets_of(predictions))
            _write_part(written, prediction_path(runs, run_id),
                        lambda: parquet_bytes(predictions_table(run_id, predictions, schema)))
        evaluations = getattr(result, "evaluations", None)
        if ok and evaluations:
            schema = evaluation_schema(metric_columns_of(result))
            _write_part(written, evaluation_path(runs, run_id),
                        lambda: parquet_bytes(evaluations_table(run_id, evaluations, schema)))
        path = result_path(runs, run_id)
        _write_part(written, path, lambda: parquet_bytes(row_table(result_columns(result))))
    except BaseException:
        for done in written:  # no trajectory or checkpoint without its result row
            done.unlink(missing_ok=True)
        raise
    return path


def _write_part(written: list[Path], path: Path, data: Callable[[], bytes]) -> None:
    """Serialise and write one file of a result, noting it for the rollback."""
    atomic.atomic_write(path, data())
    written.append(path)


def parquet_bytes(table: pa.Table) -> bytes:
    """A table serialised as parquet (written atomically by the caller)."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def row_table(columns: Columns) -> pa.Table:
    """The one-row arrow table of a result, with an explicit schema."""
    schema = pa.schema([(name, kind) for name, (_, kind) in columns.items()])
    return pa.table({name: pa.array([value], type=kind) for name, (value, kind) in columns.items()},
                    schema=schema)


def trajectory_table(run_id: str, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
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
    return pa.table(data, schema=TRAJECTORY_SCHEMA)


def predictions_table(run_id: str, predictions: Mapping[str, Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """split -> column -> (N,) values (probs: (N, K)) as one table of `schema` (prediction_schema).

    A column outside the schema is an error, never dropped."""
    names = set(schema.names)
    data: dict[str, list[Any]] = {name: [] for name in schema.names}
    for split, columns in predictions.items():
        unknown = sorted(set(columns) - names)
        if unknown:
            raise ValueError(f"prediction columns {unknown} are not in the predictions schema")
        size = len(columns["sample"])
        for name in schema.names:
            if name == "run_id":
                data[name].extend([run_id] * size)
            elif name == "split":
                data[name].extend([split] * size)
            elif name in columns:
                values = columns[name]
                data[name].extend(v.tolist() if hasattr(v, "tolist") else v for v in values)
            else:
                data[name].extend([None] * size)
    return pa.table(data, schema=schema)


def evaluations_table(run_id: str, rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Evaluation dicts (kind, sigma, test_dataset, test_<metric>...) as one table of `schema`
    (evaluation_schema).

    A kind outside EVALUATION_KINDS is an error; metrics outside the schema are dropped (the result row's
    metrics_json holds the clean run's full set, the evaluations keep the tasks' test columns)."""
    data: dict[str, list[Any]] = {name: [] for name in schema.names}
    for row in rows:
        if row.get("kind") not in EVALUATION_KINDS:
            raise ValueError(f"evaluation kind must be one of {EVALUATION_KINDS}, got {row.get('kind')!r}")
        data["run_id"].append(run_id)
        data["kind"].append(str(row["kind"]))
        data["sigma"].append(metric_value(row, "sigma"))
        data["test_dataset"].append(str(row.get("test_dataset") or ""))
        for name in schema.names[4:]:
            data[name].append(metric_value(row, name))
    return pa.table(data, schema=schema)
