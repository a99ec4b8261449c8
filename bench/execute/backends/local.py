"""`local`: a pool of spawned worker processes on this machine, one job each at a time.

Also where the pool's devices come from (one per worker, round-robin over the visible GPUs, else the
CPU) and each worker's CPU thread cap.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from bench import store
from bench.execute.backend import BackendContext, BackendOptions, Job, Outcome, option, register_backend
from bench.execute.job import JobFn, error_text, execute_one


@dataclass(frozen=True)
class LocalOptions(BackendOptions):
    workers: int | None = option(None, flag="--workers", minimum=1,
                                 help="worker processes (default: one per GPU times workers_per_gpu, else half "
                                      "the CPU cores)")
    workers_per_gpu: int = option(1, flag="--workers-per-gpu", minimum=1, help="workers per visible GPU")


@dataclass
class _Slot:
    index: int
    device: str
    process: Any = None
    conn: Connection | None = None
    job: Job | None = None

    @property
    def label(self) -> str:
        return f"worker {self.index} ({self.device})"


class LocalPool:
    """Worker processes (spawned), each with its own pipe; a dead worker fails only its job and is replaced."""

    def __init__(self, context: BackendContext, devices: Sequence[str], threads: int) -> None:
        self.ctx = mp.get_context("spawn")
        self.context, self.threads = context, threads
        self.slots = [_Slot(i, device) for i, device in enumerate(devices)]
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: _Slot) -> None:
        parent_end, child_end = self.ctx.Pipe()
        ctx = self.context
        process = self.ctx.Process(target=_worker_main, name=f"bench-worker-{slot.index}", daemon=True,
                                   args=(child_end, ctx.job_fn, str(ctx.runs_dir), slot.device, self.threads,
                                         ctx.metric_columns, os.getpid()))
        process.start()
        child_end.close()
        slot.process, slot.conn, slot.job = process, parent_end, None

    def capacity(self) -> int:
        return sum(1 for s in self.slots if s.job is None)

    def submit(self, job: Job) -> None:
        slot = next(s for s in self.slots if s.job is None)
        slot.job = job
        job.worker = slot.label
        try:
            slot.conn.send((job.config, job.needs))
        except OSError:
            pass  # the worker is gone: poll() sees its exit and fails this job

    def poll(self, timeout: float) -> list[tuple[Job, Outcome]]:
        busy = [s for s in self.slots if s.job is not None]
        wait([s.conn for s in busy] + [s.process.sentinel for s in self.slots], timeout)
        done = []
        for slot in self.slots:
            result = self._collect(slot) if slot.job is not None else None
            if result is not None:
                done.append(result)
                continue
            if not slot.process.is_alive():
                done.extend(self._replace(slot))
        return done

    def _collect(self, slot: _Slot) -> tuple[Job, Outcome] | None:
        """The finished job of a slot, when its result has arrived."""
        try:
            if not slot.conn.poll():
                return None
            payload = slot.conn.recv_bytes()
        except (EOFError, OSError):
            return None  # the worker died mid-send: _replace reports it
        job, slot.job = slot.job, None
        try:
            return job, pickle.loads(payload)
        except Exception as err:  # an unreadable result fails only this job
            return job, self._failed(job, f"could not read the worker's result: {error_text(err)}")

    def _replace(self, slot: _Slot) -> list[tuple[Job, Outcome]]:
        """A worker exited: fail its job (if any) and start a replacement."""
        slot.process.join(timeout=1)
        code = slot.process.exitcode
        job = slot.job
        slot.conn.close()
        self._start(slot)
        if job is None:
            return []
        reason = f"worker process died (exit code {code}) while running this job"
        if code is not None and code < 0:
            reason += f" (killed by {signal.Signals(-code).name})"
        wall = time.monotonic() - job.started if job.started else 0.0
        # a death (SIGKILL, the OOM killer) says nothing about the run: a plain rerun trains it again
        return [(job, self._failed(job, reason, wall, slot.device, store.TRANSIENT))]

    def _failed(self, job: Job, reason: str, wall: float = 0.0, device: str = "",
                error_kind: str | None = None) -> Outcome:
        return store.failed_record(job.config, reason, wall, device, metric_columns=self.context.metric_columns,
                                   error_kind=error_kind)

    def cancel(self, job: Job | None = None) -> None:
        """Stop the worker running `job` (every busy worker when None) and forget the job; the next poll
        replaces the worker."""
        for slot in self.slots:
            if slot.job is not None and (job is None or slot.job is job):
                slot.job = None
                slot.process.terminate()

    def close(self, abort: bool = False) -> None:
        for slot in self.slots:
            if abort:
                slot.process.terminate()
            else:
                try:
                    slot.conn.send(None)
                except OSError:
                    pass
        for slot in self.slots:
            slot.process.join(timeout=5 if not abort else 2)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(timeout=2)
            slot.conn.close()


@register_backend("local", LocalOptions, help="a pool of worker processes on this machine (one device each)")
def open_local(options: LocalOptions, context: BackendContext) -> LocalPool:
    devices = local_devices(options.workers, options.workers_per_gpu)
    return LocalPool(context, devices, threads=max(1, cpu_count() // len(devices)))


def _worker_main(conn: Connection, job_fn: JobFn, runs_dir: str, device: str, threads: int,
                 metric_columns: tuple[str, ...] = (), parent: int | None = None) -> None:
    """A pool worker: train the jobs the parent sends, send back each pickled result.

    `parent` is the pid of the process that started it, passed in (not read here: the spawn bootstrap
    imports torch first, and a parent killed meanwhile would leave this worker adopted, training)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop on Ctrl-C
    parent = os.getppid() if parent is None else parent
    if os.getppid() != parent:
        return  # the parent died while this worker was starting: train nothing
    _exit_with_parent(parent)
    _limit_threads(threads)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None or os.getppid() != parent:  # a job left in the pipe by a dead parent: not trained
            return
        cfg, dep_ids = message
        result = execute_one(cfg, dep_ids, runs_dir, job_fn, device, metric_columns)
        try:
            payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # an unpicklable result fails only this job
            payload = pickle.dumps(store.failed_record(cfg, f"result not picklable: {error_text(err)}",
                                                       metric_columns=metric_columns))
        try:
            conn.send_bytes(payload)
        except (BrokenPipeError, OSError):
            return


def _exit_with_parent(parent: int) -> None:
    """Stop this worker when the parent dies (even by kill -9), so no orphan keeps training."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _limit_threads(threads: int) -> None:
    """Cap this worker's CPU threads (torch may already be imported by the job function's module)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def cpu_count() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def local_devices(workers: int | None, workers_per_gpu: int) -> list[str]:
    """One device per worker: round-robin over visible GPUs, else the CPU."""
    gpus = gpu_count()
    if gpus:
        count = workers if workers is not None else gpus * max(1, workers_per_gpu)
        return [f"cuda:{i % gpus}" for i in range(max(1, count))]
    return ["cpu"] * max(1, workers if workers is not None else max(1, cpu_count() // 2))


def gpu_count() -> int:
    """Visible CUDA devices (0 without torch or a GPU)."""
    if not Path("/dev/nvidiactl").exists() and "torch" not in sys.modules:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0

