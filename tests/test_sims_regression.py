"""CH-SIMS end to end at the task level: the regression task takes the run's metric set from the dataset
spec (bench.tasks.regression.Regression.use_dataset), so a CH-SIMS run stores Acc-2/3/5, F1, MAE, Corr in
their own columns while MOSI / MOSEI runs keep today's."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from tiny import sims_record

from bench.config import ConfigError
from bench.data import load_dataset
from bench.data.registry import spec_for
from bench.plan.resolve import make_config
from bench.tasks import all_result_columns, make_task

SIMS_COLUMNS = tuple(f"{side}_{k}" for side in ("test", "val")
                     for k in ("acc2", "acc3", "acc5", "f1", "mae", "corr", "loss"))


def test_result_columns_by_metric_set() -> None:
    mmsa = all_result_columns()
    assert mmsa == all_result_columns("mmsa") and "test_acc7" in mmsa and "test_acc3" not in mmsa
    sims = all_result_columns("mmsa-sims")
    assert set(SIMS_COLUMNS) <= set(sims) and len(sims) == len(set(sims))
    from bench.tasks.regression import Regression, modality_view_columns

    # the SIMS set's columns, then the per-modality view (each modality against its own and the multimodal label)
    assert Regression.metric_set_columns("mmsa-sims") == (*SIMS_COLUMNS, *modality_view_columns())
    assert "test_audio_own_acc2" in sims and "test_vision_mm_mae" in sims and "test_text_own_acc2" not in mmsa
    assert "test_acc7" not in sims and "test_acc2_non0" not in sims and "test_acc" in sims


def test_the_regression_task_scores_as_the_spec_says() -> None:
    task = make_task("regression")
    task.use_dataset(spec_for("mosi"))
    assert task.metric_set.name == "mmsa" and task.headline == "acc2_non0" and task.bound == 3.0
    task = make_task("regression", spec=spec_for("sims"))
    assert task.metric_set.name == "mmsa-sims" and task.bound == 1.0
    assert (task.headline, task.summary_metrics) == ("acc2", ("acc2", "acc3", "acc5", "f1", "mae", "corr"))
    assert task.selection().metric == "loss" and type(task).headline == "acc2_non0"  # the class is untouched
    with pytest.raises(ConfigError, match="checkpoint 'acc2_non0' is not a metric of sims's set 'mmsa-sims'"):
        make_task("regression", {"checkpoint": "acc2_non0"}).use_dataset(spec_for("sims"))


def test_a_sims_regression_run_reports_sims_metrics(tmp_path: Path) -> None:
    from bench.train import train_run

    path = tmp_path / "SIMS" / "Processed" / "unaligned_39.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(sims_record(sizes=(24, 8, 8)), protocol=4))
    cfg = make_config(str(path), "smoke", method="concat", task="regression", modalities=("text", "audio"))
    assert cfg.label_rule == "sims3"  # the spec's default rule, through the family shim
    result = train_run(cfg, dataset=load_dataset(str(path), "smoke", label_rule=cfg.label_rule))
    assert result.status == "ok", result.error
    view = {f"test_{m}_{a}_{k}" for m in ("text", "audio") for a in ("own", "mm") for k in ("acc2", "corr", "mae")}
    assert set(result.metrics) - {"best_epoch", "epochs"} == set(SIMS_COLUMNS) | view
    assert 0.0 <= result.metrics["test_acc3"] <= 100.0 and result.metrics["test_mae"] <= 2.0
    assert set(result.predictions["test"]) >= {"target", "prediction", "target_text", "target_audio"}
    assert "target_vision" not in result.predictions["test"]  # a modality the run does not train
