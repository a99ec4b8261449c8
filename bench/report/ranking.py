"""Across-cell aggregates: which method helps, over every cell of a table, by more than seed noise.

A *cell* is one (dataset, modality block, optimizer, configuration) of a preset; each method has one
score per seed in it. Two views, as rliable aggregates across tasks:

- mean rank: per cell, methods ranked by their mean over seeds (1 = best, ties share the mean rank),
  then averaged over the cells a method appears in;
- probability of improvement over the baseline: per cell P(X > Y) + P(X = Y) / 2 over every pair of a
  method's seed score X and the baseline's seed score Y, averaged over cells; its 95 % interval from a
  stratified bootstrap (seeds resampled with replacement within each cell and method, fixed RNG seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

CELL_COLUMNS = ("dataset", "modalities", "optimizer", "config")
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class MethodAggregate:
    method: str
    cells: int
    mean_rank: float
    improvement: float  # probability of improvement over the baseline (NaN for the baseline itself)
    improvement_low: float
    improvement_high: float


def probability_of_improvement(scores: np.ndarray, baseline: np.ndarray, higher_is_better: bool = True) -> float:
    """P(X > Y) + P(X = Y) / 2 over all pairs of seed scores: (n,) vs (m,)."""
    x, y = (scores, baseline) if higher_is_better else (-scores, -baseline)
    wins = (x[:, None] > y[None, :]).mean()
    ties = (x[:, None] == y[None, :]).mean()
    return float(wins + 0.5 * ties)


def cell_ranks(means: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """Ranks of one cell's method means (1 = best; ties share the average rank)."""
    return means.rank(ascending=not higher_is_better, method="average")


def _by_cell(rows: pd.DataFrame, metric: str, cell_columns: Sequence[str]) -> dict[tuple, dict[str, np.ndarray]]:
    """cell -> method -> its seed scores (finite values only)."""
    cells: dict[tuple, dict[str, np.ndarray]] = {}
    for key, group in rows.groupby(list(cell_columns), sort=True):
        per_method = {}
        for method, part in group.groupby("method", sort=True):
            values = part[metric].to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            if len(values):
                per_method[method] = values
        if per_method:
            cells[key if isinstance(key, tuple) else (key,)] = per_method
    return cells


def _mean_improvement(cells: dict[tuple, dict[str, np.ndarray]], method: str, baseline: str,
                      higher_is_better: bool) -> float:
    values = [probability_of_improvement(c[method], c[baseline], higher_is_better)
              for c in cells.values() if method in c and baseline in c]
    return float(np.mean(values)) if values else float("nan")


def _bootstrap_interval(cells: dict[tuple, dict[str, np.ndarray]], method: str, baseline: str,
                        higher_is_better: bool, samples: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the mean probability of improvement, seeds resampled within cells."""
    shared = [c for c in cells.values() if method in c and baseline in c]
    if not shared:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    estimates = np.empty(samples)
    for b in range(samples):
        total = 0.0
        for cell in shared:
            x = rng.choice(cell[method], size=len(cell[method]), replace=True)
            y = rng.choice(cell[baseline], size=len(cell[baseline]), replace=True)
            total += probability_of_improvement(x, y, higher_is_better)
        estimates[b] = total / len(shared)
    low, high = np.percentile(estimates, [2.5, 97.5])
    return float(low), float(high)


def aggregate(rows: pd.DataFrame, metric: str, baseline: str, higher_is_better: bool = True,
              cell_columns: Sequence[str] = CELL_COLUMNS, samples: int = BOOTSTRAP_SAMPLES,
              seed: int = BOOTSTRAP_SEED) -> list[MethodAggregate]:
    """Mean rank and probability of improvement over `baseline` of every method in `rows`.

    rows: one row per (cell, method, seed) with `method`, the cell columns and `metric`.
    """
    cells = _by_cell(rows, metric, cell_columns)
    ranks: dict[str, list[float]] = {}
    for per_method in cells.values():
        means = pd.Series({m: float(np.mean(v)) for m, v in per_method.items()})
        for method, rank in cell_ranks(means, higher_is_better).items():
            ranks.setdefault(method, []).append(float(rank))
    out = []
    for method in sorted(ranks, key=lambda m: (float(np.mean(ranks[m])), m)):
        if method == baseline:
            improvement, low, high = float("nan"), float("nan"), float("nan")
        else:
            improvement = _mean_improvement(cells, method, baseline, higher_is_better)
            low, high = _bootstrap_interval(cells, method, baseline, higher_is_better, samples, seed)
        out.append(MethodAggregate(method, len(ranks[method]), float(np.mean(ranks[method])), improvement, low, high))
    return out


def markdown(aggregates: Sequence[MethodAggregate], baseline_name: str, method_name=str) -> str:
    """The ranking as a markdown table (interval in brackets)."""
    lines = [f"| method | cells | mean rank | P(improvement over {baseline_name}) [95% CI] |",
             "| --- | ---: | ---: | --- |"]
    for agg in aggregates:
        shown = ("— (baseline)" if np.isnan(agg.improvement)
                 else f"{agg.improvement:.2f} [{agg.improvement_low:.2f}, {agg.improvement_high:.2f}]")
        lines.append(f"| {method_name(agg.method)} | {agg.cells} | {agg.mean_rank:.2f} | {shown} |")
    return "\n".join(lines) + "\n"


def rows_from_cells(cells, results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (cell, method, seed) of the ok stored runs of `cells` (bench.presets.Cell)."""
    ok = results[results["status"] == "ok"] if len(results) else results
    value_of = dict(zip(ok["run_id"], ok[metric], strict=True)) if len(ok) and metric in ok else {}
    rows = []
    for cell in cells:
        for cfg in cell.configs:
            if cfg.run_id in value_of:
                rows.append({"dataset": cell.dataset, "modalities": cell.modalities, "optimizer": cell.optimizer,
                             "config": cell.config_label, "method": cell.method, "seed": cfg.seed,
                             metric: float(value_of[cfg.run_id])})
    return pd.DataFrame(rows, columns=[*CELL_COLUMNS, "method", "seed", metric])
