"""Tuned tables: per method and table cell, the parameter setting that is best on validation.

The settings of one cell are the grid file's parameter sweep for its method (same dataset, modality
combination, configuration and optimizer). The choice reads only the validation metric (`val_acc`,
higher is better, or `val_loss`, lower is better), averaged over the setting's ok seeds; the test
metrics of the chosen setting are what the table then reports. The test split never takes part.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.config import ConfigError
from bench.gridfile import setting_text

TUNE_METRICS: dict[str, bool] = {"val_acc": True, "val_loss": False}  # metric -> higher is better
TUNED = "tuned on validation"


@dataclass(frozen=True)
class Choice:
    """The setting chosen for one cell: the chosen cell (labelled with its base configuration), the
    mean validation metric of every setting tried (file order), and the index of the chosen one."""

    cell: Any
    tried: tuple[Any, ...]  # the candidate cells
    scores: tuple[float, ...]
    chosen: int

    @property
    def note(self) -> str:
        """What the table prints beside the chosen cell ("" when there was nothing to choose)."""

        if len(self.tried) < 2:
            return ""
        setting = setting_text(self.tried[self.chosen].setting) or "no parameters"
        return f"{setting}; {TUNED}: {len(self.tried)} settings tried"


def validation_score(cell: Any, results: pd.DataFrame, metric: str) -> float:
    """Mean of `metric` over the cell's ok runs (NaN without any): reads no other column."""
    if not len(results) or metric not in results:
        return math.nan
    rows = results[results["run_id"].isin([cfg.run_id for cfg in cell.configs]) & (results["status"] == "ok")]
    values = pd.to_numeric(rows[metric], errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def best_index(scores: Sequence[float], higher_is_better: bool) -> int:
    """Index of the best finite score (the first on ties); 0 when none is finite."""
    best = -1
    for i, score in enumerate(scores):
        if math.isnan(score):
            continue
        if best < 0 or (score > scores[best] if higher_is_better else score < scores[best]):
            best = i
    return max(best, 0)


def tune(cells: Sequence[Any], results: pd.DataFrame, metric: str = "val_acc") -> list[Choice]:
    """One Choice per (dataset, modalities, method, base configuration, optimizer) of grid-file cells."""
    if metric not in TUNE_METRICS:
        raise ConfigError(f"unknown tuning metric {metric!r}; choose from {', '.join(TUNE_METRICS)} "
                          "(validation only: the test split never takes part in the choice)")
    if any(not hasattr(cell, "base_label") for cell in cells):
        raise ConfigError("--tune chooses among the parameter sweeps of a grid file ([params.<method>] lists); "
                          "a preset has none")
    groups: dict[tuple[str, str, str, str, str], list[Any]] = {}
    for cell in cells:
        key = (cell.dataset, cell.modalities, cell.method, cell.base_label, cell.optimizer)
        groups.setdefault(key, []).append(cell)
    if all(len(group) < 2 for group in groups.values()):
        raise ConfigError("--tune: this grid sweeps no parameter (give a [params.<method>] list of values)")
    choices = []
    for group in groups.values():
        scores = tuple(validation_score(cell, results, metric) for cell in group)
        index = best_index(scores, TUNE_METRICS[metric])
        # A chosen setting is not the thesis's configuration: its row says tuned (and gets no thesis figure).
        label = f"{group[index].base_label} [{TUNED}]" if len(group) > 1 else group[index].config_label
        chosen = dataclasses.replace(group[index], config_label=label)
        choices.append(Choice(cell=chosen, tried=tuple(group), scores=scores, chosen=index))
    return choices


def caption_note(metric: str, choices: Sequence[Choice]) -> str:
    """The table note explaining the choice."""
    tried = sorted({len(c.tried) for c in choices if len(c.tried) > 1})
    direction = "highest" if TUNE_METRICS[metric] else "lowest"
    return (f"Tuned on validation: for each method and cell, the parameter setting with the {direction} mean "
            f"{metric} over its seeds is shown (beside the cell) with its test metrics; the test split takes no "
            f"part in the choice ({' or '.join(map(str, tried))} settings tried per cell).")
