"""The task interface: what a model predicts, how it is trained and scored, and which checkpoint wins.

A task is a subclass of `Task` in its own file under bench/tasks/, registered with `@register`. It
defines the output size, the targets a batch carries, the default training loss, the metric set with
the better direction of each, the validation metric that picks the checkpoint (and drives early
stopping and the plateau scheduler), and the per-sample prediction columns the store keeps.
The loop, the store, the reports and the progress lines read a task only through this interface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from bench import registry
from bench.config import ConfigError
from bench.data.types import SplitArrays


@dataclass(frozen=True)
class NoTaskParams:
    """A task without options."""


@dataclass(frozen=True)
class Selection:
    """The validation metric that picks the best checkpoint: its key and whether lower is better."""

    metric: str
    mode: str  # "min" | "max"

    def better(self, value: float, best: float) -> bool:
        return value < best if self.mode == "min" else value > best

    @property
    def worst(self) -> float:
        return float("inf") if self.mode == "min" else float("-inf")


class Task:
    """Base class; a task instance holds its resolved Params."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoTaskParams
    description: ClassVar[str] = ""
    # The version of the task's loss, targets and metrics: part of every run id (RunConfig.code).
    version: ClassVar[int] = 1
    target_dtype: ClassVar[torch.dtype] = torch.long
    # Every metric the task reports, in table order, with the better direction: "max" or "min".
    metric_directions: ClassVar[dict[str, str]] = {}
    # The metric a one-number summary shows (progress lines, `bench run`'s per-seed lines, tables).
    headline: ClassVar[str] = ""
    # The metrics `bench run`'s per-seed lines show, and the (shorter) set of a grid's progress lines.
    summary_metrics: ClassVar[tuple[str, ...]] = ()
    progress_metrics: ClassVar[tuple[str, ...]] = ()
    # Validation metrics stored beside the test ones as `val_<name>` columns.
    valid_metrics: ClassVar[tuple[str, ...]] = ()
    # Metrics that are also drawn per epoch as trajectory series (values as `epoch_series` makes them).
    epoch_metrics: ClassVar[tuple[str, ...]] = ()
    # The run's bench.data.spec.DatasetSpec once `use_dataset` is called (None: a hand-made Dataset).
    dataset_spec: Any = None

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    def use_dataset(self, spec: Any) -> None:
        """Score the run's data as its spec says (metric set, score range); None keeps the defaults.

        Called by the trainer before training; a task whose metrics do not depend on the dataset keeps this.
        """
        self.dataset_spec = spec

    # -- shapes and targets ---------------------------------------------------------------------
    def output_size(self, num_classes: int) -> int:
        """Width of the model's prediction (B, output_size)."""
        raise NotImplementedError

    def targets(self, split: SplitArrays, where: str) -> np.ndarray:
        """(N,) the targets of a split; `where` names the split in errors."""
        raise NotImplementedError

    # -- training -------------------------------------------------------------------------------
    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The task's default training loss, a batch mean. outputs: (B, output_size); targets: (B,)."""
        raise NotImplementedError

    def per_sample_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The training loss of each sample, unreduced: (B,). Its mean is `loss` (up to float rounding).
        Methods that weight, select or compare samples use this, never a task name."""
        raise NotImplementedError

    def sample_error(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Each sample's error as imbalance measures read it, detached float: (B,). Default: per_sample_loss."""
        return self.per_sample_loss(outputs.detach().float(), targets).detach()

    def hits(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Whether each prediction is right, (B,) bool: what a method's 'accuracy' of a head counts."""
        raise NotImplementedError

    def average_members(self, member_outputs: Sequence[Tensor]) -> Tensor:
        """One output (B, output_size) from several members' outputs (soft voting, ensembles)."""
        raise NotImplementedError

    def selection(self) -> Selection:
        """The validation metric behind checkpointing, early stopping and the plateau scheduler."""
        return Selection("loss", "min")

    # -- evaluation -----------------------------------------------------------------------------
    def metrics(self, outputs: Tensor, targets: Tensor, modality_outputs: Mapping[str, Tensor],
                split: SplitArrays) -> dict[str, float]:
        """Every metric of a split from the fused outputs (N, output_size) and per-modality outputs."""
        raise NotImplementedError

    def epoch_series(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Per-epoch trajectory values ('series' or 'series/modality' keys)."""
        return {name: metrics[name] for name in self.epoch_metrics if name in metrics}

    def prediction_columns(self, outputs: Tensor, targets: Tensor,
                           modality_outputs: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
        """Per-sample columns of the predictions file: `target`, `prediction`, then task-specific ones."""
        raise NotImplementedError

    def result_metrics(self, test: Mapping[str, float], valid: Mapping[str, float]) -> dict[str, float]:
        """The result row's metrics: `test_<k>` for every test metric, `val_<k>` for `valid_metrics`."""
        row = {f"test_{k}": v for k, v in test.items()}
        row.update({f"val_{k}": valid[k] for k in self.valid_metrics if k in valid})
        return row

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The fixed result columns this task fills."""
        return (*(f"test_{k}" for k in cls.metric_directions), *(f"val_{k}" for k in cls.valid_metrics))

    @classmethod
    def metric_set_columns(cls, metric_set: str = "mmsa") -> tuple[str, ...]:
        """The result columns this task fills on a dataset of `metric_set` (default: `columns()`)."""
        return cls.columns()


# -- registry ---------------------------------------------------------------------------------------

REGISTRY: dict[str, type[Task]] = {}
DEFAULT_TASK = "classification"


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available by its `name`."""
    return registry.add(REGISTRY, cls, "task")


def task_class(name: str) -> type[Task]:
    """The registered task `name`; an unknown name lists the registered ones."""
    return registry.lookup(REGISTRY, name, "task")


def make_task(name: str, params: Mapping[str, Any] | None = None, spec: Any = None) -> Task:
    """A task instance with its Params, scoring data of dataset `spec` (a bench.data.spec.DatasetSpec; None:
    the task's defaults, MOSI / MOSEI's); unknown or bad options are ConfigErrors naming the known ones.
    Its `summary_metrics` / `progress_metrics` / `headline` are then those of the spec's metric set."""
    cls = task_class(name)
    known = {f.name for f in dataclasses.fields(cls.Params)}
    given = dict(params or {})
    unknown = sorted(set(given) - known)
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} for task {name!r}; it takes: {listed}")
    try:
        task = cls(cls.Params(**given))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad options for task {name!r}: {err}") from err
    if spec is not None:
        task.use_dataset(spec)
    return task


def default_task_params(name: str) -> dict[str, Any]:
    """Every option of task `name` at its default (for the run id)."""
    cls = REGISTRY.get(name)
    if cls is None:
        return {}
    return {f.name: f.default for f in dataclasses.fields(cls.Params) if f.default is not dataclasses.MISSING}


def metric_direction(metric: str) -> str:
    """'max' or 'min' for a metric key of any task (a `test_` / `val_` prefix is ignored); 'max' if unknown."""
    base = metric.removeprefix("test_").removeprefix("val_")
    for cls in REGISTRY.values():
        if base in cls.metric_directions:
            return cls.metric_directions[base]
    return "max"


def all_result_columns(metric_set: str = "mmsa") -> tuple[str, ...]:
    """The union of every registered task's result columns on a dataset of `metric_set`, in registry order
    ("mmsa", the default: the store's fixed schema of MOSI / MOSEI runs; "mmsa-sims": CH-SIMS's)."""
    seen: dict[str, None] = {}
    for cls in REGISTRY.values():
        seen.update(dict.fromkeys(cls.metric_set_columns(metric_set)))
    return tuple(seen)
