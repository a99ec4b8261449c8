"""The scheduler: which jobs are stored, ready, waiting or running; claims, records outcomes, sums up.

It receives the job graph (each job with the run ids it needs, dependencies first: the caller builds it,
e.g. with bench.plan.deps.job_graph), sorts the jobs from one read of the store, hands out the ready ones
under a claim, settles jobs whose dependency failed or that another invocation finished, and writes every
result (parent-side, atomically) into the store and the `Summary`. It never asks a method what it needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import store
from bench.config import ConfigError
from bench.execute.backend import Job
from bench.execute.claims import ClaimKeeper
from bench.execute.job import error_text
from bench.execute.progress import Progress, Reporter

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


def check_graph(jobs: Sequence[Job]) -> dict[str, Job]:
    """The jobs by run id (the first of duplicates kept); ConfigError unless every job's needs come before it
    (which also rules out cycles)."""
    graph: dict[str, Job] = {}
    for job in jobs:
        missing = [rid for rid in job.needs if rid not in graph]
        if missing and job.run_id not in graph:
            raise ConfigError(f"run {job.run_id} needs {missing[0]}, which is not before it in the job list "
                              "(pass the job graph: bench.plan.deps.job_graph(configs))")
        graph.setdefault(job.run_id, job)
    return graph


class Scheduler:
    """Which jobs are done, ready, waiting or running; records outcomes and keeps claims."""

    def __init__(self, jobs: Sequence[Job], runs_dir: Path, retry_failed: bool, claim_ttl_s: float,
                 reporter: Reporter, metric_columns: tuple[str, ...] = ()) -> None:
        self.runs_dir = runs_dir
        self.retry_failed = retry_failed
        self.claim_ttl_s = claim_ttl_s
        self.reporter = reporter
        self.metric_columns = metric_columns
        self.jobs = check_graph(jobs)
        self.needed = {dep for job in self.jobs.values() for dep in job.needs}  # run ids some job loads
        self.pending: list[str] = []
        self.running: dict[str, Job] = {}
        self.outcome: dict[str, str] = {}  # run_id -> ok | failed | skipped | stored_failed
        self.summary = Summary(total=len(self.jobs))
        self.walls: list[float] = []
        self._lock = threading.Lock()
        self._keeper = ClaimKeeper(claim_ttl_s)

    # -- setup --
    def start(self) -> None:
        """Sort jobs into already stored / to train, from one read of the store.

        A stored failure is retried without retry_failed when its kind says a rerun may succeed (a worker
        death or a cluster's end of the job: bench.store.TRANSIENT; a dependency that failed or lost its
        checkpoint: DEPENDENCY, unless that dependency is itself a stored failure not retried). An ok
        dependency whose checkpoint is gone is retrained when a job that needs it is to run.
        """
        leftovers = store.remove_leftovers(self.runs_dir, self.claim_ttl_s)  # what a kill -9 left behind
        if leftovers:
            self.reporter.note(f"removed {len(leftovers)} leftover temp/claim file(s) of interrupted runs")
        states = store.stored_states(self.runs_dir)
        lost = self._lost_checkpoints(states)
        if lost:
            self.reporter.note(f"retraining {len(lost)} stored run(s) whose checkpoint is missing, needed by "
                               f"other runs: {', '.join(sorted(lost))}")
        for rid, job in self.jobs.items():
            status, kind = states.get(rid, (None, None))
            if status == "ok" and rid not in lost:
                self._finish(job, "skipped")
            elif status == "failed" and not self.retry_failed and not self._retried(job, kind):
                self._stored_failure(job)
            else:
                self.pending.append(rid)
        self.reporter.begin(self.snapshot())
        self._keeper.start()

    def _retried(self, job: Job, kind: str | None) -> bool:
        """Whether a stored failure of this kind is trained again by a plain rerun."""
        if kind == store.TRANSIENT:
            return True
        return kind == store.DEPENDENCY and not any(self.outcome.get(d) == "stored_failed" for d in job.needs)

    def _lost_checkpoints(self, states: dict[str, tuple[str, str | None]]) -> set[str]:
        """Stored-ok jobs without a checkpoint that some job to be trained needs (dependants first, so a
        retrained dependency's own lost dependencies are found too)."""
        lost: set[str] = set()
        for rid, job in reversed(self.jobs.items()):
            if states.get(rid, (None, None))[0] == "ok" and rid not in lost:
                continue  # stored ok and not retrained: it loads nothing
            for dep in job.needs:
                if states.get(dep, (None, None))[0] == "ok" and not store.has_checkpoint(self.runs_dir, dep):
                    lost.add(dep)
        return lost

    def _stored_failure(self, job: Job) -> None:
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

    def ready(self, limit: int | None) -> list[Job]:
        """Claim and return up to `limit` jobs whose dependencies are ok; settle the ones that cannot run."""
        chosen: list[Job] = []
        now = time.monotonic()
        for rid in list(self.pending):
            if limit is not None and len(chosen) >= limit:
                break
            job = self.jobs[rid]
            failed_dep = next((d for d in job.needs if self.outcome.get(d) in ("failed", "stored_failed")), None)
            waiting = failed_dep is None and any(self.outcome.get(d) not in ("ok", "skipped") for d in job.needs)
            if waiting or job.held_until > now or not self._claim(job):
                continue
            self.pending.remove(rid)
            if self._settled_elsewhere(job):
                continue
            if failed_dep is not None:  # recorded under the claim, like any other outcome
                self.record(job, store.failed_record(job.config, f"dependency {failed_dep} failed",
                                                     metric_columns=self.metric_columns,
                                                     error_kind=store.DEPENDENCY))
                continue
            job.started = time.monotonic()
            self.running[rid] = job
            chosen.append(job)
        return chosen

    def _claim(self, job: Job) -> bool:
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

    def _settled_elsewhere(self, job: Job) -> bool:
        """After claiming: another invocation may have stored the run meanwhile; take its outcome."""
        status, kind = store.read_state(self.runs_dir, job.run_id) or (None, None)
        was_held = bool(job.held_until)
        if status == "ok" and (was_held or job.run_id not in self.needed
                               or store.has_checkpoint(self.runs_dir, job.run_id)):
            self._release(job)
            self._finish(job, "skipped")
            return True
        retried = not was_held and (self.retry_failed or kind in store.ERROR_KINDS)
        if status == "failed" and not retried:
            self._release(job)
            self._stored_failure(job)
            return True
        return False

    # -- outcomes --
    def record(self, job: Job, result: Any) -> None:
        """Store a job's result (parent-side, atomic), release its claim, report.

        A failing write (disk full, permissions) fails the job in the summary with the error; nothing of it
        is stored (save_result rolls back), so the next invocation trains it again. The grid goes on.
        """
        try:
            store.save_result(self.runs_dir, result)
        except Exception as err:
            reason = f"could not store the result, nothing stored (rerun to retry): {error_text(err)}"
            result = store.failed_record(job.config, reason, getattr(result, "wall_s", 0.0) or 0.0,
                                         getattr(result, "device", "") or "", self.metric_columns)
        finally:
            self.running.pop(job.run_id, None)
            self._release(job)
        outcome = "ok" if result.status == "ok" else "failed"
        if job.started:
            self.walls.append(time.monotonic() - job.started)
        self._finish(job, outcome, result.error or "", result)

    def _finish(self, job: Job, outcome: str, error: str = "", result: Any = None) -> None:
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
        self.reporter.finished(self.snapshot(), job, outcome, error, result)

    def _release(self, job: Job) -> None:
        if job.claim is not None:
            self._keeper.remove(job.claim)
            store.release_claim(job.claim)
            job.claim = None

    def release_all(self) -> None:
        """Release every claim still held (end of run, Ctrl-C)."""
        for job in list(self.running.values()):
            self._release(job)
        self._keeper.stop()

    def snapshot(self) -> Progress:
        """The counts so far, for the progress display."""
        s = self.summary
        mean = sum(self.walls) / len(self.walls) if self.walls else None
        return Progress(total=s.total, ok=s.ok, failed=s.failed, skipped=s.skipped, stored_failed=s.stored_failed,
                        running=len(self.running), pending=len(self.pending), mean_wall_s=mean)
