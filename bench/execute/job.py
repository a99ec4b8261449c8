"""One job: train a RunConfig with its dependencies' checkpoints, never raising for a failing job.

`execute_one` is what every backend runs (in this process, in a pool worker, on a Slurm node): it loads
the dependencies from the store, calls the job function, and turns an exception or a malformed result
into a `failed` record.
"""

from __future__ import annotations

import gc
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import plugins, store
from bench.config import RunConfig

JobFn = Callable[..., Any]  # job_fn(cfg, deps, device=...) -> a RunResult-like object (bench.store.ResultLike)


def default_job_fn() -> JobFn:
    """bench.train.train_run (imported late: it pulls in torch and the data layer)."""
    from bench.train import train_run

    return train_run


def default_device() -> str:
    """"cuda" when a GPU is visible, else "cpu" (torch is imported only where a GPU may exist)."""
    if not Path("/dev/nvidiactl").exists() and "torch" not in sys.modules:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def error_text(err: BaseException) -> str:
    """One line: exception type, message and where it was raised."""
    message = " ".join(str(err).split()) or "(no message)"
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {message}{where}"


def execute_one(cfg: RunConfig, dep_ids: Sequence[str], runs_dir: str | Path, job_fn: JobFn,
                device: str, metric_columns: Sequence[str] = ()) -> Any:
    """Train one job (dependencies loaded from the store); never raises for a failing job.

    `metric_columns` (the task's result columns) go into every failed record made here.
    """
    started = time.perf_counter()
    columns = tuple(metric_columns)
    try:
        plugins.load_from_environment()  # a spawned worker or a Slurm job: the user's --plugin files
        deps = {rid: store.load_checkpoint(runs_dir, rid) for rid in dep_ids}
    except Exception as err:  # a missing or unreadable checkpoint fails this job only
        # retried by a plain rerun, whose scheduler retrains a dependency that lost its checkpoint
        return store.failed_record(cfg, f"dependency checkpoint unavailable: {error_text(err)}", device=device,
                                   metric_columns=columns, error_kind=store.DEPENDENCY)
    try:
        result = job_fn(cfg, deps, device=device)
    except Exception as err:  # the job's own error: recorded, the grid goes on
        return store.failed_record(cfg, error_text(err), time.perf_counter() - started, device, columns)
    finally:
        # A method's hooks may leave reference cycles (models in scratch, closures); collect them now so a
        # worker's memory stays flat over a long grid instead of waiting for Python's next full collection.
        gc.collect()
    problem = result_problem(cfg, result)
    if problem:
        return store.failed_record(cfg, problem, time.perf_counter() - started, device, columns)
    _note_threads(result)
    return result


def _note_threads(result: Any) -> None:
    """Record the CPU threads torch used on the result: an exact rerun on the CPU needs the same count."""
    if "torch" in sys.modules:
        try:
            result.torch_threads = sys.modules["torch"].get_num_threads()
        except AttributeError:  # a result type that takes no new attributes: not stored then
            pass


def result_problem(cfg: RunConfig, result: Any) -> str | None:
    """Why `result` cannot be stored as the outcome of `cfg` (None when it can)."""
    if not hasattr(result, "config") or not hasattr(result, "status"):
        return f"job returned {type(result).__name__}, not a RunResult"
    if getattr(result.config, "run_id", None) != cfg.run_id:
        return "job returned the result of another config"
    if result.status not in store.STATUSES:
        return f"job returned status {result.status!r}"
    return None
