"""The results store: row schema, atomic writes, readers that survive corrupt files, claims."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from bench import store
from bench.plan.resolve import make_config
from bench.store import RunRecord
from bench.tasks import all_result_columns


def _result(cfg, status="ok", **metrics):
    return RunRecord(config=cfg, status=status, error=None if status == "ok" else "boom",
                     metrics={"test_acc": 61.5, "test_loss": 80.25, "best_epoch": 3, "epochs": 7,
                              "test_acc_text": 60.0, "test_acc_vision": 50.0, "extra_score": 0.125, **metrics},
                     trajectory=[{"epoch": 0, "step": 5, "split": "train", "series": "ratio",
                                  "modality": "text", "value": 1.5},
                                 {"epoch": 1, "step": 10, "split": "valid", "series": "loss", "value": 0.7}],
                     state_dict={"w": torch.arange(4.0)} if status == "ok" else None,
                     wall_s=1.25, device="cpu", data_fingerprint="abc123", synthetic=True, torch_version="2.x",
                     metric_columns=all_result_columns())  # as bench.train declares them


@pytest.fixture
def ogm_cfg():
    return make_config("synth-mosi", "smoke", method="ogm", modalities=("text", "vision"),
                       method_params={"alpha": 0.5, "form": "shifted"}, seed=3)


def test_saved_row_has_every_contract_column(tmp_path, ogm_cfg):
    store.save_result(tmp_path, _result(ogm_cfg))
    rows, problems = store.read_results(tmp_path)
    assert problems == [] and len(rows) == 1
    row = rows.iloc[0]
    assert row["run_id"] == ogm_cfg.run_id and row["status"] == "ok"
    assert row["modalities"] == "text+vision" and row["method"] == "ogm" and row["seed"] == 3
    assert json.loads(row["method_params"]) == {"alpha": 0.5, "form": "shifted", "include_biases": False}
    assert row["param_alpha"] == 0.5 and row["param_form"] == "shifted" and math.isnan(row["param_ema"])
    assert row["test_acc"] == 61.5 and row["test_loss"] == 80.25
    assert math.isnan(row["test_acc_audio"])  # not a modality of this run
    assert row["best_epoch"] == 3 and row["epochs"] == 7 and bool(row["synthetic"]) is True
    assert json.loads(row["metrics_json"])["extra_score"] == 0.125
    assert row["package_version"] and row["git_commit"] and row["finished_at"].endswith("+00:00")
    assert store.stored_config(row) == ogm_cfg  # config_json round-trips exactly


def test_folder_read_with_pandas_keeps_the_fixed_columns(tmp_path, ogm_cfg):
    concat = make_config("synth-mosei", "smoke", method="concat", modalities=("audio", "vision"))
    store.save_result(tmp_path, _result(concat))
    store.save_result(tmp_path, _result(ogm_cfg))
    frame = pd.read_parquet(tmp_path / "results")
    assert len(frame) == 2
    assert {"param_alpha", "test_acc_text", "config_json", "synthetic"} <= set(frame.columns)
    assert sorted(frame["param_alpha"].fillna(-1)) == [-1, 0.5]
    traj = pd.read_parquet(tmp_path / "trajectories")
    assert list(traj.columns) == list(store.TRAJECTORY_COLUMNS) and len(traj) == 4


def test_trajectory_and_checkpoint_written_and_readable(tmp_path, ogm_cfg):
    store.save_result(tmp_path, _result(ogm_cfg))
    assert torch.equal(store.load_checkpoint(tmp_path, ogm_cfg.run_id)["w"], torch.arange(4.0))
    traj, problems = store.read_trajectories(tmp_path, [ogm_cfg.run_id, "0" * 16])
    assert problems == [] and list(traj["series"]) == ["ratio", "loss"]
    assert list(traj["modality"]) == ["text", ""] and list(traj["step"]) == [5, 10]


def test_failed_run_has_no_checkpoint_and_is_not_completed(tmp_path, ogm_cfg):
    store.save_result(tmp_path, _result(ogm_cfg, status="failed"))
    assert not store.has_checkpoint(tmp_path, ogm_cfg.run_id)
    assert store.completed_ids(tmp_path) == set()
    assert store.stored_status(tmp_path) == {ogm_cfg.run_id: "failed"}
    with pytest.raises(FileNotFoundError):
        store.load_checkpoint(tmp_path, ogm_cfg.run_id)


def test_rewrite_replaces_the_single_result_file(tmp_path, ogm_cfg):
    store.save_result(tmp_path, _result(ogm_cfg, status="failed"))
    store.save_result(tmp_path, _result(ogm_cfg))
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [f"{ogm_cfg.run_id}.parquet"]
    assert store.completed_ids(tmp_path) == {ogm_cfg.run_id}


def test_corrupt_foreign_and_temp_files_are_reported_or_ignored(tmp_path, ogm_cfg):
    store.save_result(tmp_path, _result(ogm_cfg))
    results = tmp_path / "results"
    (results / "deadbeefdeadbeef.parquet").write_bytes(b"PAR1 this is not parquet")
    pd.DataFrame({"x": [1]}).to_parquet(results / "foreign.parquet")
    (results / f".{ogm_cfg.run_id}.parquet.1234.tmp").write_bytes(b"partial")
    rows, problems = store.read_results(tmp_path)
    assert list(rows["run_id"]) == [ogm_cfg.run_id]
    assert len(problems) == 2
    assert any(p.startswith(str(results / "deadbeefdeadbeef.parquet")) and "unreadable" in p for p in problems)
    assert any("foreign.parquet" in p and "missing column" in p for p in problems)
    assert store.stored_status(tmp_path) == {ogm_cfg.run_id: "ok"}


def test_a_failed_write_leaves_neither_final_nor_temp_file(tmp_path, monkeypatch, ogm_cfg):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.save_result(tmp_path, _result(ogm_cfg))
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []


def test_save_refuses_a_result_of_another_config(tmp_path, ogm_cfg):
    record = _result(ogm_cfg)
    record.status = "weird"
    with pytest.raises(ValueError, match="status"):
        store.save_result(tmp_path, record)


def test_empty_store_reads_as_empty_frames(tmp_path):
    rows, problems = store.read_results(tmp_path)
    traj, _ = store.read_trajectories(tmp_path)
    # No file, no columns to unify: the store's readers know no task (reports add the metric columns).
    assert len(rows) == 0 and problems == [] and list(rows.columns) == ["run_id", "status"]
    assert len(traj) == 0 and list(traj.columns) == list(store.TRAJECTORY_COLUMNS)


def test_git_commit_is_cached_and_well_formed():
    commit = store.git_commit()
    assert commit == "unknown" or (len(commit) == 40 and int(commit, 16) >= 0)
    assert store.git_commit() is commit


# -- claims --------------------------------------------------------------------------------------

def test_claim_is_exclusive_until_released(tmp_path):
    first = store.try_claim(tmp_path, "run1")
    assert first is not None
    assert store.try_claim(tmp_path, "run1") is None  # our own pid is alive: not stale
    assert str(os.getpid()) in store.claim_holder(tmp_path, "run1")
    store.release_claim(first)
    second = store.try_claim(tmp_path, "run1")
    assert second is not None and second.token != first.token


def test_claim_of_a_dead_process_on_this_host_is_broken(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = store.claim_path(tmp_path, "run2")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": dead.pid, "host": store._host(), "time": time.time(), "token": "t"}))
    claim = store.try_claim(tmp_path, "run2")
    assert claim is not None and store.read_claim(path)["pid"] == os.getpid()


def test_claim_from_another_host_expires_only_after_the_ttl(tmp_path):
    path = store.claim_path(tmp_path, "run3")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "time": time.time(), "token": "t"}))
    assert store.try_claim(tmp_path, "run3", ttl_s=60) is None
    old = time.time() - 120
    os.utime(path, (old, old))
    assert store.try_claim(tmp_path, "run3", ttl_s=60) is not None


def test_refresh_and_release_only_touch_our_own_claim(tmp_path):
    claim = store.try_claim(tmp_path, "run4")
    old = time.time() - 500
    os.utime(claim.path, (old, old))
    assert store.refresh_claim(claim) and time.time() - claim.path.stat().st_mtime < 60
    stranger = store.Claim("run4", claim.path, token="not-ours")
    store.release_claim(stranger)
    assert claim.path.exists()
    assert not store.refresh_claim(stranger)


def test_every_registered_method_parameter_has_a_typed_column():
    import dataclasses

    from bench.methods import REGISTRY

    names = {f.name for cls in REGISTRY.values() for f in dataclasses.fields(cls.Params)}
    types = store.param_types()
    assert names <= set(types) and types["stage_epochs"] == store.pa.int64() and types["form"] == store.pa.string()
