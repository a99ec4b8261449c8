"""Progress reporting: one plain line per finished job, or a rich live panel on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bench.config import RunConfig, modality_key

if TYPE_CHECKING:
    from bench.execute.scheduler import _Job, _Scheduler


def describe(cfg: RunConfig) -> str:
    """Short human label of a run."""
    task = "" if cfg.task == "classification" else f" {cfg.task}"
    model = "" if cfg.model == "late_fusion" else f" [{cfg.model}]"
    return (f"{cfg.dataset}{task} {modality_key(cfg.modalities)} {cfg.method}{model} {cfg.optimizer}"
            f"{' dev' if cfg.dev_set else ''}{f' step{cfg.step_every}' if cfg.step_every > 1 else ''}"
            f" seed {cfg.seed}")


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
        from bench.tasks import task_class

        metrics = result.metrics or {}
        shown = "".join(f"  {name} {metrics.get(f'test_{name}', float('nan')):.{3 if name == 'mae' else 2}f}"
                        for name in task_class(job.cfg.task).progress_metrics)
        head += f"{shown}  {result.wall_s:.1f}s"
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
