"""Conformance: every registered method x every registered model that offers the capabilities the method
requires x every task the method supports, with every modality count both accept (1, 2 and 3), trains on
the tiny dataset and gives a well-formed, reproducible result.

The cases come from the registries when this file is collected, so a new method, model or task is covered
without editing this file. The example plugin (examples/plugins/adversarial.py) is loaded while the cases
are listed and while they run, and unloaded afterwards. Methods whose name starts with "test_" are test
doubles other test files register (deliberately failing ones), not registered parts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from plugintools import ADVERSARIAL_PLUGIN, plugin_loaded
from tiny import TAV

from bench.cli_runs import metric_differences
from bench.config import RunConfig
from bench.data import Dataset
from bench.plan.resolve import make_config
from bench.presets import dependencies, order_with_dependencies
from bench.tasks import make_task
from bench.train import RunResult, train_run

torch.set_num_threads(1)

MODALITIES_BY_COUNT: dict[int, tuple[str, ...]] = {1: ("text",), 2: ("audio", "vision"), 3: TAV}
PREDICTED_SPLITS = ("test", "valid")


@dataclass(frozen=True)
class Case:
    """One method on one model for one task and one modality set."""

    method: str
    model: str
    task: str
    modalities: tuple[str, ...]

    def config(self) -> RunConfig:
        return make_config("synth-mosi", "smoke", method=self.method, model=self.model, task=self.task,
                           modalities=self.modalities)

    def __str__(self) -> str:
        return f"{self.method}-{self.model}-{self.task}-{len(self.modalities)}mod"


def accepts(part: type, count: int) -> bool:
    """Whether a method or model class takes `count` modalities."""
    return part.min_modalities <= count <= part.max_modalities


def compatible_cases() -> list[Case]:
    """Every (method, model, task, modality count) the registries declare compatible."""
    from bench.methods import REGISTRY as METHODS
    from bench.models import REGISTRY as MODELS

    cases = []
    for method_name, method in sorted(METHODS.items()):
        if method_name.startswith("test_"):
            continue
        for model_name, model in sorted(MODELS.items()):
            if not method.requires <= model.capabilities:
                continue
            for task in method.tasks:
                cases += [Case(method_name, model_name, task, modalities)
                          for count, modalities in MODALITIES_BY_COUNT.items()
                          if accepts(method, count) and accepts(model, count)]
    return cases


with plugin_loaded(ADVERSARIAL_PLUGIN):
    CASES = compatible_cases()


@pytest.fixture(scope="module", autouse=True)
def _plugin() -> Iterator[None]:
    with plugin_loaded(ADVERSARIAL_PLUGIN):
        yield


@pytest.fixture(scope="module")
def trained_dependencies() -> dict[str, RunResult]:
    """Dependency runs (the unimodal runs of ensemble / unipre) by run id, trained once per module."""
    return {}


def train_with_dependencies(cfg: RunConfig, data: Dataset, cache: dict[str, RunResult]) -> RunResult:
    """Train the runs `cfg` needs (dependencies first, each once), then `cfg` itself with their checkpoints."""
    for needed in order_with_dependencies([cfg])[:-1]:
        if needed.run_id not in cache:
            result = train_run(needed, deps=states_of(needed, cache), dataset=data)
            assert result.status == "ok", f"dependency {needed.method} {needed.modalities}: {result.error}"
            cache[needed.run_id] = result
    return train_run(cfg, deps=states_of(cfg, cache), dataset=data)


def states_of(cfg: RunConfig, cache: Mapping[str, RunResult]) -> dict[str, dict[str, torch.Tensor]]:
    """The best checkpoints of the runs `cfg` needs, by run id."""
    return {need.run_id: cache[need.run_id].state_dict for need in dependencies(cfg)}


def non_finite_task_metrics(cfg: RunConfig, metrics: Mapping[str, float]) -> dict[str, float]:
    """The reported test_/val_ metrics of the run's task that are NaN or infinite."""
    directions = make_task(cfg.task, dict(cfg.task_params)).metric_directions
    reported = {f"{prefix}_{name}" for name in directions for prefix in ("test", "val")} & set(metrics)
    return {key: metrics[key] for key in sorted(reported) if not math.isfinite(metrics[key])}


def prediction_problems(result: RunResult, data: Dataset) -> list[str]:
    """What is wrong with a run's per-sample predictions (one row per sample of test and valid)."""
    problems = []
    for split in PREDICTED_SPLITS:
        columns = result.predictions.get(split)
        if columns is None:
            problems.append(f"no {split} predictions")
            continue
        missing = {"sample", "target", "prediction"} - set(columns)
        if missing:
            problems.append(f"{split}: no column(s) {sorted(missing)}")
        expected_ids = np.asarray(data.split(split).ids).astype(str)
        for name, values in columns.items():
            if len(values) != len(expected_ids):
                problems.append(f"{split}.{name}: {len(values)} rows for {len(expected_ids)} samples")
        if "sample" in columns and not np.array_equal(np.asarray(columns["sample"]), expected_ids):
            problems.append(f"{split}: samples are not the split's ids in order")
    return problems


def different_predictions(first: RunResult, second: RunResult) -> list[str]:
    """The prediction columns of two runs that are not identical."""
    return [f"{split}.{name}" for split in PREDICTED_SPLITS for name in first.predictions.get(split, {})
            if not np.array_equal(first.predictions[split][name], second.predictions[split].get(name))]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_compatible_combination_trains_reproducibly(case: Case, tiny: Dataset,
                                                          trained_dependencies: dict[str, RunResult]) -> None:
    cfg = case.config()
    assert (cfg.method, cfg.model, cfg.task, cfg.modalities) == (case.method, case.model, case.task,
                                                                 case.modalities)
    first = train_with_dependencies(cfg, tiny, trained_dependencies)
    assert first.status == "ok", first.error
    assert first.run_id == cfg.run_id
    task = make_task(cfg.task, dict(cfg.task_params))
    assert {f"test_{name}" for name in task.summary_metrics} <= set(first.metrics)
    assert non_finite_task_metrics(cfg, first.metrics) == {}
    assert [key for key, value in first.metrics.items() if not math.isfinite(value)] == []  # the others too
    assert prediction_problems(first, tiny) == []
    second = train_with_dependencies(cfg, tiny, trained_dependencies)
    assert metric_differences(first.metrics, second.metrics) == []
    assert different_predictions(first, second) == []
    assert first.trajectory == second.trajectory


def test_run_ids_differ_between_tasks_and_models() -> None:
    ids = {case: case.config().run_id for case in CASES}
    assert len(set(ids.values())) == len(CASES)
    # the uniqueness is not vacuous: some cases differ only in the task, some only in the model
    differ_in_task = [(a, b) for a in CASES for b in CASES
                      if (a.method, a.model, a.modalities) == (b.method, b.model, b.modalities) and a.task < b.task]
    differ_in_model = [(a, b) for a in CASES for b in CASES
                       if (a.method, a.task, a.modalities) == (b.method, b.task, b.modalities) and a.model < b.model]
    assert differ_in_task and differ_in_model


def test_every_registered_method_and_model_is_covered() -> None:
    from bench.methods import REGISTRY as METHODS
    from bench.models import REGISTRY as MODELS
    from bench.tasks import REGISTRY as TASKS

    assert {case.method for case in CASES} == {name for name in METHODS if not name.startswith("test_")}
    assert {case.model for case in CASES} == set(MODELS)
    assert {case.task for case in CASES} == set(TASKS)
    assert {"adversarial_shared", "shared_private_mlp"} <= {case.method for case in CASES} | {
        case.model for case in CASES}
    assert {len(case.modalities) for case in CASES} == set(MODALITIES_BY_COUNT)
