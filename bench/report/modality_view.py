"""`bench table --modality-view`: per method and modality, how far each modality's own branch got.

On data with a label per modality (CH-SIMS `regression_labels_T/_A/_V`), a run stores, for each modality m
it trains, metrics of m's own output (the model's per-modality prediction) against m's own label
(`test_<m>_own_<k>`) and against the multimodal label (`test_<m>_mm_<k>`; bench.tasks.regression). This
table shows them per cell (mean ± std over seeds): how much of its own signal each branch learned, the
imbalance diagnostic on real annotations. The columns are read from the result rows, so nothing here knows
a dataset or a task: a cell whose runs hold no such column is left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.report import labels

AGAINST = {"own": "own label", "mm": "multimodal label"}
COLUMN = re.compile(r"^test_(?P<modality>.+)_(?P<against>own|mm)_(?P<key>[a-z0-9]+)$")
KEY_LABELS = {"acc2": "Acc-2 (%)", "corr": "Corr", "mae": "MAE"}
KEY_DECIMALS = {"acc2": 2, "corr": 3, "mae": 3}


def view_columns(columns: Sequence[str], modalities: Sequence[str]) -> dict[tuple[str, str, str], str]:
    """(modality, against, key) -> result column, for the cell's modalities."""
    out = {}
    for column in columns:
        match = COLUMN.match(column)
        if match and match["modality"] in modalities:
            out[(match["modality"], match["against"], match["key"])] = column
    return out


def view_frame(cells: Sequence[Any], results: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, modality): dataset, modalities, method, configuration, modality, n (runs), and per
    (against, key) the mean and std over the cell's stored ok runs."""
    if results.empty:
        return pd.DataFrame()
    by_id = results.set_index("run_id") if "run_id" in results else results
    rows = []
    for cell in cells:
        ids = [cfg.run_id for cfg in cell.configs if cfg.run_id in by_id.index]
        runs = by_id.loc[ids]
        if "status" in runs:
            runs = runs[runs["status"] == "ok"]
        modalities = tuple(cell.configs[0].modalities) if cell.configs else ()
        found = view_columns(list(runs.columns), modalities)
        for modality in modalities:
            mine = {(a, k): col for (m, a, k), col in found.items() if m == modality}
            if not mine or runs[list(mine.values())].isna().all().all():
                continue
            row: dict[str, Any] = {"dataset": cell.dataset, "modalities": cell.modalities, "method": cell.method,
                                   "config": f"{cell.config_label}/{cell.optimizer}", "modality": modality,
                                   "n": int(runs[next(iter(mine.values()))].notna().sum())}
            for (against, key), column in sorted(mine.items()):
                values = runs[column].to_numpy(dtype=float)
                values = values[np.isfinite(values)]
                row[f"{against}_{key}_mean"] = float(values.mean()) if values.size else math.nan
                row[f"{against}_{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def _cell(mean: float, std: float, decimals: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{decimals}f} ± {'n/a' if math.isnan(std) else f'{std:.{decimals}f}'}"


def markdown(frame: pd.DataFrame, name: str, synthetic: bool) -> str:
    """The view as a markdown table with its caption."""
    if frame.empty:
        return (f"Modality view ({name}): no stored run holds per-modality metrics (they need data with a label "
                "per modality, e.g. CH-SIMS, and a regression run).\n")
    keys = [k for k in KEY_LABELS if f"own_{k}_mean" in frame]
    head = ["Data", "Modalities", "Method", "Config", "Modality", "n",
            *(f"{KEY_LABELS[k]} vs {AGAINST[a]}" for a in AGAINST for k in keys)]
    lines = [f"### Modality view ({name}): each modality's branch against its own label and the multimodal one",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in frame.iterrows():
        values = [_cell(row.get(f"{a}_{k}_mean", math.nan), row.get(f"{a}_{k}_std", math.nan), KEY_DECIMALS[k])
                  for a in AGAINST for k in keys]
        lines.append("| " + " | ".join([labels.dataset_short(row["dataset"]), row["modalities"],
                                        labels.method_name(row["method"]), row["config"], row["modality"],
                                        str(row["n"]), *values]) + " |")
    notes = ["", "Per modality m of a run: m's own output (its per-modality prediction; for late fusion its additive "
             "share of the fused prediction, so MAE depends on its scale while Acc-2 and Corr do not) scored with the "
             "dataset's metric set against m's own label and against the multimodal label; mean ± sample std over "
             "the cell's seeds (n runs). Higher Acc-2 and Corr, lower MAE are better. A branch far better against "
             "its own label than the fused model's use of it suggests its signal is learned; a branch near chance "
             "against its own label learned little of its own signal."]
    if synthetic:
        notes.append("SYNTHETIC SURROGATE: these runs are on generated data; per-modality labels are generated too.")
    return "\n".join([*lines, *notes]) + "\n"
