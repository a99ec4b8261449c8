"""The columns of the stored files, built when a result is written from what the result declares.

Nothing here is computed at import: the result row's metric columns and the evaluations file's
`test_` columns come from the result being saved (`metric_columns`, which bench.train fills with every
registered task's columns when the run is made), and the predictions file's `prediction_<modality>`
columns from the run's config. So a task registered after `import bench.store` still gets its columns.
The method parameters' typed `param_<name>` columns come from the method registry, imported by the
writer only (`param_types`); readers never import a registry.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from bench import __version__
from bench.config import MODALITIES, PAIR_FIELDS, RUN_ID_SCHEME, RunConfig, modality_key
from bench.store import provenance

if TYPE_CHECKING:
    from bench.store.record import ResultLike

STATUSES = ("ok", "failed")
# Why a failed run failed, when a plain rerun should retrain it (the `error_kind` column; null for an ok run
# and for a deterministic failure such as a NaN loss, which only --retry-failed retrains):
# "transient": its process died or the cluster ended it (SIGKILL, OOM kill, a Slurm cancel, time limit,
# node failure, preemption); "dependency": a run it needs failed or lost its checkpoint.
TRANSIENT = "transient"
DEPENDENCY = "dependency"
ERROR_KINDS = (TRANSIENT, DEPENDENCY)
EPOCH_COLUMNS = ("best_epoch", "epochs")
# Metric columns follow the tasks' naming (bench.tasks.Task.columns): test_<metric> and val_<metric>.
METRIC_PREFIXES = ("test_", "val_")
TRAJECTORY_COLUMNS = ("run_id", "epoch", "step", "split", "series", "modality", "value")
PREDICTION_COLUMNS = ("run_id", "split", "sample", "target", "prediction")
EVALUATION_KINDS = ("noise", "ood")
EVALUATION_COLUMNS = ("run_id", "kind", "sigma", "test_dataset")

TRAJECTORY_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("epoch", pa.int64()), ("step", pa.int64()), ("split", pa.string()),
    ("series", pa.string()), ("modality", pa.string()), ("value", pa.float64()),
])

# Method parameters get typed `param_<name>` columns in every row (null where a run does not set
# them), so every result file has the same schema and a folder read keeps them: param_types() takes
# them from the registered methods' Params. Anything else still gets a column (as JSON text), present
# only in the rows that set it.
FIELD_TYPES = {"str": pa.string(), "float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}

Columns = dict[str, tuple[Any, pa.DataType]]


# -- per-file schemas ----------------------------------------------------------------------------

def metric_columns_of(result: ResultLike) -> tuple[str, ...]:
    """The result row's metric columns: those the result declares, else the test_/val_ metrics it holds
    (an outcome made without the task registry at hand, such as a bare RunRecord)."""
    declared = tuple(getattr(result, "metric_columns", None) or ())
    if declared:
        return declared
    return tuple(name for name in (result.metrics or {})
                 if name.startswith(METRIC_PREFIXES) and name not in EPOCH_COLUMNS)


def prediction_schema(modalities: Iterable[str]) -> pa.Schema:
    """One schema for every predictions file, whatever the task: class indices are stored as floats,
    `probs` holds the class probabilities of a classification run, `score` its continuous label. Then
    `prediction_<m>` for text, audio and vision (always, so a folder read keeps every column of every
    thesis run) and for any other modality of the run, in the run's order."""
    extra = [m for m in modalities if m not in MODALITIES]
    return pa.schema([
        ("run_id", pa.string()), ("split", pa.string()), ("sample", pa.string()), ("target", pa.float64()),
        ("prediction", pa.float64()), ("probs", pa.list_(pa.float64())), ("score", pa.float64()),
        *((f"prediction_{m}", pa.float64()) for m in (*MODALITIES, *extra)),
    ])


def evaluation_schema(metric_columns: Iterable[str]) -> pa.Schema:
    """The evaluations file: the key columns, then the `test_` ones of the result's metric columns."""
    return pa.schema([
        ("run_id", pa.string()), ("kind", pa.string()), ("sigma", pa.float64()), ("test_dataset", pa.string()),
        *((name, pa.float64()) for name in metric_columns if name.startswith("test_")),
    ])


# -- the result row ------------------------------------------------------------------------------

def config_columns(cfg: RunConfig) -> Columns:
    """Every RunConfig field as (value, arrow type); pairs as JSON objects, modalities as the thesis key."""
    columns: Columns = {}
    for f in dataclasses.fields(RunConfig):
        value = getattr(cfg, f.name)
        if f.name == "modalities":
            columns[f.name] = (modality_key(value), pa.string())
        elif f.name in PAIR_FIELDS:
            columns[f.name] = (json.dumps(dict(value), sort_keys=True), pa.string())
        else:
            kind = FIELD_TYPES.get(str(f.type), pa.string())
            columns[f.name] = (cast(value, kind), kind)
    return columns


def param_types() -> dict[str, pa.DataType]:
    """Every float/int/bool/str parameter of the registered methods, in the methods' table order (the
    first method to declare a name gives its type). Imports the method registry: writers only."""
    from bench.methods import REGISTRY, method_order

    types: dict[str, pa.DataType] = {}
    for name in method_order():
        for f in dataclasses.fields(REGISTRY[name].Params):
            # "float" under `from __future__ import annotations`, else the class float itself
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            if f.name not in types and kind in FIELD_TYPES:
                types[f.name] = FIELD_TYPES[kind]
    return types


def param_columns(cfg: RunConfig) -> Columns:
    """`param_<name>` for every known parameter (null when unset) and for each parameter the run sets."""
    given = dict(cfg.method_params)
    known = param_types()
    columns = {f"param_{name}": (cast(given.get(name), kind), kind) for name, kind in known.items()}
    for name, value in given.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if name not in known:
            columns[f"param_{name}"] = (text, pa.string())
        elif value is not None and columns[f"param_{name}"][0] is None:
            # another method's parameter of this name has another type (a plugin's `alpha: str`): the typed
            # column cannot hold it, so it gets a text column of its own rather than a silent null
            columns[f"param_{name}_text"] = (text, pa.string())
    return columns


def cast(value: Any, kind: pa.DataType) -> Any:
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


def metric_value(metrics: Mapping[str, Any], name: str) -> float:
    """metrics[name] as a float; NaN when absent or not a number."""
    value = metrics.get(name)
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _epoch(metrics: Mapping[str, Any], name: str) -> int | None:
    value = metric_value(metrics, name)
    return int(value) if math.isfinite(value) else None


def result_columns(result: ResultLike) -> Columns:
    """The one result row as column -> (value, arrow type), in a fixed order; every metric column of the
    result (metric_columns_of) is NaN where the run did not report it."""
    cfg = result.config
    metrics = dict(result.metrics or {})
    columns: Columns = {"run_id": (cfg.run_id, pa.string()), "id_scheme": (RUN_ID_SCHEME, pa.int64())}
    columns.update(config_columns(cfg))
    columns.update(param_columns(cfg))
    columns["config_json"] = (json.dumps(cfg.to_dict(), sort_keys=True), pa.string())
    columns["status"] = (str(result.status), pa.string())
    columns["error"] = (None if result.error is None else str(result.error), pa.string())
    kind = getattr(result, "error_kind", None) if result.status != "ok" else None
    columns["error_kind"] = (str(kind) if kind else None, pa.string())
    for name in metric_columns_of(result):
        columns[name] = (metric_value(metrics, name), pa.float64())
    for name in EPOCH_COLUMNS:
        columns[name] = (_epoch(metrics, name), pa.int64())
    columns["metrics_json"] = (json.dumps({k: metric_value(metrics, k) for k in sorted(metrics)}), pa.string())
    columns["wall_s"] = (float(result.wall_s or 0.0), pa.float64())
    columns["device"] = (str(result.device or ""), pa.string())
    columns["package_version"] = (__version__, pa.string())
    columns["git_commit"] = (provenance.git_commit(), pa.string())
    columns["torch_version"] = (str(getattr(result, "torch_version", "") or ""), pa.string())
    columns["torch_threads"] = (cast(getattr(result, "torch_threads", None), pa.int64()), pa.int64())
    columns["slurm_job_id"] = (str(getattr(result, "slurm_job_id", None) or "") or None, pa.string())
    plugin_files = list(getattr(result, "plugin_files", None) or [])  # [{"path", "sha256"}]
    columns["plugin_files"] = (json.dumps(plugin_files), pa.string())  # later commands load them again
    columns["data_fingerprint"] = (str(result.data_fingerprint or ""), pa.string())
    columns["synthetic"] = (bool(result.synthetic), pa.bool_())
    columns["finished_at"] = (provenance.utc_now(), pa.string())
    return columns
