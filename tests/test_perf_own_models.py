"""`bench perf --sections own-models`: the methods with their own model, timed against concat."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import bench

from bench.methods import REGISTRY
from bench.perf import own_model_config, own_model_methods

torch.set_num_threads(1)


def test_own_model_methods_are_the_ones_off_late_fusion() -> None:
    listed = own_model_methods()
    assert {"feada", "sati", "cpsl", "s2lif"} <= set(listed)
    assert "concat" not in listed and "ogm" not in listed
    assert all(REGISTRY[name].default_model != "late_fusion" for name in listed)


def test_own_model_config_carries_the_papers_settings() -> None:
    feada = own_model_config("synth-mosei", "quick", "feada", 2)
    assert (feada.model, feada.task, feada.batch_size, feada.step_every) == ("feada", "regression", 16, 4)
    assert feada.max_epochs == 2 and not feada.early_stopping
    concat_on_sati = own_model_config("synth-mosei", "quick", "concat", 2, model="sati")
    assert concat_on_sati.model == "sati" and concat_on_sati.method == "concat"


@pytest.mark.slow
def test_own_models_section_reports_ratios_against_concat(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("bench.perf.own_model_methods", lambda: ["sati"])  # one method keeps it short
    out = tmp_path / "perf.json"
    code = bench("perf", "--sections", "own-models", "--dataset", "synth-mosi", "--profile", "smoke",
                 "--epochs", "1", "--repeats", "1", "--out", str(out))
    assert code == 0
    section = json.loads(out.read_text())["own-models"]
    assert set(section) == {"concat", "sati", "concat on sati"}
    assert section["concat"]["vs_concat"] == 1.0
    for label, row in section.items():
        assert row["s_per_epoch"] > 0
        assert row["vs_concat"] == pytest.approx(row["s_per_epoch"] / section["concat"]["s_per_epoch"], rel=0.05), label
