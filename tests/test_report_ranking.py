"""Across-cell ranking: mean rank and probability of improvement, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench.report.ranking import aggregate, cell_ranks, markdown, probability_of_improvement


def test_probability_of_improvement_counts_wins_and_half_ties() -> None:
    x, y = np.array([3.0, 1.0]), np.array([2.0, 1.0, 0.0])
    # pairs: 3>2, 3>1, 3>0 (3 wins); 1<2, 1=1 (tie), 1>0 (win) -> (4 + 0.5) / 6 = 0.75
    assert probability_of_improvement(x, y) == pytest.approx(4.5 / 6)
    # lower is better (MAE): 3 loses to all three; 1 beats 2, ties 1, loses to 0 -> (1 + 0.5) / 6
    assert probability_of_improvement(x, y, higher_is_better=False) == pytest.approx(1.5 / 6)


def test_cell_ranks_put_the_best_first_and_share_ties() -> None:
    ranks = cell_ranks(pd.Series({"a": 50.0, "b": 60.0, "c": 50.0}))
    assert ranks.to_dict() == {"a": 2.5, "b": 1.0, "c": 2.5}
    assert cell_ranks(pd.Series({"a": 0.9, "b": 0.8}), higher_is_better=False).to_dict() == {"a": 2.0, "b": 1.0}


def _rows() -> pd.DataFrame:
    # cell 1: m beats concat in every pair; cell 2: m loses every pair
    data = [("c1", "concat", [50, 51]), ("c1", "m", [60, 61]), ("c2", "concat", [70, 71]), ("c2", "m", [40, 41])]
    return pd.DataFrame([{"dataset": cell, "modalities": "a+v", "optimizer": "adam", "config": "standard",
                          "method": method, "seed": seed, "test_acc": float(value)}
                         for cell, method, values in data for seed, value in enumerate(values)])


def test_aggregate_averages_ranks_and_improvements_over_cells() -> None:
    result = {a.method: a for a in aggregate(_rows(), "test_acc", "concat", samples=200)}
    # ranks: cell 1 m=1, concat=2; cell 2 m=2, concat=1 -> both 1.5
    assert result["m"].mean_rank == 1.5 and result["concat"].mean_rank == 1.5 and result["m"].cells == 2
    # improvement: 1.0 in cell 1, 0.0 in cell 2 -> 0.5; every bootstrap resample gives the same 0.5
    assert result["m"].improvement == 0.5
    assert result["m"].improvement_low == 0.5 and result["m"].improvement_high == 0.5
    assert math.isnan(result["concat"].improvement)


def test_the_bootstrap_interval_is_reproducible_and_brackets_the_estimate() -> None:
    rows = _rows()
    rows.loc[(rows.dataset == "c2") & (rows.method == "m") & (rows.seed == 1), "test_acc"] = 80.0  # now mixed
    first = {a.method: a for a in aggregate(rows, "test_acc", "concat", samples=300)}["m"]
    again = {a.method: a for a in aggregate(rows, "test_acc", "concat", samples=300)}["m"]
    assert (first.improvement_low, first.improvement_high) == (again.improvement_low, again.improvement_high)
    # cell 2 now: 40 loses both, 80 wins both -> 0.5; mean over cells (1.0 + 0.5) / 2 = 0.75
    assert first.improvement == 0.75 and first.improvement_low <= 0.75 <= first.improvement_high
    assert first.improvement_low < first.improvement_high


def test_markdown_names_the_baseline_and_shows_the_interval() -> None:
    text = markdown(aggregate(_rows(), "test_acc", "concat", samples=50), "Late Concatenation")
    assert "P(improvement over Late Concatenation) [95% CI]" in text
    assert "| m | 2 | 1.50 | 0.50 [0.50, 0.50] |" in text and "— (baseline)" in text


def test_rows_from_cells_keep_ok_runs_with_their_cell_and_seed() -> None:
    from types import SimpleNamespace

    from bench.report.ranking import rows_from_cells

    configs = (SimpleNamespace(run_id="a", seed=0), SimpleNamespace(run_id="b", seed=1))
    cell = SimpleNamespace(dataset="synth-mosi", modalities="audio+vision", optimizer="adam",
                           config_label="standard", method="ogm", configs=configs)
    results = pd.DataFrame({"run_id": ["a", "b"], "status": ["ok", "failed"], "test_acc": [55.0, 99.0]})
    rows = rows_from_cells([cell], results, "test_acc")
    # the failed seed is not a score
    assert rows.to_dict("records") == [{"dataset": "synth-mosi", "modalities": "audio+vision", "optimizer": "adam",
                                        "config": "standard", "method": "ogm", "seed": 0, "test_acc": 55.0}]
