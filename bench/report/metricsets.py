"""What a table shows for a task: its metric columns (from the task registry), labels, decimals, captions.

The metric columns of a table are the task's `summary_metrics` (bench/tasks), in that order, each with
the better direction the task declares in `metric_directions` (ranks and significance verdicts follow
it: lower MAE is better). This module only adds how each is printed: the column label, the decimals,
and the caption's sentences about units. A task with no entry here still renders (its metric keys as
labels, two decimals).

Classification's set is the thesis's: accuracy (%) and loss (CE x 100), so its tables are those the
thesis prints, with the thesis's own figures beside them. The thesis reference rows are of the
classification protocol only: no other task is ever compared with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from bench.data.registry import DATASETS
from bench.data.types import DataError

THESIS_TASK = "classification"  # the protocol of bench/reference/thesis_tables.csv


@dataclass(frozen=True)
class Metric:
    """A reported test metric."""

    key: str  # "acc" / "loss" / "mae" ...
    column: str  # result column
    label: str  # column header, with the unit: "Accuracy (%)"
    higher_is_better: bool
    decimals: int = 2
    short: str = ""  # the name in caption sentences; default: the label without its unit, lower case

    @property
    def name(self) -> str:
        return self.short or self.label.split(" (")[0].lower()


@dataclass(frozen=True)
class TableSpec:
    """How a task's tables read: its metrics, the caption's sentences, whether thesis figures apply."""

    task: str
    metrics: tuple[Metric, ...]
    decimals_text: str  # "2 decimals"
    units_text: str  # the caption sentence about what the numbers are
    directions_text: str  # "highest accuracy, lowest loss"
    thesis: bool  # the thesis's reference figures (and Δ columns) apply
    published: bool = False  # published reference rows of the table's datasets go under it
    untested_per_cell: bool = False  # the caption names a cell with no metric tested once, not per metric


# Column labels and decimals per metric key; keys not listed print as themselves with 2 decimals.
LABELS: dict[str, tuple[str, int, str]] = {  # key -> (label, decimals, short name)
    "acc": ("Accuracy (%)", 2, ""),
    "loss": ("Loss (CE x 100)", 2, ""),
    "acc2_has0": ("Acc-2 has0 (%)", 2, "Acc-2 has0"),
    "acc2_non0": ("Acc-2 non0 (%)", 2, "Acc-2 non0"),
    "f1_has0": ("F1 has0 (%)", 2, "F1 has0"),
    "f1_non0": ("F1 non0 (%)", 2, "F1 non0"),
    "acc7": ("Acc-7 (%)", 2, "Acc-7"),
    "acc5": ("Acc-5 (%)", 2, "Acc-5"),
    "mae": ("MAE", 3, "MAE"),
    "corr": ("Corr", 3, "Corr"),
    "acc2": ("Acc-2 (%)", 2, "Acc-2"),
    "acc3": ("Acc-3 (%)", 2, "Acc-3"),
    "f1": ("F1 (%)", 2, "F1"),
}

REGRESSION_UNITS = (
    "Metrics as MMSA defines them, on the score y in [-3, 3] and the prediction p: Acc-2 has0 = accuracy of "
    "p >= 0 vs y >= 0 over every sample (negative vs non-negative); Acc-2 non0 = accuracy of p > 0 vs y > 0 "
    "with the samples of y = 0 left out (negative vs positive); F1 has0 / non0 = the support-weighted F1 of "
    "the same two splits; Acc-7 / Acc-5 = exact match of p and y clipped to [-3, 3] / [-2, 2] and rounded "
    "(half to even); MAE = mean |p - y|; Corr = Pearson's r of p and y (MAE and Corr unclipped). "
    "Accuracies and F1 in %, MAE and Corr raw.")

SIMS_UNITS = (
    "Metrics as MMSA's CH-SIMS set defines them (__eval_sims_regression), on the score y in [-1, 1] and the "
    "prediction p, both clipped to [-1, 1]: Acc-2 = accuracy of the bins (-1, 0] / (0, 1]; Acc-3 with cuts -0.1, "
    "0.1; Acc-5 with cuts -0.7, -0.1, 0.1, 0.7; F1 = the support-weighted F1 of the two Acc-2 classes; MAE = mean "
    "|p - y|; Corr = Pearson's r. Accuracies and F1 in %, MAE and Corr raw.")
# Caption sentences of a regression metric set other than MOSI / MOSEI's (bench.metrics.METRIC_SETS).
METRIC_SET_UNITS: dict[str, str] = {"mmsa-sims": SIMS_UNITS}

TASK_TEXTS: dict[str, dict[str, Any]] = {
    "classification": {"decimals_text": "2 decimals", "units_text": "Loss is test cross-entropy x 100.",
                       "thesis": True, "published": True},
    "regression": {"decimals_text": "2 decimals (MAE and Corr: 3)", "units_text": REGRESSION_UNITS,
                   "directions_text": "highest accuracy, F1 and Corr, lowest MAE", "thesis": False,
                   "published": True, "untested_per_cell": True},
}


def metric_for(key: str, direction: str) -> Metric:
    """The printed form of one task metric ('max' / 'min' its better direction)."""
    label, decimals, short = LABELS.get(key, (key, 2, key))
    return Metric(key, f"test_{key}", label, direction == "max", decimals, short)


def _directions_text(metrics: tuple[Metric, ...]) -> str:
    """'highest accuracy, lowest loss': the names of the metrics where higher, then lower, is better."""
    high = [m.name for m in metrics if m.higher_is_better]
    low = [m.name for m in metrics if not m.higher_is_better]
    parts = ([f"highest {', '.join(high)}"] if high else []) + ([f"lowest {', '.join(low)}"] if low else [])
    return ", ".join(parts)


@cache
def table_spec(task: str, metric_set: str = "mmsa") -> TableSpec:
    """The table presentation of task `task` on data of `metric_set` (its summary metrics, in the task's
    order: the task as it scores a dataset of that set, e.g. CH-SIMS's Acc-2/3/5 for regression)."""
    from bench.tasks import make_task, task_class

    shown: Any = task_class(task)
    if metric_set != "mmsa":
        spec = next((s for s in DATASETS.values() if s.metric_set == metric_set), None)
        shown = make_task(task, spec=spec) if spec is not None else shown
    metrics = tuple(metric_for(key, shown.metric_directions.get(key, "max")) for key in shown.summary_metrics)
    texts = {"decimals_text": "2 decimals", "units_text": "", "thesis": False,
             "directions_text": _directions_text(metrics), **TASK_TEXTS.get(task, {})}
    if metric_set in METRIC_SET_UNITS and task == "regression":
        texts.update(units_text=METRIC_SET_UNITS[metric_set], directions_text=_directions_text(metrics))
    texts["thesis"] = bool(texts["thesis"]) and task == THESIS_TASK
    return TableSpec(task=task, metrics=metrics, **texts)


def cell_metric_set(cell: Any) -> str:
    """The metric set of a cell's dataset (its spec's; "mmsa" for an unknown name)."""
    spec = DATASETS.get(str(getattr(cell, "dataset", "")))
    return spec.metric_set if spec is not None else "mmsa"


def cell_table_spec(cell: Any) -> TableSpec:
    """The table presentation of a cell: its task on its dataset's metric set."""
    return table_spec(cell_task(cell), cell_metric_set(cell))


def cell_task(cell: Any) -> str:
    """The task of a preset cell (its configs'); classification for a cell without configs."""
    configs = getattr(cell, "configs", ()) or ()
    tasks = {getattr(cfg, "task", THESIS_TASK) for cfg in configs}
    if len(tasks) > 1:
        raise DataError(f"cell {cell.method}/{cell.modalities}/{cell.dataset} mixes tasks {sorted(tasks)}")
    return tasks.pop() if tasks else THESIS_TASK


def result_columns() -> tuple[str, ...]:
    """Every test-metric column a table of any registered task reads, on any registered dataset's metric set."""
    from bench.tasks import REGISTRY

    sets = dict.fromkeys(("mmsa", *(spec.metric_set for spec in DATASETS.values())))
    return tuple(dict.fromkeys(metric.column for name in REGISTRY for metric_set in sets
                               for metric in table_spec(name, metric_set).metrics))
