"""Run a job graph: in this process, in a pool of worker processes, on Slurm, or on any registered backend.

Every executor follows the same rules:

- Resume: a job whose run id already has an `ok` result is skipped. A stored *failure* is reported and
  not retrained (training is deterministic, so it would fail the same way) unless `retry_failed`;
  it still counts as a failure in the summary and the exit code.
- Dependencies come with the jobs (each job names the run ids it needs, dependencies first:
  bench.plan.deps.job_graph builds that list); their best checkpoints are loaded from the store and passed
  as `deps`. A job whose dependency failed is recorded failed with "dependency <run_id> failed".
- Each run id is trained at most once per invocation, and a claim file (bench.store) keeps two
  invocations on the same runs directory from training it at the same time: a job claimed by another
  live process waits, and whatever that process stores is taken as this job's outcome.
- The parent process writes every result (atomically, once); workers only train.
- A job that raises, or whose worker process dies, is recorded `failed` with the reason; the rest go on.
- Ctrl-C stops the workers, releases the claims and re-raises; rerunning resumes.

The parts: `backend` (the Backend protocol, `Job`, the registry of executors and their options),
`backends/` (inline, local, slurm: one file each), `job` (train one job: `execute_one`), `scheduler`
(the plan, its claims and outcomes, `Summary`), `claims` (keeping held claims fresh), `progress` (plain
lines or the live panel). This module drives them (`run_jobs`: the one loop for every backend) and
re-exports the public names.
"""

from __future__ import annotations

import contextlib
import shutil  # noqa: F401  (tests patch execute.shutil.which: the Slurm backend's "is sbatch here")
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bench import store
from bench.config import ConfigError, RunConfig
from bench.execute import backends  # noqa: F401  (registers the built-in executors)
from bench.execute.backend import (
    EXECUTORS,
    Backend,
    BackendContext,
    BackendOptions,
    ExecutorError,
    Job,
    backend_spec,
    merge_options,
    option,
    register_backend,
    resolve_options,
)
from bench.execute.backends.local import cpu_count, gpu_count, local_devices
from bench.execute.backends.slurm import slurm_parameters
from bench.execute.job import JobFn, default_device, default_job_fn, error_text, execute_one
from bench.execute.progress import Progress, Reporter, describe, job_line, make_reporter
from bench.execute.scheduler import Scheduler, Summary

__all__ = ["ExecutorError", "Terminated",
           "EXECUTORS", "POLL_S", "Backend", "BackendContext", "BackendOptions", "Job", "JobFn", "Progress",
           "Summary", "backend_spec", "cpu_count", "default_device", "default_executor", "default_job_fn",
           "describe", "error_text", "execute_one", "gpu_count", "job_line", "local_devices", "merge_options",
           "option", "register_backend", "resolve_options", "run_jobs", "slurm_parameters"]

POLL_S = 0.5  # how often the scheduler looks at held claims and worker state
# run_jobs looks up POLL_S and default_job_fn in this module, so a test patches them here (bench.execute);
# HELD_RETRY_S is read in bench.execute.scheduler and patched there.


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) during run_jobs: handled like Ctrl-C, so the backend cancels what it submitted
    (a Slurm array) and the claims are released; `signum` gives the exit code (128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Terminated in the main thread (elsewhere: no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def default_executor(options: Mapping[str, Any]) -> str:
    """The executor when none is named: `local` with several workers or a GPU, else `inline`."""
    workers = options.get("workers")
    try:
        several = workers is not None and int(workers) > 1
    except (TypeError, ValueError):
        several = True  # not a number: the local executor's options say what is wrong with it
    return "local" if several or gpu_count() else "inline"


def _drive(sched: Scheduler, backend: Backend, reporter: Reporter) -> None:
    """The one loop: hand ready jobs to the backend's free capacity, record what finishes, until done."""
    while sched.has_work:
        free = backend.capacity()
        if free > 0:
            for job in sched.ready(free):
                backend.submit(job)
                reporter.started(job, sched.snapshot())
        if sched.running:
            for job, result in backend.poll(POLL_S):
                sched.record(job, result)
        elif sched.pending:
            time.sleep(POLL_S)  # everything left waits on another invocation's claims


def _as_jobs(planned: Iterable[Any]) -> list[Job]:
    """Jobs from the caller's graph: anything with `config` and `needs` (bench.plan.deps.PlannedJob)."""
    jobs = []
    for item in planned:
        if isinstance(item, RunConfig) or not hasattr(item, "needs"):
            raise ConfigError("run_jobs takes the job graph, not configs: pass bench.plan.deps.job_graph(configs)")
        jobs.append(Job(item.config, tuple(item.needs)))
    return jobs


def run_jobs(jobs: Iterable[Any], runs_dir: str | Path, executor: str = "inline",
             options: Mapping[str, Any] | BackendOptions | None = None, *, retry_failed: bool = False,
             job_fn: JobFn | None = None, progress: bool = True, metric_columns: tuple[str, ...] = (),
             claim_ttl_s: float = store.DEFAULT_CLAIM_TTL_S, quiet: bool = False) -> Summary:
    """Train every job not already stored ok (see the module docstring); the Summary.

    jobs: the job graph, dependencies first (`bench.plan.deps.job_graph(configs)`: each item has `config`
    and `needs`). executor: a registered backend; options: its options (a mapping, strings converted, or its
    options dataclass). metric_columns: the task's result columns, passed to every failed record made here.
    """
    spec = backend_spec(executor)
    opts = options if isinstance(options, spec.options) else resolve_options(executor, dict(options or {}))
    graph = _as_jobs(jobs)
    started = time.monotonic()
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    context = BackendContext(runs, job_fn if job_fn is not None else default_job_fn(), tuple(metric_columns))
    reporter = make_reporter(progress, quiet)  # quiet: the caller asked for no output (api echo=None)
    sched = Scheduler(graph, runs, retry_failed, claim_ttl_s, reporter, context.metric_columns)
    backend: Backend | None = None
    try:
        with _terminate_as_interrupt():
            sched.start()
            if sched.pending:
                backend = spec.open(opts, context)
                _drive(sched, backend, reporter)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM / SIGHUP (Terminated): cancel what was submitted
        sched.summary.interrupted = True
        if backend is not None:
            backend.cancel()
            backend.close(abort=True)
            backend = None
        raise
    finally:
        if backend is not None:
            backend.close()
        sched.release_all()
        reporter.stop()
        sched.summary.wall_s = time.monotonic() - started
    return sched.summary
