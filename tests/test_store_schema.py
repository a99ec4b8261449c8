"""The store's schemas are built when a result is written; importing the store and reading it load no torch
and no registry; a folder of files with differing columns reads as their union."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow.parquet as pq
import pytest
from tiny import smoke_config

from bench import store  # imported before the plugin task below is registered: the point of that test
from bench.data.types import SplitArrays
from bench.methods.baselines import Concat
from bench.plan.resolve import make_config
from bench.store import RunRecord
from bench.tasks import REGISTRY as TASKS
from bench.tasks import all_result_columns
from bench.tasks.regression import Regression
from bench.train import train_run

ROOT = Path(__file__).resolve().parents[1]
# What `import bench.store` and the readers must never load: torch, the registries and the trainer.
HEAVY = ("torch", "sklearn", "bench.tasks", "bench.methods", "bench.models", "bench.train", "bench.data",
         "bench.registry")


def _loaded_heavy(script: str) -> list[str]:
    """Run `script` in a fresh interpreter, then list the HEAVY modules (or their submodules) it loaded."""
    probe = (f"{script}\nimport sys\nheavy = {HEAVY!r}\n"
             "print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_importing_the_store_and_the_config_loads_no_torch_and_no_registry() -> None:
    assert _loaded_heavy("import bench.store, bench.config") == []


def _record(cfg, status: str = "ok", metric_columns: tuple[str, ...] = (), **metrics: float) -> RunRecord:
    return RunRecord(config=cfg, status=status, error=None if status == "ok" else "boom", metrics=dict(metrics),
                     trajectory=[{"epoch": 0, "step": 1, "split": "train", "series": "loss", "value": 0.5}],
                     metric_columns=metric_columns)


@pytest.fixture
def mixed_store(tmp_path: Path) -> tuple[Path, list[str]]:
    """An ok run with every task's columns, and a failed one written without metric columns."""
    ok_cfg = make_config("synth-mosi", "smoke", method="concat", seed=0)
    failed_cfg = make_config("synth-mosi", "smoke", method="concat", seed=1)
    store.save_result(tmp_path, _record(ok_cfg, metric_columns=all_result_columns(), test_acc=61.5))
    store.save_result(tmp_path, store.failed_record(failed_cfg, "worker died"))
    return tmp_path, [ok_cfg.run_id, failed_cfg.run_id]


def test_the_readers_load_no_torch_and_no_registry(mixed_store: tuple[Path, list[str]]) -> None:
    runs, (ok_id, failed_id) = mixed_store
    script = (f"from bench import store\nruns = {str(runs)!r}\n"
              "rows, problems = store.read_results(runs)\nassert len(rows) == 2 and problems == []\n"
              f"assert store.read_row(runs, {ok_id!r})['test_acc'] == 61.5\n"
              f"assert store.stored_status(runs) == {{{ok_id!r}: 'ok', {failed_id!r}: 'failed'}}\n"
              f"assert store.completed_ids(runs) == {{{ok_id!r}}}\n"
              f"assert store.stored_metrics(store.read_row(runs, {ok_id!r})) == {{'test_acc': 61.5}}\n"
              "assert len(store.read_trajectories(runs)[0]) == 1\n"  # the failed record has no trajectory
              "store.read_predictions(runs); store.read_evaluations(runs); store.remove_leftovers(runs)\n"
              f"assert store.claim_holder(runs, {ok_id!r}) == ''")
    assert _loaded_heavy(script) == []


def test_decoding_a_stored_config_loads_no_torch(mixed_store: tuple[Path, list[str]]) -> None:
    runs, (ok_id, _) = mixed_store
    script = f"from bench import store\nstore.stored_config(store.read_row({str(runs)!r}, {ok_id!r}))"
    assert _loaded_heavy(script) == []


def test_a_folder_with_differing_columns_reads_as_their_union(mixed_store: tuple[Path, list[str]]) -> None:
    runs, (ok_id, failed_id) = mixed_store
    failed_columns = pq.read_schema(store.result_path(runs, failed_id)).names
    assert "test_acc" not in failed_columns  # a record without metric columns or metrics has none
    rows, problems = store.read_results(runs)
    assert problems == [] and sorted(rows["run_id"]) == sorted([ok_id, failed_id])
    ok_columns = pq.read_schema(store.result_path(runs, ok_id)).names
    assert list(rows.columns) == ok_columns  # the wider file's columns, in its order; none dropped
    by_id = rows.set_index("run_id")
    assert by_id.loc[ok_id, "test_acc"] == 61.5 and math.isnan(by_id.loc[failed_id, "test_acc"])
    assert by_id.loc[failed_id, "error"] == "worker died"


def test_the_metric_columns_come_from_the_record_else_from_its_metrics(tmp_path: Path) -> None:
    cfg = make_config("synth-mosi", "smoke", method="concat")
    declared = ("test_a", "test_b", "val_a")
    store.save_result(tmp_path, _record(cfg, metric_columns=declared, test_b=2.0, best_epoch=1))
    row = store.read_row(tmp_path, cfg.run_id)
    assert [c for c in row if c.startswith(("test_a", "test_b", "val_a"))] == list(declared)
    assert math.isnan(row["test_a"]) and row["test_b"] == 2.0 and math.isnan(row["val_a"]) and row["best_epoch"] == 1
    # Nothing declared: the test_/val_ metrics the record holds, in its order (epochs are their own columns).
    store.save_result(tmp_path, _record(cfg, val_x=1.0, best_epoch=2, other=3.0, test_y=4.0))
    names = pq.read_schema(store.result_path(tmp_path, cfg.run_id)).names
    assert [c for c in names if c.startswith(("test_", "val_")) and c not in ("test_noise", "test_dataset")] == [
        "val_x", "test_y"]
    assert "other" not in names and json.loads(store.read_row(tmp_path, cfg.run_id)["metrics_json"])["other"] == 3.0


def test_a_failed_record_takes_the_callers_metric_columns(tmp_path: Path) -> None:
    cfg = make_config("synth-mosi", "smoke", method="concat")
    store.save_result(tmp_path, store.failed_record(cfg, "boom", metric_columns=("test_acc", "val_acc")))
    row = store.read_row(tmp_path, cfg.run_id)
    assert row["status"] == "failed" and math.isnan(row["test_acc"]) and math.isnan(row["val_acc"])
    assert "test_mae" not in row


def test_the_predictions_schema_keeps_the_thesis_columns_and_adds_other_modalities() -> None:
    names = store.prediction_schema(("physio", "text")).names
    assert names == ["run_id", "split", "sample", "target", "prediction", "probs", "score", "prediction_text",
                     "prediction_audio", "prediction_vision", "prediction_physio"]
    assert store.prediction_schema(("vision",)).names == names[:-1]


def test_the_evaluations_schema_is_the_test_columns_of_the_result() -> None:
    schema = store.evaluation_schema(("test_acc", "val_acc", "test_huber"))
    assert schema.names == ["run_id", "kind", "sigma", "test_dataset", "test_acc", "test_huber"]


# -- a task registered after `import bench.store` ---------------------------------------------------

class CountingRegression(Regression):
    """Regression plus a metric whose value is known by hand: the number of samples scored."""

    name = "regression-counted"
    metric_directions: ClassVar[dict[str, str]] = {**Regression.metric_directions, "samples": "max"}
    valid_metrics = ("mae", "samples")

    def metrics(self, outputs, targets, modality_outputs: Mapping[str, object], split: SplitArrays) -> dict:
        return {**super().metrics(outputs, targets, modality_outputs, split), "samples": float(len(targets))}


@pytest.fixture
def counted_task(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The plugin task registered now (after the store's import), with concat declaring a form for it."""
    assert "test_samples" not in all_result_columns()
    monkeypatch.setattr(Concat, "tasks", (*Concat.tasks, CountingRegression.name))
    TASKS[CountingRegression.name] = CountingRegression
    try:
        yield CountingRegression.name
    finally:
        TASKS.pop(CountingRegression.name, None)


def test_a_task_registered_after_the_store_import_gets_its_columns(tiny, tmp_path: Path, counted_task: str) -> None:
    cfg = smoke_config(method="concat", task=counted_task, max_epochs=1, test_noise=(0.0, 1.0))
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok" and "test_samples" in result.metric_columns
    store.save_result(tmp_path, result)
    row = store.read_row(tmp_path, cfg.run_id)
    assert row["test_samples"] == 24.0 and row["val_samples"] == 24.0  # tiny: 24 test and 24 valid samples
    assert math.isnan(row["test_acc"])  # classification's columns stay, NaN for this task
    evaluations, problems = store.read_evaluations(tmp_path, [cfg.run_id])
    assert problems == [] and list(evaluations["sigma"]) == [0.0, 1.0]
    assert list(evaluations["test_samples"]) == [24.0, 24.0] and "val_samples" not in evaluations
    predictions = pq.read_schema(store.prediction_path(tmp_path, cfg.run_id)).names
    assert predictions[-3:] == ["prediction_text", "prediction_audio", "prediction_vision"]
    assert np.isfinite(row["test_mae"])
