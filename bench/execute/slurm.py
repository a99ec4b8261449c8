"""The Slurm backend (submitit): every job whose dependencies are done goes out as one array, in waves."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import store
from bench.config import RunConfig
from bench.execute.job import JobFn, _result_problem, default_device, error_text, execute_one

if TYPE_CHECKING:
    from bench.execute.scheduler import _Job, _Scheduler


SLURM_ALIASES = {"partition": "slurm_partition", "time": "timeout_min", "timeout_min": "timeout_min",
                 "gpus": "gpus_per_node", "gpus_per_node": "gpus_per_node", "cpus": "cpus_per_task",
                 "cpus_per_task": "cpus_per_task", "mem_gb": "mem_gb", "array_parallelism": "slurm_array_parallelism",
                 "name": "name"}


def slurm_parameters(options: Mapping[str, Any]) -> dict[str, Any]:
    """submitit parameters from our option names (partition, time in minutes, gpus, array_parallelism...)."""
    params: dict[str, Any] = {"name": "bench", "timeout_min": 60}
    for key, value in options.items():
        if key in ("cluster", "folder", "poll_s") or value is None:
            continue
        params[SLURM_ALIASES.get(key, key)] = value
    return params


def _slurm_entry(cfg: RunConfig, dep_ids: Sequence[str], runs_dir: str, job_fn: JobFn) -> Any:
    """What one Slurm job runs (on the compute node; the runs directory must be shared)."""
    return execute_one(cfg, dep_ids, runs_dir, job_fn, default_device())


def _run_slurm(sched: _Scheduler, job_fn: JobFn, runs_dir: Path, options: Mapping[str, Any]) -> None:
    """Submit in waves: every job whose dependencies are done goes out as one array; wait; repeat."""
    import submitit

    folder = Path(options.get("folder") or runs_dir / "slurm")
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.get("cluster"))
    executor.update_parameters(**slurm_parameters(options))
    poll = float(options.get("poll_s", 2.0))
    submitted: list[tuple[_Job, Any]] = []
    try:
        while sched.has_work:
            wave = sched.ready(None)
            if not wave:
                time.sleep(poll)
                continue
            with executor.batch():
                handles = [executor.submit(_slurm_entry, job.cfg, job.deps, str(runs_dir), job_fn) for job in wave]
            submitted = list(zip(wave, handles, strict=True))
            for job, handle in submitted:
                sched.reporter.started(job, f"slurm {handle.job_id}")
            _await_wave(sched, submitted, poll)
            submitted = []
    except KeyboardInterrupt:
        for _, handle in submitted:
            try:
                handle.cancel(check=False)
            except Exception:  # best effort: the job may be gone already
                pass
        raise


def _await_wave(sched: _Scheduler, submitted: list[tuple[Any, Any]], poll: float) -> None:
    """Record each job of a wave as it finishes."""
    waiting = list(submitted)
    while waiting:
        still = []
        for job, handle in waiting:
            if not handle.done():
                still.append((job, handle))
                continue
            sched.reporter.idle(f"slurm {handle.job_id}")
            try:
                result = handle.result()
                problem = _result_problem(job.cfg, result)
                if problem:
                    result = store.failed_record(job.cfg, problem)
            except Exception as err:  # the Slurm job itself died: this run failed
                result = store.failed_record(job.cfg, f"slurm job {handle.job_id} ended without a result: "
                                                      f"{error_text(err)}")
            sched.record(job, result)
        waiting = still
        if waiting:
            time.sleep(poll)
