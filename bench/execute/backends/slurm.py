"""`slurm`: jobs submitted through submitit; the runs directory must be on a filesystem the nodes share.

Its capacity is the array parallelism: the scheduler hands out at most that many jobs at once, and the
jobs submitted between two polls go out as one job array.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import store
from bench.config import ConfigError, RunConfig
from bench.execute.backend import (
    BackendContext,
    BackendOptions,
    ExecutorError,
    Job,
    Outcome,
    option,
    register_backend,
)
from bench.execute.job import JobFn, default_device, error_text, execute_one, result_problem

# Job states in which Slurm, not the run, ended the job: a plain rerun trains it again (bench.store.TRANSIENT).
TRANSIENT_STATES = ("CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
                    "REQUEUED")
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize
# sbatch messages that say the cluster is unreachable (exit 1), not that the request is wrong (exit 2)
UNREACHABLE = re.compile(r"contact slurm controller|socket timed out|connection refused|slurm_load", re.I)


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
    max_array_size: int | None = option(None, minimum=1, help="jobs per submitted array (default: the "
                                                               "cluster's MaxArraySize, from scontrol)")
    cluster: str | None = option(None, help="submitit cluster: slurm (default), or local/debug for testing")
    folder: str | None = option(None, help="submitit's log folder (default: RUNS_DIR/slurm)")
    poll_s: float = option(2.0, minimum=0.01, help="seconds between looks at the queue")


def slurm_parameters(options: SlurmOptions) -> dict[str, Any]:
    """submitit's parameters for these options (None: submitit's default)."""
    setup = [line.strip() for line in (options.setup or "").split(";") if line.strip()] or None
    # submitit signals a job this long before its time limit (default 90 s, longer than a 1-minute limit)
    signal_delay = max(1, min(90, options.time * 6))
    return {"name": "bench", "timeout_min": options.time, "slurm_signal_delay_s": signal_delay,
            "slurm_partition": options.partition,
            "gpus_per_node": options.gpus_per_job, "slurm_array_parallelism": options.array_parallelism,
            "slurm_account": options.account, "slurm_qos": options.qos, "slurm_constraint": options.constraint,
            "cpus_per_task": options.cpus_per_task, "mem_gb": options.mem_gb, "slurm_setup": setup}


def _slurm_entry(cfg: RunConfig, dep_ids: Sequence[str], runs_dir: str, job_fn: JobFn,
                 metric_columns: tuple[str, ...]) -> Any:
    """What one Slurm job runs (on the compute node): checks the node sees the runs directory, takes the
    CPUs Slurm granted as torch's thread count, trains."""
    problem = node_problem(runs_dir)
    if problem:
        return store.failed_record(cfg, problem, metric_columns=metric_columns)
    threads_from_allocation()
    return execute_one(cfg, dep_ids, runs_dir, job_fn, default_device(), metric_columns)


def node_problem(runs_dir: str) -> str | None:
    """Why this (compute) node cannot run a job of this runs directory, in one line; None when it can."""
    where = socket.gethostname()
    if not Path(runs_dir).is_dir():
        return (f"node {where} does not see the runs directory {runs_dir}: put it on a filesystem the nodes "
                "share")
    if not os.access(runs_dir, os.W_OK):
        return f"node {where} cannot write the runs directory {runs_dir}"
    return None


def threads_from_allocation() -> int | None:
    """Set torch's CPU threads (and OpenMP's) to the CPUs Slurm granted this job (SLURM_CPUS_PER_TASK)."""
    try:
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK", ""))
    except ValueError:
        return None
    if cpus < 1:
        return None
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(cpus)
    import torch

    torch.set_num_threads(cpus)
    return cpus


# squeue states of a job that has not ended (squeue lists ended jobs for MinJobAge seconds, then drops them)
LIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                         "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"})


PROBE_EVERY_S = 30.0  # how often squeue is asked about jobs submitit has not seen finish
GONE_CONFIRM_S = 60.0  # how long a job is gone from squeue, without a result, before it counts as ended


def slurm_job_alive(job_id: str, timeout_s: float = 10.0) -> bool | None:
    """True while the Slurm job exists (pending or running), False once it has ended or is unknown to the
    controller, None when squeue cannot be asked (no client here, the controller does not answer)."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                             timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return False if "invalid job id" in out.stderr.lower() else None
    states = {line.strip().upper() for line in out.stdout.splitlines() if line.strip()}
    return bool(states & LIVE_STATES)


store.register_job_probe("slurm", slurm_job_alive)


def max_array_size() -> int:
    """The cluster's MaxArraySize (scontrol show config), or Slurm's default when it cannot be read."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return DEFAULT_MAX_ARRAY_SIZE
    found = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
    return int(found.group(1)) if found else DEFAULT_MAX_ARRAY_SIZE


def submission_error(count: int, err: BaseException) -> Exception:
    """A refused sbatch as one line: ConfigError (the request: partition, GPUs, array size) or ExecutorError
    (the controller cannot be reached)."""
    full = f"{err}\n{getattr(err, 'stderr', None) or ''}"
    text = " ".join(full.split())
    lines = [line.strip() for line in full.splitlines() if "error" in line.lower()]
    message = f"sbatch refused {count} job(s): {(lines[-1] if lines else text)[:300]}"
    return ExecutorError(message) if UNREACHABLE.search(text) else ConfigError(message)


class SlurmBackend:
    """Submits queued jobs as one array at each poll and collects the finished ones."""

    def __init__(self, options: SlurmOptions, context: BackendContext) -> None:
        import submitit

        self.options, self.context = options, context
        folder = Path(options.folder) if options.folder else context.runs_dir / "slurm"
        self.executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.cluster)
        self.executor.update_parameters(**slurm_parameters(options))
        cluster = options.cluster or "slurm"
        self.array_size = options.max_array_size or (max_array_size() if cluster == "slurm" else DEFAULT_MAX_ARRAY_SIZE)
        self.queued: list[Job] = []
        self.submitted: dict[Job, Any] = {}  # job -> submitit handle
        # Without accounting (no slurmdbd) submitit never learns that a job ended without a result (a
        # cancel, a node failure): squeue is asked instead, and a job gone from it for GONE_CONFIRM_S with
        # no result is a transient failure, so the grid neither waits forever nor loses the run.
        self.probe_jobs = cluster == "slurm"
        self.gone_since: dict[Job, float] = {}
        self.last_probe = 0.0

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
            self.gone_since.pop(job, None)
        done += self._gone_without_result(time.monotonic())
        if not done:
            time.sleep(self.options.poll_s)
        return done

    def _flush(self) -> None:
        """Submit the queued jobs as arrays of at most the cluster's MaxArraySize; a refused submission is one
        line (ConfigError or ExecutorError), after the arrays already submitted are recorded."""
        if not self.queued:
            return
        wave, self.queued = self.queued, []
        for start in range(0, len(wave), self.array_size):
            part = wave[start:start + self.array_size]
            try:
                handles = self._submit_array(part)
            except Exception as err:  # sbatch refused: the partition, the GPUs, the controller
                self.queued = wave[start:]
                raise submission_error(len(part), err) from err
            for job, handle in zip(part, handles, strict=True):
                job.worker = f"slurm {handle.job_id}"
                self.submitted[job] = handle
                if job.claim is not None:  # a rerun elsewhere frees the claim once this job has ended
                    store.attach_job(job.claim, "slurm", str(handle.job_id))

    def _submit_array(self, jobs: Sequence[Job]) -> list[Any]:
        ctx = self.context
        # submitit prints a refused sbatch's stderr itself; the one-line error says it instead
        with contextlib.redirect_stderr(io.StringIO()), self.executor.batch():
            return [self.executor.submit(_slurm_entry, job.config, job.needs, str(ctx.runs_dir), ctx.job_fn,
                                         ctx.metric_columns) for job in jobs]

    def _outcome(self, job: Job, handle: Any) -> Outcome:
        columns = self.context.metric_columns
        try:
            result = handle.result()
        except Exception as err:  # the Slurm job itself died: this run failed
            state = _state(handle)
            transient = state.startswith(TRANSIENT_STATES)
            hint = "" if transient else (f"; check that {sys.executable} and {self.context.runs_dir} exist on "
                                         "the compute node")
            result = store.failed_record(job.config, f"slurm job {handle.job_id} ended without a result "
                                                     f"({state or 'state unknown'}): {error_text(err)}{hint}",
                                         metric_columns=columns, error_kind=store.TRANSIENT if transient else None)
        else:
            problem = result_problem(job.config, result)
            if problem:
                result = store.failed_record(job.config, problem, metric_columns=columns)
        _note_job_id(result, handle)
        return result

    def _gone_without_result(self, now: float) -> list[tuple[Job, Outcome]]:
        """Jobs squeue no longer lists as pending or running whose result has not appeared for GONE_CONFIRM_S
        (asked at most every PROBE_EVERY_S): stored as transient failures."""
        if not self.probe_jobs or not self.submitted or now - self.last_probe < PROBE_EVERY_S:
            return []
        self.last_probe = now
        for job, handle in self.submitted.items():
            if slurm_job_alive(str(handle.job_id)) is False:
                self.gone_since.setdefault(job, now)
            else:
                self.gone_since.pop(job, None)
        gone = [job for job, since in self.gone_since.items() if now - since >= GONE_CONFIRM_S]
        outcomes = []
        for job in gone:
            handle = self.submitted.pop(job)
            del self.gone_since[job]
            if handle.done():  # the result arrived after all
                outcomes.append((job, self._outcome(job, handle)))
                continue
            result = store.failed_record(job.config, f"slurm job {handle.job_id} ended without a result (gone "
                                                     f"from squeue for {GONE_CONFIRM_S:.0f} s; no accounting "
                                                     "record)", metric_columns=self.context.metric_columns,
                                         error_kind=store.TRANSIENT)
            _note_job_id(result, handle)
            outcomes.append((job, result))
        return outcomes

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


def _state(handle: Any) -> str:
    """The Slurm state of a finished job ("CANCELLED by 0", "TIMEOUT", ...), "" when unknown."""
    try:
        return str(handle.state or "").upper()
    except Exception:  # sacct unavailable: unknown
        return ""


def _note_job_id(result: Any, handle: Any) -> None:
    """Record the Slurm job id on the outcome (the result row's slurm_job_id column)."""
    try:
        result.slurm_job_id = str(handle.job_id)
    except AttributeError:  # a result type that takes no new attributes
        pass


@register_backend("slurm", SlurmOptions, help="a Slurm cluster through submitit (a shared runs directory)")
def open_slurm(options: SlurmOptions, context: BackendContext) -> SlurmBackend:
    if not options.cluster and shutil.which("sbatch") is None:
        # submitit would silently fall back to starting every job on this machine at once
        raise ConfigError("--executor slurm: no Slurm here (sbatch is not on PATH); use --executor local")
    return SlurmBackend(options, context)
