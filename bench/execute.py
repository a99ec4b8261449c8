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
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from bench import store
from bench.config import ConfigError, RunConfig, modality_key
from bench.presets import dependencies, order_with_dependencies

EXECUTORS = ("inline", "local", "slurm")
JobFn = Callable[..., Any]  # job_fn(cfg, deps, device=...) -> a RunResult-like object (bench.store.ResultLike)
POLL_S = 0.5  # how often the scheduler looks at held claims and worker state
HELD_RETRY_S = 2.0  # how often a job claimed by another invocation is looked at again


@dataclass
class Summary:
    """What one invocation did. exit_code: 0 when every job ends with an ok result, else 1."""

    total: int = 0
    ok: int = 0  # trained now, ok
    failed: int = 0  # trained (or recorded) now, failed
    skipped: int = 0  # already ok in the store, or completed by another invocation
    stored_failed: int = 0  # a stored failure, not retried (no retry_failed)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (run_id, error)
    interrupted: bool = False
    wall_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return 0 if not (self.failed or self.stored_failed or self.interrupted) else 1

    def __str__(self) -> str:
        text = f"{self.total} runs: {self.ok} ok, {self.failed} failed, {self.skipped} already stored"
        if self.stored_failed:
            text += f", {self.stored_failed} stored failures not retried (use --retry-failed)"
        return text + f" ({self.wall_s:.1f} s)"


# -- one job -------------------------------------------------------------------------------------

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


def gpu_count() -> int:
    """Visible CUDA devices (0 without torch or a GPU)."""
    if not Path("/dev/nvidiactl").exists() and "torch" not in sys.modules:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def error_text(err: BaseException) -> str:
    """One line: exception type, message and where it was raised."""
    message = " ".join(str(err).split()) or "(no message)"
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {message}{where}"


def execute_one(cfg: RunConfig, dep_ids: Sequence[str], runs_dir: str | Path, job_fn: JobFn,
                device: str) -> Any:
    """Train one job (dependencies loaded from the store); never raises for a failing job."""
    started = time.perf_counter()
    try:
        deps = {rid: store.load_checkpoint(runs_dir, rid) for rid in dep_ids}
    except Exception as err:  # a missing or unreadable checkpoint fails this job only
        return store.failed_record(cfg, f"dependency checkpoint unavailable: {error_text(err)}", device=device)
    try:
        result = job_fn(cfg, deps, device=device)
    except Exception as err:  # the job's own error: recorded, the grid goes on
        return store.failed_record(cfg, error_text(err), time.perf_counter() - started, device)
    finally:
        # A method's hooks may leave reference cycles (models in scratch, closures); collect them now so a
        # worker's memory stays flat over a long grid instead of waiting for Python's next full collection.
        gc.collect()
    problem = _result_problem(cfg, result)
    if problem:
        return store.failed_record(cfg, problem, time.perf_counter() - started, device)
    _note_threads(result)
    return result


def _note_threads(result: Any) -> None:
    """Record the CPU threads torch used on the result: an exact rerun on the CPU needs the same count."""
    if "torch" in sys.modules:
        try:
            result.torch_threads = sys.modules["torch"].get_num_threads()
        except AttributeError:  # a result type that takes no new attributes: not stored then
            pass


def _result_problem(cfg: RunConfig, result: Any) -> str | None:
    """Why `result` cannot be stored as the outcome of `cfg` (None when it can)."""
    if not hasattr(result, "config") or not hasattr(result, "status"):
        return f"job returned {type(result).__name__}, not a RunResult"
    if getattr(result.config, "run_id", None) != cfg.run_id:
        return "job returned the result of another config"
    if result.status not in store.STATUSES:
        return f"job returned status {result.status!r}"
    return None


# -- the plan and its bookkeeping ------------------------------------------------------------------

@dataclass
class _Job:
    cfg: RunConfig
    deps: tuple[str, ...]
    claim: store.Claim | None = None
    started: float = 0.0
    worker: str = ""
    held_until: float = 0.0  # claimed by another invocation: look again after this time

    @property
    def run_id(self) -> str:
        return self.cfg.run_id


def describe(cfg: RunConfig) -> str:
    """Short human label of a run."""
    return (f"{cfg.dataset} {modality_key(cfg.modalities)} {cfg.method} {cfg.optimizer}"
            f"{' dev' if cfg.dev_set else ''}{f' step{cfg.step_every}' if cfg.step_every > 1 else ''}"
            f" seed {cfg.seed}")


class _Scheduler:
    """Which jobs are done, ready, waiting or running; records outcomes and keeps claims."""

    def __init__(self, jobs: Sequence[RunConfig], runs_dir: Path, retry_failed: bool, claim_ttl_s: float,
                 reporter: _Reporter) -> None:
        self.runs_dir = runs_dir
        self.retry_failed = retry_failed
        self.claim_ttl_s = claim_ttl_s
        self.reporter = reporter
        ordered = order_with_dependencies(jobs)
        self.jobs = {cfg.run_id: _Job(cfg, tuple(d.run_id for d in dependencies(cfg))) for cfg in ordered}
        self.pending: list[str] = []
        self.running: dict[str, _Job] = {}
        self.outcome: dict[str, str] = {}  # run_id -> ok | failed | skipped | stored_failed
        self.summary = Summary(total=len(self.jobs))
        self.walls: list[float] = []
        self._lock = threading.Lock()
        self._keeper = _ClaimKeeper(claim_ttl_s)

    # -- setup --
    def start(self) -> None:
        """Sort jobs into already stored / to train, from one read of the store."""
        leftovers = store.remove_leftovers(self.runs_dir, self.claim_ttl_s)  # what a kill -9 left behind
        if leftovers:
            self.reporter.note(f"removed {len(leftovers)} leftover temp/claim file(s) of interrupted runs")
        stored = store.stored_status(self.runs_dir)
        for rid, job in self.jobs.items():
            status = stored.get(rid)
            if status == "ok":
                self._finish(job, "skipped")
            elif status == "failed" and not self.retry_failed:
                self._stored_failure(job)
            else:
                self.pending.append(rid)
        self.reporter.begin(self)
        self._keeper.start()

    def _stored_failure(self, job: _Job) -> None:
        error = "stored failure"
        try:
            error = str(store.read_row(self.runs_dir, job.run_id).get("error") or error)
        except (OSError, ValueError):
            pass
        self._finish(job, "stored_failed", f"(stored) {error}")

    # -- state --
    @property
    def has_work(self) -> bool:
        return bool(self.pending or self.running)

    def ready(self, limit: int | None) -> list[_Job]:
        """Claim and return up to `limit` jobs whose dependencies are ok; settle the ones that cannot run."""
        chosen: list[_Job] = []
        now = time.monotonic()
        for rid in list(self.pending):
            if limit is not None and len(chosen) >= limit:
                break
            job = self.jobs[rid]
            failed_dep = next((d for d in job.deps if self.outcome.get(d) in ("failed", "stored_failed")), None)
            waiting = failed_dep is None and any(self.outcome.get(d) not in ("ok", "skipped") for d in job.deps)
            if waiting or job.held_until > now or not self._claim(job):
                continue
            self.pending.remove(rid)
            if self._settled_elsewhere(job):
                continue
            if failed_dep is not None:  # recorded under the claim, like any other outcome
                self.record(job, store.failed_record(job.cfg, f"dependency {failed_dep} failed"))
                continue
            job.started = time.monotonic()
            self.running[rid] = job
            chosen.append(job)
        return chosen

    def _claim(self, job: _Job) -> bool:
        """Take the job's claim; False (and retry later) while another invocation holds it."""
        claim = store.try_claim(self.runs_dir, job.run_id, self.claim_ttl_s)
        if claim is None:
            if not job.held_until:
                holder = store.claim_holder(self.runs_dir, job.run_id) or "another process"
                self.reporter.note(f"{job.run_id} is being trained by {holder}; waiting for it")
            job.held_until = time.monotonic() + HELD_RETRY_S
            return False
        job.claim = claim
        self._keeper.add(claim)
        return True

    def _settled_elsewhere(self, job: _Job) -> bool:
        """After claiming: another invocation may have stored the run meanwhile; take its outcome."""
        status = store.read_status(self.runs_dir, job.run_id)
        was_held = bool(job.held_until)
        if status == "ok":
            self._release(job)
            self._finish(job, "skipped")
            return True
        if status == "failed" and (was_held or not self.retry_failed):
            self._release(job)
            self._stored_failure(job)
            return True
        return False

    # -- outcomes --
    def record(self, job: _Job, result: Any) -> None:
        """Store a job's result (parent-side, atomic), release its claim, report.

        A failing write (disk full, permissions) fails the job in the summary with the error; nothing of it
        is stored (save_result rolls back), so the next invocation trains it again. The grid goes on.
        """
        try:
            store.save_result(self.runs_dir, result)
        except Exception as err:
            reason = f"could not store the result, nothing stored (rerun to retry): {error_text(err)}"
            result = store.failed_record(job.cfg, reason, getattr(result, "wall_s", 0.0) or 0.0,
                                         getattr(result, "device", "") or "")
        finally:
            self.running.pop(job.run_id, None)
            self._release(job)
        outcome = "ok" if result.status == "ok" else "failed"
        if job.started:
            self.walls.append(time.monotonic() - job.started)
        self._finish(job, outcome, result.error or "", result)

    def _finish(self, job: _Job, outcome: str, error: str = "", result: Any = None) -> None:
        """Record a job's final outcome in the summary and tell the reporter."""
        with self._lock:
            self.outcome[job.run_id] = outcome
            s = self.summary
            if outcome == "ok":
                s.ok += 1
            elif outcome == "skipped":
                s.skipped += 1
            elif outcome == "stored_failed":
                s.stored_failed += 1
                s.failures.append((job.run_id, error))
            else:
                s.failed += 1
                s.failures.append((job.run_id, error))
        self.reporter.finished(self, job, outcome, error, result)

    def _release(self, job: _Job) -> None:
        if job.claim is not None:
            self._keeper.remove(job.claim)
            store.release_claim(job.claim)
            job.claim = None

    def release_all(self) -> None:
        """Release every claim still held (end of run, Ctrl-C)."""
        for job in list(self.running.values()):
            self._release(job)
        self._keeper.stop()

    def counts(self) -> dict[str, int]:
        """Progress counters for the display."""
        done = len(self.outcome)
        failed = self.summary.failed + self.summary.stored_failed
        return {"total": self.summary.total, "done": done, "ok": self.summary.ok, "failed": failed,
                "skipped": self.summary.skipped, "running": len(self.running),
                "remaining": self.summary.total - done}


class _ClaimKeeper:
    """Refreshes held claims in the background so that long runs never look stale."""

    def __init__(self, ttl_s: float) -> None:
        self.interval = max(1.0, min(60.0, ttl_s / 4))
        self.claims: dict[str, store.Claim] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="claim-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, claim: store.Claim) -> None:
        self.claims[claim.run_id] = claim

    def remove(self, claim: store.Claim) -> None:
        self.claims.pop(claim.run_id, None)

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for claim in list(self.claims.values()):
                store.refresh_claim(claim)


# -- progress ------------------------------------------------------------------------------------

class _Reporter:
    """Plain progress: one line per trained job (used when stdout is not a terminal or progress=False)."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.echo = echo or (lambda line: print(line, flush=True))
        self.workers: dict[str, str] = {}  # worker label -> run label

    def begin(self, sched: _Scheduler) -> None:
        c = sched.counts()
        if c["skipped"] or sched.summary.stored_failed:
            self.echo(f"{c['total']} runs: {c['skipped']} already stored, {sched.summary.stored_failed} stored "
                      f"failures not retried, {len(sched.pending)} to train")

    def started(self, job: _Job, worker: str) -> None:
        self.workers[worker] = f"{job.run_id} {describe(job.cfg)}"

    def idle(self, worker: str) -> None:
        self.workers.pop(worker, None)

    def note(self, text: str) -> None:
        self.echo(text)

    def finished(self, sched: _Scheduler, job: _Job, outcome: str, error: str, result: Any) -> None:
        if outcome in ("ok", "failed"):
            self.echo(job_line(sched, job, outcome, error, result))

    def stop(self) -> None:
        pass


def job_line(sched: _Scheduler, job: _Job, outcome: str, error: str, result: Any) -> str:
    """`[  3/250] ok     <run_id> synth-mosi text+vision ogm adam seed 0  acc 55.1  loss 84.2  3.4s`."""
    c = sched.counts()
    head = f"[{c['done']:>{len(str(c['total']))}}/{c['total']}] {outcome:<6} {job.run_id} {describe(job.cfg)}"
    if outcome == "ok" and result is not None:
        metrics = result.metrics or {}
        head += (f"  acc {metrics.get('test_acc', float('nan')):.2f}"
                 f"  loss {metrics.get('test_loss', float('nan')):.2f}  {result.wall_s:.1f}s")
    elif error:
        head += f"  {error}"
    return head


class _LiveReporter(_Reporter):
    """A rich live panel: counts, ETA and each worker's current job; finished jobs scroll above it."""

    def __init__(self, slots: int) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        super().__init__(echo=self.console.print)
        self.slots = max(1, slots)
        self.sched: _Scheduler | None = None
        self.started_at = time.monotonic()
        self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=2,
                         transient=True)

    def begin(self, sched: _Scheduler) -> None:
        self.sched = sched
        super().begin(sched)
        self.live.start()

    def finished(self, sched: _Scheduler, job: _Job, outcome: str, error: str, result: Any) -> None:
        from rich.text import Text

        if outcome in ("ok", "failed"):
            line = job_line(sched, job, outcome, error, result)
            self.console.print(Text(line, style="green" if outcome == "ok" else "red"))
            self.live.refresh()

    def stop(self) -> None:
        self.live.stop()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        if self.sched is None:
            return Text("")
        c = self.sched.counts()
        head = Text(f"done {c['done']}/{c['total']}  ok {c['ok']}  failed {c['failed']}  skipped {c['skipped']}  "
                    f"running {c['running']}  remaining {c['remaining']}  ETA {self._eta(c)}", style="bold")
        lines = [Text(f"  {worker}: {label}", no_wrap=True, overflow="ellipsis")
                 for worker, label in sorted(dict(self.workers).items())]
        return Group(head, *lines)

    def _eta(self, c: Mapping[str, int]) -> str:
        walls = list(self.sched.walls) if self.sched else []
        if not walls:
            return "?"
        seconds = sum(walls) / len(walls) * c["remaining"] / self.slots
        return time.strftime("%H:%M:%S", time.gmtime(seconds))


def _make_reporter(progress: bool, slots: int) -> _Reporter:
    """The live display on a terminal, plain lines otherwise."""
    if progress and sys.stdout.isatty():
        return _LiveReporter(slots)
    return _Reporter()


# -- backends ------------------------------------------------------------------------------------

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


# -- the driver ----------------------------------------------------------------------------------

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


# -- slurm ---------------------------------------------------------------------------------------

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
