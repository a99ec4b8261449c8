"""Run identity: the run id and the result row cover the label rule and every resolved method parameter;
rows of the older id scheme are left out with one line saying so."""

from __future__ import annotations

import dataclasses

import pyarrow.parquet as pq
import pytest
import torch
from clitools import bench

from bench import store
from bench.config import RUN_ID_SCHEME, ConfigError
from bench.methods.base import REGISTRY
from bench.plan.resolve import make_config
from bench.store import RunRecord


def _record(cfg) -> RunRecord:
    return RunRecord(config=cfg, status="ok", metrics={"test_acc": 50.0, "test_loss": 90.0},
                     state_dict={"w": torch.zeros(1)}, data_fingerprint="abc", synthetic=True)


def test_an_unset_parameter_is_resolved_to_its_default_in_the_id() -> None:
    implicit = make_config("synth-mosei", "smoke", method="reconboost", modalities="text,vision")
    explicit = make_config("synth-mosei", "smoke", method="reconboost", modalities="text,vision",
                           method_params={"eta_init": 1.0, "consolidation": "official"})
    assert implicit.params["eta_init"] == 1.0 and implicit.params["stage0_q"] == "official"
    assert implicit.run_id == explicit.run_id and implicit == explicit
    other = make_config("synth-mosei", "smoke", method="reconboost", modalities="text,vision",
                        method_params={"eta_init": 2.0})
    assert other.run_id != implicit.run_id


def test_an_int_for_a_float_parameter_is_the_same_run() -> None:
    as_int = make_config("synth-mosi", "smoke", method="ogm", method_params={"alpha": 1})
    as_float = make_config("synth-mosi", "smoke", method="ogm", method_params={"alpha": 1.0})
    assert as_int.run_id == as_float.run_id and isinstance(as_int.params["alpha"], float)


def test_a_changed_default_gives_a_new_run_id(monkeypatch) -> None:
    before = make_config("synth-mosi", "smoke", method="ogm").run_id
    ogm = REGISTRY["ogm"]
    changed = dataclasses.make_dataclass("ChangedParams", [("alpha", float, dataclasses.field(default=0.6)),
                                                           ("form", str, dataclasses.field(default="official")),
                                                           ("include_biases", bool,
                                                            dataclasses.field(default=False))], frozen=True)
    monkeypatch.setattr(ogm, "Params", changed)
    after = make_config("synth-mosi", "smoke", method="ogm")
    assert after.params["alpha"] == 0.6 and after.run_id != before


def test_the_label_rule_is_resolved_checked_and_part_of_the_id() -> None:
    binned = make_config("synth-mosei", "smoke", method="concat")
    rounded = make_config("synth-mosei", "smoke", method="concat", label_rule="round")
    assert binned.label_rule == "binned" and rounded.label_rule == "round" and binned.run_id != rounded.run_id
    assert make_config("synth-mosi", "smoke").label_rule == "sign"
    with pytest.raises(ConfigError, match="no such file"):  # a path's name never picks the labels
        make_config("/data/my_MOSEI_subset.pkl", "smoke")
    with pytest.raises(ConfigError, match="label rule 'round' does not apply"):
        make_config("synth-mosi", "smoke", label_rule="round")
    with pytest.raises(ConfigError, match="choose from binned, round"):
        make_config("synth-mosei", "smoke", label_rule="sign")


def test_the_result_row_holds_every_resolved_parameter_and_the_rule(tmp_path) -> None:
    cfg = make_config("synth-mosei", "smoke", method="reconboost", modalities="text,vision")
    store.save_result(tmp_path, _record(cfg))
    rows, problems = store.read_results(tmp_path)
    row = rows.iloc[0]
    assert problems == [] and row["id_scheme"] == RUN_ID_SCHEME and row["label_rule"] == "binned"
    assert row["param_eta_init"] == 1.0 and row["param_consolidation"] == "official"
    assert row["param_optimizer_reset"] == "phase" and row["param_stage0_q"] == "official"


def _downgrade(tmp_path, run_id: str) -> None:
    """Rewrite a stored row as the old scheme wrote it: no id_scheme column."""
    path = store.result_path(tmp_path, run_id)
    table = pq.read_table(path)
    pq.write_table(table.drop(["id_scheme"]), path)


def test_old_scheme_rows_are_left_out_with_one_line(tmp_path, capsys) -> None:
    old = make_config("synth-mosi", "smoke", method="concat", seed=0)
    new = make_config("synth-mosi", "smoke", method="concat", seed=1)
    store.save_result(tmp_path, _record(old))
    store.save_result(tmp_path, _record(new))
    _downgrade(tmp_path, old.run_id)
    rows, problems = store.read_results(tmp_path)
    assert list(rows["run_id"]) == [new.run_id]
    assert len(problems) == 1 and "1 run(s) of an older run-id scheme" in problems[0]
    assert "fresh --runs-dir" in problems[0] and store.is_old_scheme_problem(problems[0])
    assert bench("ls", "--runs-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "1 stored run(s)" in out and "left out: " in out and "corrupt" not in out
    bench("table", "table-6.10", "--runs-dir", str(tmp_path), "--profile", "smoke", "--dataset", "mosi",
          "--seeds", "0,1")
    assert "older run-id scheme" in capsys.readouterr().err


def test_the_label_rule_flag_reaches_grid_files_and_runs(tmp_path, capsys) -> None:
    from bench import api

    grid = tmp_path / "g.toml"
    grid.write_text('datasets = ["mosi", "mosei"]\nprofile = "smoke"\nmethods = ["concat"]\n'
                    'modalities = [["text", "vision"]]\nseeds = [0]\n')
    rules = {c.family: c.configs[0].label_rule for c in api.cells(str(grid), label_rule="round")}
    assert rules == {"mosi": "sign", "mosei": "round"}
    assert {c.configs[0].label_rule for c in api.cells(str(grid))} == {"sign", "binned"}
    code = bench("run", "--method", "concat", "--modalities", "text,vision", "--dataset", "mosei", "--profile",
                 "smoke", "--seeds", "0", "--label-rule", "round", "--runs-dir", str(tmp_path / "runs"),
                 "--executor", "inline")
    out = capsys.readouterr().out
    assert code == 0 and "labels round" in out
    row = store.read_results(tmp_path / "runs")[0].iloc[0]
    assert row["label_rule"] == "round" and row["dataset"] == "synth-mosei"
