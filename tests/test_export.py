"""`bench export tensorboard / csv`: the files read back against the parquet store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from clitools import bench
from test_report_helpers import fake_cell, fake_trajectory, store_cell

from bench.export import run_folder, run_folders, scalar_tag
from bench.store import read_results, read_trajectories


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OGM (2 seeds) and concat (1 seed) on synth-mosi, OGM with a dev set on synth-mosei; fake trajectories."""
    runs = tmp_path_factory.mktemp("export-store")
    store_cell(runs, fake_cell("ogm", seeds=(0, 1)), [60, 61], trajectory=fake_trajectory)
    store_cell(runs, fake_cell("concat", seeds=(0,)), [50], trajectory=fake_trajectory)
    store_cell(runs, fake_cell("ogm", dataset="synth-mosei", seeds=(1,), dev_set=True), [30],
               trajectory=fake_trajectory)
    return runs


def accumulator(folder: Path):
    """Every event of one run folder, none sampled away."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("events.out.tfevents.*"))


def test_tensorboard_export_reads_back(store: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tb"
    assert bench("export", "tensorboard", "--runs-dir", str(store), "--out", str(out)) == 0
    assert f"written: {out} (4 runs)" in capsys.readouterr().out
    results, _ = read_results(store)
    folders = {str(p.relative_to(out)) for p in out.glob("*/*/*/*/*")}
    dev = results[results["dev_set"]].iloc[0]
    assert f"synth-mosei/ogm/audio+vision/adam-dev/seed1-{dev['run_id'][:8]}" in folders
    assert len(folders) == 4
    ogm = results[(results["method"] == "ogm") & (results["seed"] == 1) & ~results["dev_set"]].iloc[0]
    folder = out / f"synth-mosi/ogm/audio+vision/adam/seed1-{ogm['run_id'][:8]}"
    traj, _ = read_trajectories(store, [ogm["run_id"]])
    events = accumulator(folder)
    expected_tags = {scalar_tag(*t) for t in zip(traj["split"], traj["series"], traj["modality"], strict=True)}
    assert set(events.Tags()["scalars"]) == expected_tags
    assert {"train/ratio/audio", "valid/loss", "valid/acc/vision"} <= expected_tags
    for tag, (split, series, modality) in {"train/ratio/audio": ("train", "ratio", "audio"),
                                           "valid/loss": ("valid", "loss", "")}.items():
        rows = traj[(traj["split"] == split) & (traj["series"] == series) & (traj["modality"] == modality)]
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == rows["step"].tolist()
        assert [s.value for s in scalars] == pytest.approx(rows["value"].tolist(), rel=1e-6)  # float32
    assert [s.step for s in events.Scalars("valid/loss")] == [10, 20, 30, 40]  # the step ending each epoch
    config = events.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert f"| run_id | {ogm['run_id']} |" in config and "| method | ogm |" in config


def test_tensorboard_hparams_and_rerun_replaces_events(store: Path, tmp_path: Path) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "tb"
    assert bench("export", "tensorboard", "--runs-dir", str(store), "--out", str(out), "--method", "concat") == 0
    assert bench("export", "tensorboard", "--runs-dir", str(store), "--out", str(out), "--method", "concat") == 0
    (folder,) = [p for p in out.glob("*/*/*/*/*")]
    assert len(event_files(folder)) == 1  # the second export replaced the first one's file
    content = accumulator(folder).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["method"].string_value == "concat" and hparams["seed"].number_value == 0
    assert hparams["dev_set"].bool_value is False and hparams["status"].string_value == "ok"


def test_export_selection_by_method_and_dataset_family(store: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tb"
    assert bench("export", "tensorboard", "--runs-dir", str(store), "--out", str(out), "--dataset", "mosi",
                 "--method", "ogm") == 0
    assert sorted(p.parent.parent.parent.parent.name for p in out.glob("*/*/*/*/*")) == ["synth-mosi"] * 2
    assert bench("export", "csv", "--runs-dir", str(store), "--out", str(tmp_path / "csv"),
                 "--method", "agm") == 2
    assert capsys.readouterr().err.strip() == (f"error: no stored runs under {store} match the selection "
                                               "(--method agm)")
    assert not (tmp_path / "csv").exists()


def test_tensorboard_missing_exits_2_naming_the_extra(store: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    for name in [n for n in sys.modules if n == "tensorboard" or n.startswith("tensorboard.")]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: the import fails
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    assert bench("export", "tensorboard", "--runs-dir", str(store), "--out", str(tmp_path / "tb")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: bench export tensorboard needs the tensorboard package: pip install 'bench[tensorboard]'"]
    assert not (tmp_path / "tb").exists()


def test_csv_export_matches_the_store(store: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "csv"
    assert bench("export", "csv", "--runs-dir", str(store), "--out", str(out), "--no-progress") == 0
    assert "csv: 4/4 runs" in capsys.readouterr().out
    results, _ = read_results(store)
    traj, _ = read_trajectories(store)
    flat = pd.read_csv(out / "results.csv")
    assert len(flat) == len(results) == 4
    own = {c for c in results.columns if not c.startswith("param_")}
    assert own <= set(flat.columns)
    # the parameter columns: one per parameter the exported runs set (per method where two share a name)
    set_params = {f"param_{name}" for text in results["method_params"] for name in json.loads(text)}
    assert set(flat.columns) - own == set_params
    by_id = flat.set_index("run_id")
    for row in results.to_dict("records"):
        assert by_id.loc[row["run_id"], "test_acc"] == row["test_acc"]
        assert by_id.loc[row["run_id"], "method"] == row["method"]
    rows = pd.read_csv(out / "trajectories.csv", keep_default_na=False)
    assert len(rows) == len(traj) > 0
    assert list(rows.columns[:7]) == ["run_id", "dataset", "method", "modalities", "optimizer", "dev_set", "seed"]
    dev_id = results.loc[results["dev_set"], "run_id"].iloc[0]
    mine = rows[rows["run_id"] == dev_id]
    assert len(mine) == int((traj["run_id"] == dev_id).sum())
    assert set(mine["dataset"]) == {"synth-mosei"} and set(mine["dev_set"]) == {True} and set(mine["seed"]) == {1}
    stored = traj[traj["run_id"] == dev_id]
    assert mine["value"].astype(float).tolist() == stored["value"].tolist()  # exact: CSV keeps full precision
    assert mine["step"].tolist() == stored["step"].tolist()


def test_run_folders_are_sanitised_and_unique() -> None:
    row = {"dataset": "/data/my set/x.pkl", "method": "ogm", "modalities": "text+vision", "optimizer": "sgd",
           "dev_set": True, "seed": 3, "run_id": "0123456789abcdef"}
    assert run_folder(row) == Path("data_my_set_x.pkl/ogm/text+vision/sgd-dev/seed3-01234567")
    assert run_folder({**row, "dataset": "..", "method": "a/b"}).parts[:2] == ("_", "a_b")
    clash = pd.DataFrame([row, {**row, "run_id": "0123456799999999"}, {**row, "seed": 4, "run_id": "fedcba9876543210"}])
    folders = run_folders(clash)
    assert sorted(p.name for p in folders.values()) == ["seed3-0123456789abcdef", "seed3-0123456799999999",
                                                        "seed4-fedcba98"]


@pytest.mark.parametrize("kind", ["tensorboard", "csv"])
def test_export_help_renders(kind: str, capsys) -> None:
    assert bench("export", kind, "--help") == 0
    assert "source of truth" in " ".join(capsys.readouterr().out.split())
