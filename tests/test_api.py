"""bench.api for notebooks, and the CLI as a thin wrapper over it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from clitools import bench

from bench import api

pytestmark = pytest.mark.usefixtures("fake_training")


def test_run_returns_the_result_rows(tmp_path):
    lines: list[str] = []
    rows = api.run("ogm", ["text", "vision"], "mosi", profile="smoke", seeds=[0, 1], params={"alpha": 1},
                   runs_dir=tmp_path, progress=False, echo=lines.append)
    assert list(rows["seed"]) == [0, 1] and set(rows["status"]) == {"ok"} and set(rows["param_alpha"]) == {1.0}
    assert list(rows["test_acc"]) == [42.0, 43.0] and api.all_ok(rows)
    assert lines[-1] == "mean ± std over 2 ok seed(s) (ddof=1): acc 42.50 ± 0.71  loss 57.50 ± 0.71"
    again = api.run("ogm", "text,vision", "mosi", profile="smoke", seeds="0,1", params={"alpha": 1.0},
                    runs_dir=tmp_path, echo=None)
    assert list(again["run_id"]) == list(rows["run_id"])  # alpha=1 and alpha=1.0 are the same runs


def test_run_rows_say_missing_and_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_FAKE_FAIL_SEEDS", "1")
    rows = api.run("concat", "audio,vision", "mosi", profile="smoke", seeds=[0, 1], runs_dir=tmp_path, echo=None)
    assert list(rows["status"]) == ["ok", "failed"] and not api.all_ok(rows)
    missing = api.stored_rows(tmp_path / "elsewhere", api.run_configs("concat", "audio,vision", profile="smoke",
                                                                      seeds=[3]))
    assert list(missing["status"]) == ["missing"] and list(missing["seed"]) == [3]


def test_grid_results_table_and_trajectories(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('profile = "smoke"\ndatasets = ["mosi"]\nmethods = ["concat", "ogm"]\n'
                    'modalities = [["text", "vision"]]\nseeds = [0, 1]\n[params.ogm]\nalpha = [0.1, 0.5]\n')
    rows = api.grid(str(grid), runs_dir=tmp_path / "runs", echo=None)
    assert len(rows) == 6 and api.all_ok(rows)
    results = api.results(tmp_path / "runs")
    assert len(results) == 6 and {"method", "modalities", "seed", "param_alpha", "val_acc", "config_json"} <= set(
        results.columns)
    frame = api.table(str(grid), tmp_path / "runs")
    assert len(frame) == 3 * 2 and set(frame["config"]) == {"standard", "standard [alpha=0.1]",
                                                             "standard [alpha=0.5]"}
    assert frame[(frame["method"] == "concat") & (frame["metric"] == "acc")]["mean"].iloc[0] == 42.5
    text = api.render_table(str(grid), tmp_path / "runs", "csv")
    assert text.splitlines()[0].endswith(",verdict,untested,note")
    traj = api.trajectories(tmp_path / "runs", methods="ogm", seeds=[1])
    assert set(traj["method"]) == {"ogm"} and set(traj["seed"]) == {1} and len(traj) == 2 * 2
    assert {"series", "value", "modalities", "method_params"} <= set(traj.columns)
    assert len(api.trajectories(tmp_path / "runs", methods="agm")) == 0
    assert len(api.jobs(str(grid), tmp_path / "runs")) == 6


def test_predictions_of_ok_runs_with_a_line_for_each_missing_or_bad_file(tmp_path, capsys, monkeypatch):
    empty = api.predictions(tmp_path)
    assert len(empty) == 0 and list(empty.columns) == list(api.PREDICTION_COLUMNS)
    (tmp_path / "results").mkdir()
    for rid in ("a", "b", "c"):  # the missing check asks for the result file
        (tmp_path / "results" / f"{rid}.parquet").touch()
    monkeypatch.setattr(api.store, "stored_status", lambda runs: {"a": "ok", "b": "ok", "c": "ok", "f": "failed"})
    folder = tmp_path / "predictions"
    folder.mkdir()
    pd.DataFrame({"run_id": ["a", "a"], "split": ["test", "test"], "sample": ["v1", "v2"], "target": [0, 2],
                  "prediction": [0, 1], "prob_0": [0.9, 0.2]}).to_parquet(folder / "a.parquet")
    pd.DataFrame({"run_id": ["b"], "split": ["test"]}).to_parquet(folder / "b.parquet")
    frame = api.predictions(tmp_path)
    assert list(frame.columns) == [*api.PREDICTION_COLUMNS, "prob_0"] and list(frame["prediction"]) == [0, 1]
    err = capsys.readouterr().err
    assert "b.parquet: not a bench prediction file" in err
    assert "c.parquet: missing (the stored run's prediction file is left out)" in err  # an ok run without its file
    assert "f.parquet" not in err  # a failed run has no predictions to miss
    assert len(api.predictions(tmp_path, run_ids=["b", "zzz"])) == 0


def test_the_cli_commands_call_the_api(tmp_path, monkeypatch, capsys):
    calls: dict[str, tuple] = {}

    def record(name, result):
        def fake(*args, **kwargs):
            calls[name] = (args, kwargs)
            return result
        return fake

    ok = pd.DataFrame({"run_id": ["x"], "status": ["ok"]})
    monkeypatch.setattr(api, "run", record("run", ok))
    monkeypatch.setattr(api, "grid", record("grid", ok.assign(status="failed")))
    monkeypatch.setattr(api, "render_table", record("render_table", "TABLE\n"))
    monkeypatch.setattr(api, "report", record("report", Path("r.html")))
    monkeypatch.setattr(api, "plot", record("plot", [Path("p.png")]))
    assert bench("run", "--method", "ogm", "--modalities", "text,vision", "--param", "alpha=1") == 0
    assert calls["run"][1]["params"] == {"alpha": 1.0} and calls["run"][0] == ("ogm", "text,vision", "mosi")
    assert bench("grid", "g.toml", "--seeds", "0,1", "--method", "ogm") == 1  # a failed run: exit 1
    assert calls["grid"][0] == ("g.toml",) and calls["grid"][1]["seeds"] == (0, 1)
    assert calls["grid"][1]["methods"] == ["ogm"] and calls["grid"][1]["profile"] is None
    assert bench("table", "g.toml", "--tune") == 0 and "TABLE" in capsys.readouterr().out
    assert calls["render_table"][1]["tune"] is True
    assert bench("report", "table-6.10") == 0 and bench("plot", "ratios", "--seeds", "1") == 0
    assert calls["plot"][1]["seeds"] == (1,) and calls["report"][0][0] == "table-6.10"
