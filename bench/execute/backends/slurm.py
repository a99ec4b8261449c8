"""`slurm`: jobs submitted through submitit; the runs directory must be on a filesystem the nodes share.

Its capacity is the array parallelism: the scheduler hands out at most that many jobs at once, and the
jobs submitted between two polls go out as one job array.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import store
from bench.config import ConfigError, RunConfig
from bench.execute.backend import BackendContext, BackendOptions, Job, Outcome, option, register_backend
from bench.execute.job import JobFn, default_device, error_text, execute_one, result_problem


@dataclass(frozen=True)
class SlurmOptions(BackendOptions):
    partition: str | None = option(None, flag="--partition", help="Slurm partition")
    time: int = option(60, flag="--time", minimum=1, help="time limit per job, minutes")
    gpus_per_job: int | None = option(None, flag="--gpus-per-job", minimum=0, help="GPUs per job")
    array_parallelism: int = option(256, flag="--array-parallelism", minimum=1,
                                    help="jobs submitted and running at once")
    account: str | None = option(None, help="Slurm account to charge")
    qos: str | None = option(None, help="Slurm quality of service")
    constraint: str | None = option(None, help="Slurm node constraint (features)")
    cpus_per_task: int | None = option(None, minimum=1, help="CPU cores per job")
    mem_gb: int | None = option(None, minimum=1, help="memory per job, GB")
    setup: str | None = option(None, help="shell lines run before each job, separated by ';' "
                                          "(e.g. module load cuda; source .venv/bin/activate)")
    cluster: str | None = option(None, help="submitit cluster: slurm (default), or local/debug for testing")
    folder: str | None = option(None, help="submitit's log folder (default: RUNS_DIR/slurm)")
    poll_s: float = option(2.0, minimum=0.01, help="seconds between looks at the queue")


def slurm_parameters(options: SlurmOptions) -> dict[str, Any]:
    """submitit's parameters for these options (None: submitit's default)."""
    setup = [line.strip() for line in (options.setup or "").split(";") if line.strip()] or None
    return {"name": "bench", "timeout_min": options.time, "slurm_partition": options.partition,
            "gpus_per_node": options.gpus_per_job, "slurm_array_parallelism": options.array_parallelism,
            "slurm_account": options.account, "slurm_qos": options.qos, "slurm_constraint": options.constraint,
            "cpus_per_task": options.cpus_per_task, "mem_gb": options.mem_gb, "slurm_setup": setup}


def _slurm_entry(cfg: RunConfig, dep_ids: Sequence[str], runs_dir: str, job_fn: JobFn,
                 metric_columns: tuple[str, ...]) -> Any:
    """What one Slurm job runs (on the compute node)."""
    return execute_one(cfg, dep_ids, runs_dir, job_fn, default_device(), metric_columns)


class SlurmBackend:
    """Submits queued jobs as one array at each poll and collects the finished ones."""

    def __init__(self, options: SlurmOptions, context: BackendContext) -> None:
        import submitit

        self.options, self.context = options, context
        folder = Path(options.folder) if options.folder else context.runs_dir / "slurm"
        self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.cluster)
        self.executor.update_parameters(**slurm_parameters(options))
        self.queued: list[Job] = []
        self.submitted: dict[Job, Any] = {}  # job -> submitit handle

    def capacity(self) -> int:
        return max(0, self.options.array_parallelism - len(self.queued) - len(self.submitted))

    def submit(self, job: Job) -> None:
        job.worker = "slurm (queued)"
        self.queued.append(job)

    def poll(self, timeout: float) -> list[tuple[Job, Outcome]]:
        self._flush()
        done = [(job, self._outcome(job, handle)) for job, handle in list(self.submitted.items()) if handle.done()]
        for job, _ in done:
            del self.submitted[job]
        if not done:
            time.sleep(self.options.poll_s)
        return done

    def _flush(self) -> None:
        """Submit the queued jobs as one array."""
        if not self.queued:
            return
        ctx, wave = self.context, self.queued
        self.queued = []
        with self.executor.batch():
            handles = [self.executor.submit(_slurm_entry, job.config, job.needs, str(ctx.runs_dir), ctx.job_fn,
                                            ctx.metric_columns) for job in wave]
        for job, handle in zip(wave, handles, strict=True):
            job.worker = f"slurm {handle.job_id}"
            self.submitted[job] = handle

    def _outcome(self, job: Job, handle: Any) -> Outcome:
        columns = self.context.metric_columns
        try:
            result = handle.result()
        except Exception as err:  # the Slurm job itself died: this run failed
            return store.failed_record(job.config, f"slurm job {handle.job_id} ended without a result: "
                                                   f"{error_text(err)}", metric_columns=columns)
        problem = result_problem(job.config, result)
        return store.failed_record(job.config, problem, metric_columns=columns) if problem else result

    def cancel(self, job: Job | None = None) -> None:
        self.queued = [] if job is None else [j for j in self.queued if j is not job]
        for held in [j for j in self.submitted if job is None or j is job]:
            try:
                self.submitted.pop(held).cancel(check=False)
            except Exception:  # best effort: the job may be gone already
                pass

    def close(self, abort: bool = False) -> None:
        if abort:
            self.cancel()


@register_backend("slurm", SlurmOptions, help="a Slurm cluster through submitit (a shared runs directory)")
def open_slurm(options: SlurmOptions, context: BackendContext) -> SlurmBackend:
    if not options.cluster and shutil.which("sbatch") is None:
        # submitit would silently fall back to starting every job on this machine at once
        raise ConfigError("--executor slurm: no Slurm here (sbatch is not on PATH); use --executor local")
    return SlurmBackend(options, context)
