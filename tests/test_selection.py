"""Empty and partial selections of table / report / ls / plot: what the store holds, which flags select it."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import bench

from bench import api
from bench.selection import EmptySelection, GridQuery, holdings, resolve

# What the issue did: a smoke grid of MOSI with 2 seeds (concat and OGM text+vision, to stay small).
GRID = ["table-6.10", "--profile", "smoke", "--dataset", "mosi", "--seeds", "0,1", "--method", "concat,ogm",
        "--modalities", "text+vision"]


pytestmark = pytest.mark.usefixtures("fake_training")


@pytest.fixture()
def smoke_store(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    assert bench("grid", *GRID, "--runs-dir", str(runs), "--no-progress") == 0
    return runs


def _error(code: int, err: str) -> str:
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_table_takes_the_only_profile_and_seed_set_the_store_holds(smoke_store, capsys):
    capsys.readouterr()
    assert bench("table", "table-6.10", "--runs-dir", str(smoke_store)) == 0
    out, err = capsys.readouterr()
    notes = err.splitlines()
    assert notes[0] == "note: using --profile smoke --seeds 0,1: the only profile and seed set the store holds for " \
                       "table-6.10"
    # fake accuracies 40 + seed + 2 modalities: 42, 43
    assert "| Late Concatenation (Baseline) | 42.50 ± 0.71≈ |" in out  # 2 seeds: tied with the next cell (≈)
    assert notes[1].startswith("note: 84 of 88 runs of table-6.10 (profile smoke; datasets synth-mosi, synth-mosei; "
                               "seeds 0,1) are not stored")
    assert "none at all for synth-mosei" in notes[1] and len(notes) == 2


@pytest.mark.parametrize("command", [["table", "table-6.10"], ["report", "table-6.10"],
                                     ["ls", "--preset", "table-6.10"]])
def test_a_selection_without_stored_runs_exits_2_saying_what_the_store_holds(smoke_store, tmp_path, capsys, command):
    capsys.readouterr()
    code = bench(*command, "--runs-dir", str(smoke_store), "--profile", "quick", *(
        ["--out-dir", str(tmp_path)] if command[0] == "report" else []))
    err = _error(code, capsys.readouterr().err)
    assert "no stored runs of table-6.10 (profile quick; datasets synth-mosi, synth-mosei; seeds 0,1,2,3,4)" in err
    assert ("the store holds 4 run(s): profile smoke (4); task classification (4); model late_fusion (4); "
            "dataset synth-mosi (4); seed 0 (2), 1 (2)") in err
    assert "4 of them are runs of table-6.10: --profile smoke --seeds 0,1 selects them" in err
    assert not (tmp_path / "table-6.10-report.html").exists()


def test_runs_of_another_grid_are_said_to_be_none_of_the_target(smoke_store, capsys):
    capsys.readouterr()
    err = _error(bench("table", "table-6.2", "--runs-dir", str(smoke_store)), capsys.readouterr().err)
    assert "the store holds 4 run(s)" in err and "none of them is a run of table-6.2" in err


def test_an_empty_store_exits_2_for_every_reading_command(tmp_path, capsys):
    empty = str(tmp_path / "nothing")
    assert "the store is empty" in _error(bench("table", "table-6.10", "--runs-dir", empty), capsys.readouterr().err)
    assert "no stored runs under" in _error(bench("ls", "--runs-dir", empty), capsys.readouterr().err)
    assert "the store is empty" in _error(bench("plot", "ratios", "--runs-dir", empty), capsys.readouterr().err)


def test_plot_without_a_match_says_what_the_store_holds(smoke_store, capsys):
    capsys.readouterr()
    err = _error(bench("plot", "strengths", "--runs-dir", str(smoke_store)), capsys.readouterr().err)
    assert "no ok runs match the selection for 'strengths' (methods agm)" in err
    assert "method concat (2), ogm (2)" in err and "profile smoke (4)" in err and "choose with --method" in err


def test_plot_of_some_requested_seeds_notes_the_missing_ones(smoke_store, tmp_path, capsys):
    capsys.readouterr()
    assert bench("plot", "ratios", "--runs-dir", str(smoke_store), "--seeds", "0,1,2",
                 "--out", str(tmp_path / "r.png")) == 0
    assert "note: no ok runs of seed 2 in the selection for 'ratios'" in capsys.readouterr().err


def test_two_profiles_or_seed_sets_are_not_guessed(smoke_store, capsys):
    assert bench("grid", *GRID[:-4], "--method", "concat", "--seeds", "0,1,2", "--modalities", "audio+vision",
                 "--runs-dir", str(smoke_store), "--no-progress") == 0
    results = api.results(smoke_store)
    resolved = resolve(GridQuery("table-6.10"), results)
    assert resolved.query.profile == "smoke" and resolved.query.seeds is None  # seed sets {0,1} and {0,1,2}
    assert resolved.note == "note: using --profile smoke: the only profile the store holds for table-6.10"
    assert bench("grid", *GRID, "--profile", "quick", "--runs-dir", str(smoke_store), "--no-progress") == 0
    assert resolve(GridQuery("table-6.10"), api.results(smoke_store)).query.profile is None
    assert resolve(GridQuery("table-6.10", seeds=(0,)), api.results(smoke_store)).note == ""


def test_the_api_raises_the_same_error(smoke_store):
    with pytest.raises(EmptySelection, match="--profile smoke --seeds 0,1 selects them"):
        api.table("table-6.10", smoke_store, profile="quick")


def test_holdings_counts_task_and_model_columns_where_they_exist(smoke_store):
    rows = api.results(smoke_store).assign(task="classification", model="late_fusion")
    assert holdings(rows) == ("profile smoke (4); task classification (4); model late_fusion (4); "
                              "dataset synth-mosi (4); seed 0 (2), 1 (2)")
