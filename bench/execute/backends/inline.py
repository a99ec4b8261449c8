"""`inline`: each job in this process, one at a time (no worker to spawn; the simplest to debug)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.config import ConfigError
from bench.execute.backend import BackendContext, BackendOptions, Job, Outcome, option, register_backend
from bench.execute.job import default_device, execute_one


@dataclass(frozen=True)
class InlineOptions(BackendOptions):
    # Accepted so that `--workers 1` means the same with every local executor; anything else is refused.
    workers: int | None = option(None, flag="--workers", minimum=1, help="must be 1 (one job at a time)")

    def check(self) -> None:
        if self.workers not in (None, 1):
            raise ConfigError(f"--executor inline runs one job at a time; it conflicts with --workers {self.workers}")


class InlineBackend:
    """Runs each submitted job in this process when polled."""

    def __init__(self, context: BackendContext) -> None:
        self.context = context
        self.device = default_device()
        self.queue: list[Job] = []

    def capacity(self) -> int:
        return 0 if self.queue else 1

    def submit(self, job: Job) -> None:
        job.worker = f"inline ({self.device})"
        self.queue.append(job)

    def poll(self, timeout: float) -> list[tuple[Job, Outcome]]:
        done = []
        while self.queue:
            job = self.queue.pop(0)
            ctx = self.context
            done.append((job, execute_one(job.config, job.needs, ctx.runs_dir, ctx.job_fn, self.device,
                                          ctx.metric_columns)))
        return done

    def cancel(self, job: Job | None = None) -> None:
        self.queue = [] if job is None else [j for j in self.queue if j is not job]

    def close(self, abort: bool = False) -> None:
        self.queue.clear()


@register_backend("inline", InlineOptions, help="each job in this process, one at a time")
def open_inline(options: InlineOptions, context: BackendContext) -> InlineBackend:
    return InlineBackend(context)
