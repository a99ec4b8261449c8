"""Run a list of RunConfigs: in this process, in a pool of worker processes, or on Slurm (submitit).

Every executor follows the same rules:

- Resume: a job whose run id already has an `ok` result is skipped. A stored *failure* is reported and
  not retrained (training is deterministic, so it would fail the same way) unless `retry_failed`;
  it still counts as a failure in the summary and the exit code.
- Dependencies (`get_method(cfg.method).needs(cfg)`) are added when missing and trained first; their
  best checkpoints are loaded from the store and passed as `deps`. A job whose dependency failed is
  recorded failed with "dependency <run_id> failed".
- Each run id is trained at most once per invocation, and a claim file (bench.store) keeps two
  invocations on the same runs directory from training it at the same time: a job claimed by another
  live process waits, and whatever that process stores is taken as this job's outcome.
- The parent process writes every result (atomically, once); workers only train.
- A job that raises, or whose worker process dies, is recorded `failed` with the reason; the rest go on.
- Ctrl-C stops the workers, releases the claims and re-raises; rerunning resumes.

The parts: `job` (train one job: `execute_one`), `scheduler` (the plan, its claims and outcomes,
`Summary`), `claims` (keeping held claims fresh), `progress` (plain lines or the live panel), `local`
(inline and the worker pool, device spreading), `slurm` (submitit). This module drives them
(`run_jobs`) and re-exports the public names.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench import store
from bench.config import ConfigError, RunConfig
from bench.execute.job import JobFn, default_device, default_job_fn, error_text, execute_one
from bench.execute.local import _InlineBackend, _LocalPool, cpu_count, gpu_count, local_devices
from bench.execute.progress import _make_reporter, describe, job_line
from bench.execute.scheduler import Summary, _Scheduler
from bench.execute.slurm import SLURM_ALIASES, _run_slurm, slurm_parameters

__all__ = ["EXECUTORS", "POLL_S", "SLURM_ALIASES", "JobFn", "Summary", "check_options", "cpu_count",
           "default_device", "default_job_fn", "describe", "error_text", "execute_one", "gpu_count", "job_line",
           "local_devices", "run_jobs", "slurm_parameters"]

EXECUTORS = ("inline", "local", "slurm")
POLL_S = 0.5  # how often the scheduler looks at held claims and worker state
# run_jobs looks up POLL_S and default_job_fn in this module, so a test patches them here (bench.execute);
# HELD_RETRY_S is read in bench.execute.scheduler and patched there.


def _drive(sched: _Scheduler, backend: Any) -> None:
    """Dispatch ready jobs to the backend's free slots and record results until nothing is left."""
    while sched.has_work:
        free = backend.free_slots
        if free:
            for job in sched.ready(free):
                backend.submit(job)
        if sched.running:
            for job, result in backend.wait(POLL_S):
                sched.record(job, result)
        elif sched.pending:
            time.sleep(POLL_S)  # everything left waits on another invocation's claims


def check_options(executor: str, workers: int | None, workers_per_gpu: int) -> None:
    """Reject impossible executor settings before anything starts."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if workers_per_gpu < 1:
        raise ConfigError(f"--workers-per-gpu must be >= 1, got {workers_per_gpu}")
    if executor == "inline" and workers not in (None, 1):
        raise ConfigError(f"--executor inline runs one job at a time; it conflicts with --workers {workers}")


def run_jobs(jobs: Iterable[RunConfig], runs_dir: str | Path, executor: str = "inline",
             workers: int | None = None, workers_per_gpu: int = 1, retry_failed: bool = False,
             job_fn: JobFn | None = None, progress: bool = True,
             slurm_options: Mapping[str, Any] | None = None,
             claim_ttl_s: float = store.DEFAULT_CLAIM_TTL_S) -> Summary:
    """Train every job not already stored ok (dependencies first); see the module docstring."""
    check_options(executor, workers, workers_per_gpu)
    if executor == "slurm" and not (slurm_options or {}).get("cluster") and shutil.which("sbatch") is None:
        # submitit would silently fall back to starting every job of a wave on this machine at once
        raise ConfigError("--executor slurm: no Slurm here (sbatch is not on PATH); use --executor local")
    started = time.monotonic()
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    fn = job_fn if job_fn is not None else default_job_fn()
    devices = local_devices(workers, workers_per_gpu) if executor == "local" else ["inline"]
    reporter = _make_reporter(progress, len(devices))
    sched = _Scheduler(list(jobs), runs, retry_failed, claim_ttl_s, reporter)
    backend: Any = None
    try:
        sched.start()
        if executor == "slurm":
            _run_slurm(sched, fn, runs, slurm_options or {})
        elif sched.pending:
            if executor == "local":
                threads = max(1, cpu_count() // len(devices))
                backend = _LocalPool(fn, runs, devices, threads, reporter)
            else:
                backend = _InlineBackend(fn, runs, reporter)
            _drive(sched, backend)
    except KeyboardInterrupt:
        sched.summary.interrupted = True
        if backend is not None:
            backend.shutdown(abort=True)
            backend = None
        raise
    finally:
        if backend is not None:
            backend.shutdown()
        sched.release_all()
        reporter.stop()
        sched.summary.wall_s = time.monotonic() - started
    return sched.summary
