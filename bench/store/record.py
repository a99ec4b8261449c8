"""What the store is given to save: the fields of a run's outcome (bench.train.RunResult or a RunRecord)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.config import RunConfig


class ResultLike(Protocol):
    """What save_result needs: the fields of bench.train.RunResult.

    `metric_columns` are the result row's metric columns (every registered task's, given by whoever made
    the outcome, so a task registered late still gets its columns); save_result treats a missing or empty
    one as "the metrics this outcome holds". `predictions`, `evaluations` and `torch_threads` are optional.
    """

    config: RunConfig
    run_id: str
    status: str
    error: str | None
    metrics: Mapping[str, float]
    trajectory: list[dict[str, Any]]
    state_dict: Mapping[str, Any] | None
    wall_s: float
    device: str
    data_fingerprint: str
    synthetic: bool
    torch_version: str
    metric_columns: tuple[str, ...]


@dataclass
class RunRecord:
    """A RunResult-compatible record, for outcomes decided outside training (a dead worker, a failed dependency)."""

    config: RunConfig
    status: str = "failed"
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    state_dict: dict[str, Any] | None = None
    wall_s: float = 0.0
    device: str = ""
    data_fingerprint: str = ""
    synthetic: bool | None = None
    torch_version: str = ""
    torch_threads: int | None = None
    # Why it failed, when a plain rerun retries it (bench.store.schema.ERROR_KINDS); None: deterministic.
    error_kind: str | None = None
    # The result row's metric columns (bench.tasks.all_result_columns() of the caller); () = those held.
    metric_columns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.synthetic is None:
            self.synthetic = self.config.dataset.startswith("synth-")
        self.metric_columns = tuple(self.metric_columns)

    @property
    def run_id(self) -> str:
        return self.config.run_id


def failed_record(cfg: RunConfig, error: str, wall_s: float = 0.0, device: str = "",
                  metric_columns: tuple[str, ...] = (), error_kind: str | None = None) -> RunRecord:
    """A failed outcome for `cfg` with this error message (its row gets `metric_columns`, all NaN);
    `error_kind` says when a plain rerun retries it (bench.store.schema.ERROR_KINDS)."""
    return RunRecord(config=cfg, status="failed", error=error, wall_s=wall_s, device=device,
                     metric_columns=tuple(metric_columns), error_kind=error_kind)
