"""`bench table FILE --tune`: the setting best on validation, never on test."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from clitools import bench

from bench import api
from bench.report import tune
from bench.store import RunRecord, save_result

GRID = """\
datasets = ["mosi"]
profile = "smoke"
methods = ["concat", "ogm"]
modalities = [["audio", "vision"]]
seeds = [0, 1, 2]

[params.ogm]
alpha = [0.1, 0.5, 0.9]
"""
# alpha -> (val_acc, val_loss, test_acc) per seed: 0.9 is best on test, 0.1 on validation accuracy,
# 0.5 on validation loss.
FAKE = {0.1: ((60, 61, 62), (95, 96, 97), (50, 51, 52)),
        0.5: ((55, 56, 57), (80, 81, 82), (55, 56, 57)),
        0.9: ((40, 41, 42), (99, 99, 99), (70, 71, 72))}


@pytest.fixture(autouse=True)
def _no_real_data(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "no-real-data"))


@pytest.fixture()
def tuned_store(tmp_path: Path) -> tuple[Path, Path]:
    """A fake store for the grid file: concat, and OGM at three alphas (metrics as in FAKE)."""
    path = tmp_path / "sweep.toml"
    path.write_text(GRID)
    runs = tmp_path / "runs"
    for cell in api.cells(str(path)):
        alpha = dict(cell.setting).get("alpha")
        for i, cfg in enumerate(cell.configs):
            val_acc, val_loss, test_acc = (v[i] for v in FAKE[alpha]) if alpha else (50, 90, 45 + i)
            metrics = {"val_acc": val_acc, "val_loss": val_loss, "test_acc": test_acc, "test_loss": 100 - test_acc}
            save_result(runs, RunRecord(config=cfg, status="ok", metrics=metrics, data_fingerprint="f"))
    return path, runs


def _ogm_row(out: str) -> str:
    return next(line for line in out.splitlines() if "| OGM |" in line)


def test_tune_picks_the_setting_best_on_validation_not_on_test(tuned_store, capsys):
    path, runs = tuned_store
    assert bench("table", str(path), "--runs-dir", str(runs), "--tune") == 0
    out = capsys.readouterr().out
    row = _ogm_row(out)
    # alpha 0.1: test accuracies 50, 51, 52 (alpha 0.9, best on test, reads 71.00)
    assert "51.00 ± 1.00" in row and "(alpha=0.1; tuned on validation: 3 settings tried)" in row
    assert "71.00" not in out and "Standard training [tuned on validation]" in row
    assert out.count("| OGM |") == 1  # one row per method, not one per setting
    assert "the parameter setting with the highest mean val_acc" in out and "3 settings tried per cell" in out
    frame = api.table(str(path), runs, tune=True)
    ogm = frame[(frame["method"] == "ogm") & (frame["metric"] == "acc")].iloc[0]
    assert ogm["mean"] == 51.0 and ogm["note"] == "alpha=0.1; tuned on validation: 3 settings tried"


def test_val_loss_is_lower_is_better(tuned_store, capsys):
    path, runs = tuned_store
    assert bench("table", str(path), "--runs-dir", str(runs), "--tune", "--tune-metric", "val_loss") == 0
    assert "56.00 ± 1.00" in _ogm_row(capsys.readouterr().out)  # alpha 0.5: val_loss 80-82


def test_the_choice_reads_no_test_column(tuned_store):
    path, runs = tuned_store
    results = api.results(runs)
    blind = results.drop(columns=[c for c in results.columns if c.startswith("test_")])
    cells = api.cells(str(path))
    choices = {c.cell.method: c for c in tune.tune(cells, blind, "val_acc")}
    assert dict(choices["ogm"].tried[choices["ogm"].chosen].setting) == {"alpha": 0.1}
    assert choices["ogm"].scores == pytest.approx((61.0, 56.0, 41.0))
    assert choices["concat"].note == ""  # one setting: nothing chosen


def test_tune_needs_a_sweep_and_a_validation_metric(tuned_store, tmp_path, capsys):
    path, runs = tuned_store
    cases = [(["table", "table-6.10", "--tune"], "a preset has none"),
             (["table", str(path), "--tune", "--method", "concat"], "this grid sweeps no parameter"),
             (["table", str(path), "--tune", "--tune-metric", "test_acc"], "unknown tuning metric 'test_acc'")]
    for args, message in cases:
        code = bench(*args, "--runs-dir", str(runs), "--profile", "smoke")
        err = capsys.readouterr().err
        assert code == 2 and message in err.splitlines()[-1], err


def test_best_index_ties_and_missing():
    nan = float("nan")
    assert tune.best_index([1.0, 3.0, 3.0], True) == 1 and tune.best_index([nan, 2.0, 1.0], False) == 2
    assert tune.best_index([nan, nan], True) == 0
    assert pd.isna(tune.validation_score(api.cells("table-6.10", profile="smoke", seeds=[0])[0],
                                         pd.DataFrame(), "val_acc"))
