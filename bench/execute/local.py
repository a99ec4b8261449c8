"""Backends on this machine: inline (this process) and the local pool of spawned worker processes.

Also where the pool's devices come from: one per worker, round-robin over the visible GPUs, else the CPU,
and each worker's CPU thread cap.
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
from typing import TYPE_CHECKING, Any

from bench import store
from bench.execute.job import JobFn, default_device, error_text, execute_one

if TYPE_CHECKING:
    from bench.execute.progress import _Reporter
    from bench.execute.scheduler import _Job


class _InlineBackend:
    """Runs each job in this process, one at a time."""

    def __init__(self, job_fn: JobFn, runs_dir: Path, reporter: _Reporter) -> None:
        self.job_fn, self.runs_dir, self.reporter = job_fn, runs_dir, reporter
        self.device = default_device()
        self.queue: list[_Job] = []

    @property
    def free_slots(self) -> int:
        return 0 if self.queue else 1

    def submit(self, job: _Job) -> None:
        self.queue.append(job)
        self.reporter.started(job, f"inline ({self.device})")

    def wait(self, timeout: float) -> list[tuple[_Job, Any]]:
        done = []
        while self.queue:
            job = self.queue.pop(0)
            done.append((job, execute_one(job.cfg, job.deps, self.runs_dir, self.job_fn, self.device)))
            self.reporter.idle(f"inline ({self.device})")
        return done

    def shutdown(self, abort: bool = False) -> None:
        self.queue.clear()


@dataclass
class _Slot:
    index: int
    device: str
    process: Any = None
    conn: Connection | None = None
    job: _Job | None = None

    @property
    def label(self) -> str:
        return f"worker {self.index} ({self.device})"


class _LocalPool:
    """Worker processes (spawned), each with its own pipe; a dead worker fails only its job and is replaced."""

    def __init__(self, job_fn: JobFn, runs_dir: Path, devices: Sequence[str], threads: int,
                 reporter: _Reporter) -> None:
        self.ctx = mp.get_context("spawn")
        self.job_fn, self.runs_dir, self.threads, self.reporter = job_fn, runs_dir, threads, reporter
        self.slots = [_Slot(i, device) for i, device in enumerate(devices)]
        for slot in self.slots:
            self._start(slot)

    def _start(self, slot: _Slot) -> None:
        parent_end, child_end = self.ctx.Pipe()
        process = self.ctx.Process(target=_worker_main, name=f"bench-worker-{slot.index}", daemon=True,
                                   args=(child_end, self.job_fn, str(self.runs_dir), slot.device, self.threads))
        process.start()
        child_end.close()
        slot.process, slot.conn, slot.job = process, parent_end, None

    @property
    def free_slots(self) -> int:
        return sum(1 for s in self.slots if s.job is None)

    def submit(self, job: _Job) -> None:
        slot = next(s for s in self.slots if s.job is None)
        slot.job = job
        job.worker = slot.label
        self.reporter.started(job, slot.label)
        try:
            slot.conn.send((job.cfg, job.deps))
        except OSError:
            pass  # the worker is gone: wait() sees its exit and fails this job

    def wait(self, timeout: float) -> list[tuple[_Job, Any]]:
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

    def _collect(self, slot: _Slot) -> tuple[_Job, Any] | None:
        """The finished job of a slot, when its result has arrived."""
        try:
            if not slot.conn.poll():
                return None
            payload = slot.conn.recv_bytes()
        except (EOFError, OSError):
            return None  # the worker died mid-send: _replace reports it
        job, slot.job = slot.job, None
        self.reporter.idle(slot.label)
        try:
            return job, pickle.loads(payload)
        except Exception as err:  # an unreadable result fails only this job
            return job, store.failed_record(job.cfg, f"could not read the worker's result: {error_text(err)}")

    def _replace(self, slot: _Slot) -> list[tuple[_Job, Any]]:
        """A worker exited: fail its job (if any) and start a replacement."""
        slot.process.join(timeout=1)
        code = slot.process.exitcode
        job = slot.job
        slot.conn.close()
        self._start(slot)
        if job is None:
            return []
        self.reporter.idle(slot.label)
        reason = f"worker process died (exit code {code}) while running this job"
        if code is not None and code < 0:
            reason += f" (killed by {signal.Signals(-code).name})"
        wall = time.monotonic() - job.started if job.started else 0.0
        return [(job, store.failed_record(job.cfg, reason, wall, slot.device))]

    def shutdown(self, abort: bool = False) -> None:
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


def _worker_main(conn: Connection, job_fn: JobFn, runs_dir: str, device: str, threads: int) -> None:
    """A pool worker: train the jobs the parent sends, send back each pickled result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop on Ctrl-C
    _exit_with_parent()
    _limit_threads(threads)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        cfg, dep_ids = message
        result = execute_one(cfg, dep_ids, runs_dir, job_fn, device)
        try:
            payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # an unpicklable result fails only this job
            payload = pickle.dumps(store.failed_record(cfg, f"result not picklable: {error_text(err)}"))
        try:
            conn.send_bytes(payload)
        except (BrokenPipeError, OSError):
            return


def _exit_with_parent() -> None:
    """Stop this worker when the parent dies (even by kill -9), so no orphan keeps training."""
    parent = os.getppid()

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

