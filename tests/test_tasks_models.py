"""The task and model registries: losses, checkpoint choice, predictions, capabilities, run identity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from bench import store
from bench.config import ConfigError
from bench.data.types import DataError
from bench.methods import get_method, validate_config
from bench.methods.baselines import unimodal_config
from bench.models import LateFusionModel, model_spec
from bench.plan.resolve import make_config
from bench.tasks import make_task, metric_direction
from bench.train import train_run


def test_the_regression_loss_is_l1_by_default_and_mse_as_an_option() -> None:
    outputs = torch.tensor([[0.5], [-1.0], [2.0]])  # (B, 1)
    targets = torch.tensor([1.0, 0.0, 2.5])
    # |0.5-1| + |-1-0| + |2-2.5| = 0.5 + 1 + 0.5 = 2 -> mean 2/3; squares 0.25 + 1 + 0.25 = 1.5 -> 0.5
    assert float(make_task("regression").loss(outputs, targets)) == pytest.approx(2 / 3)
    assert float(make_task("regression", {"loss": "mse"}).loss(outputs, targets)) == pytest.approx(0.5)


def test_the_checkpoint_metric_and_its_direction_come_from_the_task() -> None:
    assert make_task("classification").selection() == make_task("regression").selection()
    selection = make_task("regression", {"checkpoint": "mae"}).selection()
    assert (selection.metric, selection.mode) == ("mae", "min") and selection.better(0.8, 0.9)
    assert metric_direction("test_mae") == "min" and metric_direction("val_acc2_non0") == "max"


def test_bad_task_options_are_one_clear_error() -> None:
    expected = r"unknown option\(s\) lossy for task 'regression'; it takes: checkpoint, loss"
    with pytest.raises(ConfigError, match=expected):
        make_task("regression", {"lossy": "l1"})
    with pytest.raises(ConfigError, match="loss must be one of l1, mse"):
        make_task("regression", {"loss": "huber"})
    with pytest.raises(ConfigError, match="unknown task 'ranking'; choose from classification, regression"):
        make_task("ranking")


def test_regression_needs_scores_in_the_data(tiny) -> None:
    no_scores = dataclasses.replace(tiny.test, regression=None)
    with pytest.raises(DataError, match="test: no regression labels"):
        make_task("regression").targets(no_scores, "test")


def test_a_method_without_a_regression_form_refuses_the_task_in_one_line() -> None:
    cfg = make_config("synth-mosi", "smoke", method="ogm", modalities="text,vision", task="regression")
    with pytest.raises(ConfigError, match=r"^method 'ogm' has no regression form "
                                          r"\(it supports: classification; --task classification\)$"):
        validate_config(cfg)


def test_task_and_model_are_part_of_the_run_id_with_resolved_parameters() -> None:
    base = make_config("synth-mosi", "smoke", method="concat", modalities="text,vision")
    regression = make_config("synth-mosi", "smoke", method="concat", modalities="text,vision", task="regression")
    assert base.model == "late_fusion" and dict(base.model_params)["text_hidden"] == 64  # table 6.1, MOSI
    assert dict(make_config("synth-mosei", "smoke").model_params)["text_out"] == 64  # MOSEI's text width
    assert regression.run_id != base.run_id and dict(regression.task_params) == {"loss": "l1", "checkpoint": "loss"}
    wider = make_config("synth-mosi", "smoke", method="concat", modalities="text,vision",
                        model_params={"text_hidden": 8})
    assert wider.run_id != base.run_id
    spec = model_spec(wider, {"text": 5, "vision": 4}, 3)
    assert LateFusionModel(spec).encoders["text"].lstm.hidden_size == 8


def test_bad_model_parameters_fail_before_training() -> None:
    cfg = make_config("synth-mosi", "smoke", method="concat", model_params={"text_width": 3})
    with pytest.raises(ConfigError, match="unknown parameter.*text_width.*for model 'late_fusion'"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match="unknown model 'transformer'; choose from"):
        validate_config(make_config("synth-mosi", "smoke", method="concat", model="transformer"))


def test_the_unimodal_dependency_carries_the_task_and_model() -> None:
    cfg = make_config("synth-mosi", "smoke", method="ensemble", modalities="text,vision", task="regression",
                      model_params={"text_hidden": 8})
    member = unimodal_config(cfg, "text")
    assert (member.task, member.model, member.model_params) == ("regression", "late_fusion", cfg.model_params)
    assert "regression" in get_method("ensemble").tasks


def test_the_regression_ensemble_is_the_mean_of_its_members(tiny) -> None:
    cfg = make_config("synth-mosi", "smoke", method="ensemble", modalities="text,vision", task="regression")
    members = {m: train_run(unimodal_config(cfg, m), dataset=tiny) for m in cfg.modalities}
    result = train_run(cfg, deps={r.run_id: r.state_dict for r in members.values()}, dataset=tiny)
    test = {m: r.predictions["test"]["prediction"] for m, r in members.items()}
    assert np.allclose(result.predictions["test"]["prediction"], (test["text"] + test["vision"]) / 2, atol=1e-6)


def test_predictions_of_both_tasks_are_stored_in_one_readable_schema(tiny, tmp_path) -> None:
    runs = {task: train_run(make_config("synth-mosi", "smoke", method="concat", modalities="text,vision",
                                        task=task), dataset=tiny) for task in ("classification", "regression")}
    for result in runs.values():
        store.save_result(tmp_path, result)
    frame = pd.read_parquet(tmp_path / "predictions")
    assert len(frame) == 2 * (tiny.test.size + tiny.valid.size)  # every sample of test and valid, both runs
    classification = frame[frame.run_id == runs["classification"].run_id]
    regression = frame[frame.run_id == runs["regression"].run_id]
    test_rows = classification[classification.split == "test"]
    assert list(test_rows["sample"]) == list(tiny.test.ids)
    assert np.array_equal(test_rows["target"].to_numpy(), tiny.test.labels.astype(float))
    probs = np.stack(test_rows["probs"].to_numpy())  # (N, 3)
    assert np.allclose(probs.sum(axis=1), 1.0) and np.array_equal(probs.argmax(1), test_rows["prediction"])
    # the stored predictions give back the stored accuracy
    accuracy = 100 * float(np.mean(test_rows["prediction"] == test_rows["target"]))
    assert accuracy == pytest.approx(runs["classification"].metrics["test_acc"])
    assert regression["probs"].isna().all() and regression["prediction_text"].notna().all()
    reg_test = regression[regression.split == "test"]
    mae = float(np.mean(np.abs(reg_test["prediction"] - reg_test["target"])))
    assert mae == pytest.approx(runs["regression"].metrics["test_mae"], rel=1e-5)


def test_regression_checkpoint_on_a_metric_takes_its_direction() -> None:
    """checkpoint=acc2_has0 (SATI's) keeps the highest value; checkpoint=mae the lowest."""
    from bench.tasks import make_task

    assert make_task("regression", {"checkpoint": "acc2_has0"}).selection().mode == "max"
    assert make_task("regression", {"checkpoint": "mae"}).selection().mode == "min"
    assert make_task("regression", {}).selection().metric == "loss"
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        make_task("regression", {"checkpoint": "accuracy"})


def test_a_fixed_modality_model_names_what_it_needs() -> None:
    from bench.models import ModelSpec
    from bench.models.base import require_modalities

    spec = ModelSpec(modalities=("audio", "vision"), input_dims=(("audio", 5), ("vision", 20)), sizes=(),
                     num_classes=1)
    with pytest.raises(ConfigError, match="model 'sati' needs text, audio, vision, got audio, vision"):
        require_modalities("sati", spec, ("text", "audio", "vision"))
    require_modalities("sati", spec, ("vision", "audio"))  # the order does not matter
