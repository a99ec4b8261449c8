"""Progress reporting: one plain line per finished job, or a rich live panel on a terminal.

The reporter sees `Progress` snapshots (counts) and the jobs, never the scheduler.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.config import RunConfig, modality_key
from bench.data.registry import spec_for
from bench.execute.backend import Job


@dataclass(frozen=True)
class Progress:
    """Where an invocation stands: counts of outcomes so far, jobs running and waiting to start."""

    total: int
    ok: int = 0  # trained now, ok
    failed: int = 0  # trained (or recorded) now, failed
    skipped: int = 0  # already stored ok, or completed by another invocation
    stored_failed: int = 0  # a stored failure, not retried
    running: int = 0
    pending: int = 0  # waiting to start (dependencies, claims, free slots)
    mean_wall_s: float | None = None  # mean wall time of the jobs finished so far

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped + self.stored_failed

    @property
    def remaining(self) -> int:
        return self.total - self.done


def describe(cfg: RunConfig) -> str:
    """Short human label of a run."""
    task = "" if cfg.task == "classification" else f" {cfg.task}"
    model = "" if cfg.model == "late_fusion" else f" [{cfg.model}]"
    return (f"{cfg.dataset}{task} {modality_key(cfg.modalities)} {cfg.method}{model} {cfg.optimizer}"
            f"{' dev' if cfg.dev_set else ''}{f' step{cfg.step_every}' if cfg.step_every > 1 else ''}"
            f" seed {cfg.seed}")


class Reporter:
    """Plain progress: one line per trained job (used when stdout is not a terminal or progress=False)."""

    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.echo = echo or (lambda line: print(line, flush=True))
        self.running: dict[str, Job] = {}  # run id -> job, while a backend has it

    def begin(self, progress: Progress) -> None:
        if progress.skipped or progress.stored_failed:
            self.echo(f"{progress.total} runs: {progress.skipped} already stored, {progress.stored_failed} stored "
                      f"failures not retried, {progress.pending} to train")

    def started(self, job: Job, progress: Progress) -> None:
        self.running[job.run_id] = job

    def note(self, text: str) -> None:
        self.echo(text)

    def finished(self, progress: Progress, job: Job, outcome: str, error: str, result: Any) -> None:
        self.running.pop(job.run_id, None)
        if outcome in ("ok", "failed"):
            self.echo(job_line(progress, job, outcome, error, result))

    def stop(self) -> None:
        pass


def job_line(progress: Progress, job: Job, outcome: str, error: str, result: Any) -> str:
    """`[  3/250] ok     <run_id> synth-mosi text+vision ogm adam seed 0  acc 55.1  loss 84.2  3.4s`."""
    total = progress.total
    head = f"[{progress.done:>{len(str(total))}}/{total}] {outcome:<6} {job.run_id} {describe(job.config)}"
    if outcome == "ok" and result is not None:
        metrics = result.metrics or {}
        shown = "".join(f"  {name} {metrics.get(f'test_{name}', float('nan')):.{3 if name == 'mae' else 2}f}"
                        for name in progress_metrics(job.config))
        head += f"{shown}  {result.wall_s:.1f}s"
    elif error:
        head += f"  {error}"
    return head


def progress_metrics(cfg: RunConfig) -> tuple[str, ...]:
    """The metrics a finished job's line shows: its task's on its dataset's metric set (SIMS: its own)."""
    from bench.tasks import make_task

    return tuple(make_task(cfg.task, dict(cfg.task_params), spec_for(cfg.dataset)).progress_metrics)


class LiveReporter(Reporter):
    """A rich live panel: counts, ETA and each running job with its worker; finished jobs scroll above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        super().__init__(echo=self.console.print)
        self.latest: Progress | None = None
        self.most_running = 1  # how many jobs ran at once, at most (the ETA divides by it)
        self.live = Live(console=self.console, get_renderable=self._render, refresh_per_second=2,
                         transient=True)

    def begin(self, progress: Progress) -> None:
        self.latest = progress
        super().begin(progress)
        self.live.start()

    def started(self, job: Job, progress: Progress) -> None:
        super().started(job, progress)
        self.latest = progress
        self.most_running = max(self.most_running, progress.running)

    def finished(self, progress: Progress, job: Job, outcome: str, error: str, result: Any) -> None:
        from rich.text import Text

        self.running.pop(job.run_id, None)
        self.latest = progress
        if outcome in ("ok", "failed"):
            line = job_line(progress, job, outcome, error, result)
            self.console.print(Text(line, style="green" if outcome == "ok" else "red"))
            self.live.refresh()

    def stop(self) -> None:
        self.live.stop()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        p = self.latest
        if p is None:
            return Text("")
        head = Text(f"done {p.done}/{p.total}  ok {p.ok}  failed {p.failed + p.stored_failed}  skipped {p.skipped}  "
                    f"running {p.running}  remaining {p.remaining}  ETA {self._eta(p)}", style="bold")
        jobs = sorted(list(self.running.values()), key=lambda j: j.worker)
        lines = [Text(f"  {job.worker}: {job.run_id} {describe(job.config)}", no_wrap=True, overflow="ellipsis")
                 for job in jobs]
        return Group(head, *lines)

    def _eta(self, p: Progress) -> str:
        if p.mean_wall_s is None:
            return "?"
        seconds = p.mean_wall_s * p.remaining / self.most_running
        return time.strftime("%H:%M:%S", time.gmtime(seconds))


def make_reporter(progress: bool, quiet: bool = False) -> Reporter:
    """The live display on a terminal, plain lines otherwise; `quiet`: no line at all."""
    if quiet:
        return Reporter(echo=lambda line: None)
    if progress and sys.stdout.isatty():
        return LiveReporter()
    return Reporter()
