"""The results store: one result row, one trajectory table and one checkpoint per run, plus claims.

Layout under the runs directory (the contract of design.md):

    results/<run_id>.parquet       one row: run_id, every RunConfig field, status, metrics, provenance
    trajectories/<run_id>.parquet  long table: run_id, epoch, step, split, series, modality, value
    predictions/<run_id>.parquet   per sample of the best checkpoint, test and valid: run_id, split,
                                   sample, target, prediction, probs, score, prediction_<modality>
    checkpoints/<run_id>.pt        best state_dict of an ok run (ensemble / unipre load these)
    evaluations/<run_id>.parquet   test-time evaluations of an ok run's best checkpoint (RunConfig
                                   test_noise / test_dataset): run_id, kind ("noise" / "ood"), sigma,
                                   test_dataset, then the result's test_<metric> columns (NaN where absent)
    claims/<run_id>.claim          exists while some process is training the run

Every file is written under a hidden temporary name in its final folder, fsynced, then renamed over
the final name, so a kill at any moment leaves the old file or the new one, never a partial one.
Pandas and pyarrow skip names starting with "." when reading a folder, so
`pandas.read_parquet(runs_dir / "results")` never sees a temp file. The result row is written last:
an `ok` row implies that its trajectory and checkpoint exist; when a write fails, the files this save
already wrote are removed again. Temp names carry the writer's host and pid, so `remove_leftovers` (run
by every executor at start) deletes the temp files of writers killed mid-write, and the claims of
processes that died, without touching a live writer's.

One module per job: layout (folders, paths), atomic (temp-name writes), leftovers (cleanup at start),
provenance (git commit, time), schema (the files' columns, built when a result is written), record
(ResultLike, RunRecord), write (save_result), checkpoints (the only use of torch, inside functions),
read (readers: no torch, no registry), claims (the per-run file lock). This package re-exports them.
Importing it loads neither torch nor a registry.
"""

from __future__ import annotations

import os  # noqa: F401  (tests patch os through the store)
from typing import Any

import pyarrow as pa  # noqa: F401  (re-exported: callers build typed columns with store.pa)
import pyarrow.parquet as pq  # noqa: F401

from bench.store.atomic import (
    ASIDE_MAX_AGE_S,
    TEMP_MAX_AGE_S,
    atomic_write,
    host,
    pid_alive,
    temp_path,
    write_output,
)
from bench.store.checkpoints import has_checkpoint, load_checkpoint
from bench.store.claims import (
    DEFAULT_CLAIM_TTL_S,
    Claim,
    attach_job,
    claim_holder,
    claim_is_stale,
    read_claim,
    refresh_claim,
    register_job_probe,
    release_claim,
    try_claim,
)
from bench.store.layout import (
    CHECKPOINTS,
    CLAIMS,
    EVALUATIONS,
    PREDICTIONS,
    RESULTS,
    TRAJECTORIES,
    checkpoint_path,
    claim_path,
    evaluation_path,
    is_temp_name,
    prediction_path,
    result_path,
    trajectory_path,
)
from bench.store.leftovers import remove_leftovers
from bench.store.provenance import git_commit
from bench.store.read import (
    OLD_SCHEME_MARK,
    completed_ids,
    identity_problem,
    is_old_scheme_problem,
    old_scheme_mask,
    old_scheme_problem,
    read_evaluations,
    read_predictions,
    read_results,
    read_row,
    read_state,
    read_status,
    read_trajectories,
    stored_config,
    stored_metrics,
    stored_states,
    stored_status,
)
from bench.store.record import ResultLike, RunRecord, failed_record
from bench.store.schema import (
    DEPENDENCY,
    EPOCH_COLUMNS,
    ERROR_KINDS,
    EVALUATION_COLUMNS,
    EVALUATION_KINDS,
    PREDICTION_COLUMNS,
    STATUSES,
    TRAJECTORY_COLUMNS,
    TRANSIENT,
    config_columns,
    evaluation_schema,
    param_columns,
    param_types,
    prediction_schema,
    result_columns,
)
from bench.store.write import save_result

_host = host  # the name tests and older callers use

__all__ = [
    "DEPENDENCY", "ERROR_KINDS", "TRANSIENT", "write_output", "identity_problem", "read_state", "stored_states",
    "ASIDE_MAX_AGE_S", "CHECKPOINTS", "CLAIMS", "DEFAULT_CLAIM_TTL_S", "EPOCH_COLUMNS", "EVALUATIONS",
    "EVALUATION_COLUMNS", "EVALUATION_KINDS", "OLD_SCHEME_MARK", "PREDICTIONS", "PREDICTION_COLUMNS", "RESULTS",
    "STATUSES", "TEMP_MAX_AGE_S", "TRAJECTORIES", "TRAJECTORY_COLUMNS", "Claim", "ResultLike", "RunRecord",
    "atomic_write", "checkpoint_path", "attach_job", "claim_holder", "claim_is_stale", "claim_path", "completed_ids",
    "config_columns", "evaluation_path", "evaluation_schema", "failed_record", "git_commit", "has_checkpoint",
    "host", "is_old_scheme_problem", "is_temp_name", "load_checkpoint", "old_scheme_mask", "old_scheme_problem",
    "param_columns", "param_types", "pid_alive", "prediction_path", "prediction_schema", "read_claim",
    "read_evaluations", "read_predictions", "read_results", "read_row", "read_status", "read_trajectories",
    "refresh_claim", "register_job_probe", "release_claim", "remove_leftovers", "result_columns", "result_path",
    "save_result",
    "stored_config", "stored_metrics", "stored_status", "temp_path", "trajectory_path", "try_claim",
]


def __getattr__(name: str) -> Any:
    """`METRIC_COLUMNS`: every registered task's result columns, computed when asked for (never a snapshot
    taken at import, so a task registered later is in it). Imports the task registry."""
    if name == "METRIC_COLUMNS":
        from bench.tasks import all_result_columns

        return all_result_columns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
