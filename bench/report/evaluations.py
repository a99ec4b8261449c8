"""The test-time evaluations table (`bench table PRESET --evaluations`): per cell, one metric of the task on
the clean test split, under each feature-noise level, and on each out-of-domain test set, side by side.

A value is the mean ± std (ddof=1) over the cell's ok seeds; † / ‡ mark a Welch's t-test difference from
the Late Concatenation cell of the same block, dataset and optimizer in the same column (p < 0.05 / 0.01),
as in the main tables (bench.report.stats). Nothing here knows any method: the baseline is the one the
registry marks (labels.baseline_method).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.config import ConfigError
from bench.report import labels, stats
from bench.report.metricsets import Metric, cell_task, metric_for

CLEAN = "clean"
FRAME_COLUMNS = ("block", "method", "config", "optimizer", "dataset", "column", "kind", "sigma", "test_dataset",
                 "mean", "std", "n", "p_value", "p_adjusted", "mark")


@dataclass
class EvaluatedCell:
    """A cell's values per column (column name -> values of its ok seeds, in seed order)."""

    cell: Any
    values: dict[str, list[float]]


def noise_column(sigma: float) -> str:
    return f"noise σ={sigma:g}"


def ood_column(test_dataset: str) -> str:
    return f"OOD {test_dataset}"


def table_metric(cells: Sequence[Any], metric: str = "") -> Metric:
    """The metric the table shows: `metric` (a key such as 'acc' or 'mae'), else the cells' task's headline."""
    from bench.tasks import task_class

    tasks = sorted({cell_task(c) for c in cells})
    if len(tasks) > 1:
        raise ConfigError(f"--evaluations needs cells of one task, got {', '.join(tasks)}")
    cls = task_class(tasks[0] if tasks else "classification")
    key = (metric or cls.headline).removeprefix("test_")
    if key not in cls.metric_directions:
        raise ConfigError(f"unknown metric {metric!r} for task {cls.name}; choose from "
                          f"{', '.join(cls.metric_directions)}")
    return metric_for(key, cls.metric_directions.get(key, "max"))


def evaluate_cell(cell: Any, results: pd.DataFrame, evaluations: pd.DataFrame, metric: Metric) -> EvaluatedCell:
    """The clean metric of the cell's ok runs (result rows) and each stored evaluation's (same runs)."""
    run_ids = [cfg.run_id for cfg in cell.configs]
    ok = results[(results["run_id"].isin(run_ids)) & (results["status"] == "ok")] if len(results) else results
    order = {rid: i for i, rid in enumerate(run_ids)}
    ok_ids = sorted(set(ok["run_id"]) if len(ok) else set(), key=order.__getitem__)
    values: dict[str, list[float]] = {CLEAN: _in_order(ok, ok_ids, metric.column)}
    rows = evaluations[evaluations["run_id"].isin(ok_ids)] if len(evaluations) else evaluations
    if len(rows):
        noise = rows[rows["kind"] == "noise"]
        for sigma in sorted(set(noise["sigma"].astype(float))):
            values[noise_column(sigma)] = _in_order(noise[noise["sigma"] == sigma], ok_ids, metric.column)
        ood = rows[rows["kind"] == "ood"]
        for name in sorted(set(ood["test_dataset"].astype(str))):
            values[ood_column(name)] = _in_order(ood[ood["test_dataset"] == name], ok_ids, metric.column)
    return EvaluatedCell(cell, values)


def _in_order(rows: pd.DataFrame, run_ids: Sequence[str], column: str) -> list[float]:
    """`column` of the rows of these runs, in run order (runs without a row or value left out)."""
    if not len(rows) or column not in rows:
        return []
    by_run = dict(zip(rows["run_id"], pd.to_numeric(rows[column], errors="coerce"), strict=True))
    return [float(by_run[r]) for r in run_ids if r in by_run and math.isfinite(float(by_run[r]))]


def find_baseline(cell: Any, pool: Sequence[EvaluatedCell]) -> EvaluatedCell | None:
    """The baseline method's cell of the same block, dataset, optimizer and task (same config when present)."""
    baseline = labels.baseline_method()
    candidates = [e for e in pool if e.cell.method == baseline and e.cell.dataset == cell.dataset
                  and e.cell.modalities == cell.modalities and e.cell.optimizer == cell.optimizer
                  and cell_task(e.cell) == cell_task(cell)]
    for config in (cell.config_label, "standard"):
        for candidate in candidates:
            if candidate.cell.config_label == config:
                return candidate
    return None


def evaluations_frame(cells: Sequence[Any], results: pd.DataFrame, evaluations: pd.DataFrame, metric: Metric,
                      baseline_cells: Sequence[Any] = ()) -> pd.DataFrame:
    """Tidy frame: one line per cell and column (clean, noise σ=..., OOD ...), with the test against the
    baseline's same column."""
    shown = [evaluate_cell(c, results, evaluations, metric) for c in cells]
    known = {tuple(cfg.run_id for cfg in c.configs) for c in cells}
    extra = [evaluate_cell(c, results, evaluations, metric) for c in baseline_cells
             if tuple(cfg.run_id for cfg in c.configs) not in known]
    records = []
    for evaluated in shown:
        c = evaluated.cell
        base = find_baseline(c, shown) or find_baseline(c, extra)
        tested = base is not None and base is not evaluated and c.method != labels.baseline_method()
        for column, values in evaluated.values.items():
            summary = stats.summarise(values)
            p_value = stats.welch_p(values, base.values.get(column, [])) if tested else math.nan
            kind, sigma, name = _column_parts(column)
            records.append({"block": c.modalities, "method": c.method, "config": c.config_label,
                            "optimizer": c.optimizer, "dataset": c.dataset, "column": column, "kind": kind,
                            "sigma": sigma, "test_dataset": name, "mean": summary.mean, "std": summary.std,
                            "n": summary.n, "p_value": p_value})
    # Holm-Bonferroni over every test of the table, as the main tables do (bench.report.stats); the
    # uncorrected p stays in the frame.
    for record, adjusted in zip(records, stats.adjust([r["p_value"] for r in records], "holm"), strict=True):
        record["p_adjusted"], record["mark"] = adjusted, stats.significance_mark(adjusted)
    return pd.DataFrame.from_records(records, columns=list(FRAME_COLUMNS))


def _column_parts(column: str) -> tuple[str, float, str]:
    """(kind, sigma, test dataset) of a column name."""
    if column.startswith("noise σ="):
        return "noise", float(column.removeprefix("noise σ=")), ""
    if column.startswith("OOD "):
        return "ood", math.nan, column.removeprefix("OOD ")
    return CLEAN, math.nan, ""


def _ordered_columns(frame: pd.DataFrame) -> list[str]:
    """clean, then the noise levels ascending, then the out-of-domain datasets."""
    noise = frame[frame["kind"] == "noise"].drop_duplicates("column").sort_values("sigma")["column"].tolist()
    ood = sorted(frame.loc[frame["kind"] == "ood", "column"].unique())
    return [CLEAN, *noise, *ood]


def markdown(frame: pd.DataFrame, name: str, metric: Metric, synthetic: bool) -> str:
    """The evaluations table as markdown: a row per cell, the columns side by side."""
    head = (f"### {'SYNTHETIC SURROGATE — not MOSI/MOSEI results — ' if synthetic else ''}{name}: test-time "
            f"evaluations, {metric.label}\n\n")
    if not len(frame) or not (frame["kind"] != CLEAN).any():
        return head + ("No stored test-time evaluations for these runs: train them with `bench run ... "
                       "--test-noise 0.1,0.5,1.0` / `--test-dataset NAME`, or `test_noise` / `test_dataset` "
                       "in a grid file.\n")
    columns = _ordered_columns(frame)
    lines = ["| Modalities | Method | Config | Dataset | " + " | ".join(
                 "in-domain (clean)" if c == CLEAN else c for c in columns) + " | n |",
             "|" + "---|" * (len(columns) + 5)]
    keys = ["block", "method", "config", "optimizer", "dataset"]
    for key, group in frame.groupby(keys, sort=False):
        block, method, config, optimizer, dataset = key
        by_column = {row["column"]: row for row in group.to_dict("records")}
        cells = [_cell_text(by_column.get(c), metric.decimals) for c in columns]
        n = int(by_column[CLEAN]["n"]) if CLEAN in by_column else 0
        lines.append(f"| {block} | {labels.method_name(method)} | {config}/{optimizer} | {dataset} | "
                     + " | ".join(cells) + f" | {n} |")
    better = "higher" if metric.higher_is_better else "lower"
    foot = (f"\n{metric.label} on the test split ({better} is better), mean ± std over seeds (std with ddof=1). "
            "In-domain: the clean test split of the training dataset (the main table's number); noise σ: the "
            "same test split with Gaussian noise N(0, σ²) added to every modality's features at valid steps "
            "(seeded by run seed and σ); OOD: the test split of another dataset, same model. "
            f"† / ‡: Welch's t-test against {labels.method_name(labels.baseline_method())} in the same column, "
            f"Holm-Bonferroni-corrected p < {stats.ALPHA} / {stats.STRONG_ALPHA} over the table's "
            f"{int(frame['p_value'].notna().sum())} tests (the CSV keeps the uncorrected p_value).\n")
    return head + "\n".join(lines) + "\n" + foot


def _cell_text(row: dict[str, Any] | None, decimals: int) -> str:
    if row is None or not row["n"]:
        return "-"
    std = "-" if math.isnan(row["std"]) else f"{row['std']:.{decimals}f}"
    return f"{row['mean']:.{decimals}f} ± {std}{row['mark']}"
