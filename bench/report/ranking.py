"""Across-cell aggregates: which method helps, over every cell of a table, by more than seed noise.

A *cell* is one (dataset, modality block, optimizer, configuration) of a preset; each method has one
score per seed in it. Two views, as rliable aggregates across tasks:

- mean rank: per cell, methods ranked by their mean over seeds (1 = best, ties share the mean rank),
  then averaged over the cells a method appears in;
- probability of improvement over the baseline: per cell P(X > Y) + P(X = Y) / 2 over every pair of a
  method's seed score X and the baseline's seed score Y, averaged over cells; its 95 % interval from a
  stratified bootstrap (seeds resampled with replacement within each cell and method, fixed RNG seed);
- interquartile mean (IQM) of normalised scores and the performance profile, the recipe of Agarwal et al.
  ("Deep RL at the edge of the statistical precipice", NeurIPS 2021): each run's score is normalised within
  its cell to [0, 1] (min-max over every run of every method in the cell, flipped where lower is better; a
  cell whose runs all score the same gives 0.5), so cells of different difficulty weigh alike; the IQM is the
  mean of the middle 50 % of a method's normalised run scores (robust to a few outlying runs, less noisy
  than the median), with a stratified-bootstrap 95 % interval; the performance profile is the share of a
  method's runs whose normalised score exceeds each threshold tau.

The `rliable` package implements the same recipe, but it is not a dependency here: it pulls in `arch` (and
its compiled extensions) and seaborn for a handful of numpy lines; its score normalisation also expects
fixed reference scores per task (random / human), which these tables do not have. The functions below are
the few it would provide: `iqm`, `normalised_scores`, `stratified_iqm_interval`, `performance_profile`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

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
    iqm: float = math.nan  # interquartile mean of the method's normalised run scores
    iqm_low: float = math.nan  # stratified-bootstrap 95 % interval
    iqm_high: float = math.nan
    runs: int = 0  # normalised run scores behind the IQM


PROFILE_THRESHOLDS = (0.25, 0.5, 0.75)  # the performance profile's points the markdown prints
RANK_FOOT = ("IQM: interquartile mean of the runs' scores normalised within each cell to [0, 1] (min-max over "
             "every run in the cell, 1 = best; a cell of equal scores gives 0.5), so a method's IQM depends on "
             "the methods it is compared with; 95 % interval from a bootstrap stratified by cell. Performance "
             "profile: the share of a method's runs above each normalised score (Agarwal et al., NeurIPS 2021).")


def iqm(scores: Sequence[float]) -> float:
    """Interquartile mean: the mean after cutting 25 % of the scores from each end (scipy's trim_mean; with n
    scores, int(0.25 n) are cut from each side); NaN for no score."""
    values = np.asarray(list(scores), dtype=float)
    return float(scipy_stats.trim_mean(values, 0.25)) if values.size else math.nan


def normalised_scores(cells: dict[tuple, dict[str, np.ndarray]],
                      higher_is_better: bool = True) -> dict[tuple, dict[str, np.ndarray]]:
    """Each cell's run scores mapped to [0, 1] by the cell's min and max over every method's runs (1 = best);
    a cell whose runs all score the same maps them to 0.5."""
    out: dict[tuple, dict[str, np.ndarray]] = {}
    for key, per_method in cells.items():
        every = np.concatenate(list(per_method.values()))
        low, high = float(every.min()), float(every.max())
        span = high - low
        out[key] = {}
        for method, values in per_method.items():
            scaled = np.full(values.shape, 0.5) if span == 0 else (values - low) / span
            out[key][method] = scaled if higher_is_better else 1.0 - scaled
    return out


def stratified_iqm_interval(per_cell: Sequence[np.ndarray], samples: int = BOOTSTRAP_SAMPLES,
                            seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95 % percentile interval of the IQM over cells, each cell's runs resampled with replacement on their own
    (the strata), with a fixed RNG seed."""
    strata = [np.asarray(c, dtype=float) for c in per_cell if len(c)]
    if not strata:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    estimates = np.empty(samples)
    for b in range(samples):
        drawn = [c[rng.integers(0, c.size, size=c.size)] for c in strata]
        estimates[b] = iqm(np.concatenate(drawn))
    low, high = np.percentile(estimates, [2.5, 97.5])
    return float(low), float(high)


def performance_profile(scores: Sequence[float], thresholds: Sequence[float]) -> list[float]:
    """The share of runs whose normalised score exceeds each threshold tau."""
    values = np.asarray(list(scores), dtype=float)
    return [float(np.mean(values > tau)) if values.size else math.nan for tau in thresholds]


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
    normal = normalised_scores(cells, higher_is_better)
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
        mine = [c[method] for c in normal.values() if method in c]
        low_iqm, high_iqm = stratified_iqm_interval(mine, samples, seed)
        out.append(MethodAggregate(method, len(ranks[method]), float(np.mean(ranks[method])), improvement, low, high,
                                   iqm(np.concatenate(mine)), low_iqm, high_iqm, int(sum(len(c) for c in mine))))
    return out


def method_scores(rows: pd.DataFrame, metric: str, higher_is_better: bool = True,
                  cell_columns: Sequence[str] = CELL_COLUMNS) -> dict[str, np.ndarray]:
    """Every method's normalised run scores over all cells (the performance profile's input)."""
    normal = normalised_scores(_by_cell(rows, metric, cell_columns), higher_is_better)
    methods = sorted({m for c in normal.values() for m in c})
    return {m: np.concatenate([c[m] for c in normal.values() if m in c]) for m in methods}


def plot_performance_profile(scores: dict[str, np.ndarray], path: Path, title: str, method_name=str) -> Path:
    """Draw the performance profiles (share of runs above tau, tau from 0 to 1) as a PNG at `path`."""
    from matplotlib.figure import Figure  # the object API, as bench.report.plots: no global pyplot state

    taus = np.linspace(0.0, 1.0, 101)
    fig = Figure(figsize=(8.0, 4.0))
    ax = fig.add_subplot()
    for index, (method, values) in enumerate(scores.items()):
        # Ten colours repeat: the line style tells the 11th method from the 1st.
        ax.plot(taus, performance_profile(values, taus), label=method_name(method),
                linestyle=("-", "--", ":")[index // 10 % 3])
    ax.set_xlabel("normalised score τ (per cell, min-max over its runs)")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def markdown(aggregates: Sequence[MethodAggregate], baseline_name: str, method_name=str) -> str:
    """The ranking as a markdown table (interval in brackets)."""
    lines = [f"| method | cells | mean rank | P(improvement over {baseline_name}) [95% CI] | IQM [95% CI] |",
             "| --- | ---: | ---: | --- | --- |"]
    for agg in aggregates:
        shown = ("— (baseline)" if np.isnan(agg.improvement)
                 else f"{agg.improvement:.2f} [{agg.improvement_low:.2f}, {agg.improvement_high:.2f}]")
        central = "n/a" if np.isnan(agg.iqm) else f"{agg.iqm:.2f} [{agg.iqm_low:.2f}, {agg.iqm_high:.2f}]"
        lines.append(f"| {method_name(agg.method)} | {agg.cells} | {agg.mean_rank:.2f} | {shown} | {central} |")
    return "\n".join(lines) + "\n"


def profile_section(rows: pd.DataFrame, metric: str, aggregates: Sequence[MethodAggregate],
                    higher_is_better: bool = True, plot: str | Path | None = None, title: str = "",
                    method_name=str) -> str:
    """The performance profile under the ranking (methods in the ranking's order) as markdown, and drawn as a
    PNG at `plot` when given (its path said in the text)."""
    found = method_scores(rows, metric, higher_is_better)
    scores = {a.method: found[a.method] for a in aggregates if a.method in found}
    drawn = ""
    if plot is not None:
        drawn = f"\nPerformance profile drawn: {plot_performance_profile(scores, Path(plot), title, method_name)}\n"
    return (drawn + "\nPerformance profile (share of each method's runs above a normalised score):\n\n"
            + profile_markdown(scores, method_name))


def profile_markdown(scores: dict[str, np.ndarray], method_name=str,
                     thresholds: Sequence[float] = PROFILE_THRESHOLDS) -> str:
    """The performance profile at a few thresholds, as a markdown table."""
    lines = ["| method | runs | " + " | ".join(f"share > {t:g}" for t in thresholds) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in thresholds) + " |"]
    for method, values in scores.items():
        shares = performance_profile(values, thresholds)
        lines.append(f"| {method_name(method)} | {len(values)} | " + " | ".join(f"{s:.2f}" for s in shares) + " |")
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
