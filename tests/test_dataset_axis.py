"""A dataset is one declared spec, end to end through the CLI (issue 23's "done means"):

- a CH-SIMS-schema file with no spec exits 2 with one line naming what to declare;
- at MMSA's path it matches the registered `sims` spec, trains concat on regression and stores SIMS's
  metrics (Acc-2/3/5, F1, MAE, Corr) in the result row;
- a spec-declared file with a modality named `physio` trains and its rows are keyed `physio+text`;
- `bench run --explain` says which layer set each field, and that a dataset without a recipe block runs on
  the named generic block.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clitools import bench
from tiny import physio_record, sims_record

SIMS_METRICS = ("test_acc2", "test_acc3", "test_acc5", "test_f1", "test_mae", "test_corr")


def _write(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(record, protocol=4))
    return path




def test_an_undeclared_sims_file_exits_2_in_one_line(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "my_sims.pkl", sims_record())
    code = bench("run", "--method", "concat", "--modalities", "text,audio", "--dataset", str(path),
                 "--task", "regression", "--profile", "smoke", "--seeds", "0", "--runs-dir", str(tmp_path / "runs"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "undeclared dataset file" in err and "my_sims.spec.toml" in err
    assert not (tmp_path / "runs" / "results").exists()


@pytest.mark.slow
def test_a_sims_file_trains_concat_on_regression_and_stores_sims_metrics(tmp_path: Path) -> None:
    path = _write(tmp_path / "SIMS" / "Processed" / "unaligned_39.pkl", sims_record(sizes=(30, 10, 10)))
    runs = tmp_path / "runs"
    code = bench("run", "--method", "concat", "--modalities", "text,audio,vision", "--dataset", str(path),
                 "--task", "regression", "--profile", "smoke", "--seeds", "0", "--runs-dir", str(runs),
                 "--executor", "inline", "--no-progress")
    assert code == 0
    row = pd.read_parquet(runs / "results").iloc[0]
    assert row["status"] == "ok" and row["label_rule"] == "sims3"
    assert all(np.isfinite(row[name]) for name in SIMS_METRICS)
    assert 0.0 <= row["test_acc3"] <= 100.0 and row["test_mae"] <= 2.0  # scores and predictions clip to [-1, 1]
    assert "test_acc7" not in row.index or pd.isna(row["test_acc7"])  # MOSI's Acc-7 is not SIMS's metric


@pytest.mark.slow
def test_a_declared_physio_modality_trains_and_keys_its_rows_physio_text(tmp_path: Path) -> None:
    data = tmp_path / "wear"
    path = _write(data / "wearables.pkl", physio_record((24, 8, 8), seed=5))
    spec = tmp_path / "specs" / "wearables.toml"  # not beside the file: given with --dataset-spec
    spec.parent.mkdir()
    spec.write_text(f'name = "wearables"\nlike = "mosi"\ndata = "{path}"\nmodalities = ["physio", "text"]\n'
                    'dev_size = 2\n[profile_sizes]\nsmoke = [16, 8, 8]\nquick = [24, 8, 8]\nfull = [24, 8, 8]\n')
    runs = tmp_path / "runs"
    code = bench("--dataset-spec", str(spec), "run", "--method", "concat", "--modalities", "text,physio",
                 "--dataset", "wearables", "--task", "regression", "--profile", "smoke", "--seeds", "0",
                 "--runs-dir", str(runs), "--workers", "2", "--no-progress")
    assert code == 0
    row = pd.read_parquet(runs / "results").iloc[0]
    assert row["status"] == "ok" and row["modalities"] == "physio+text" and row["dataset"] == "wearables"
    predictions = pd.read_parquet(runs / "predictions")
    assert "prediction_physio" in predictions.columns
    shutil.rmtree(data)  # a stored run is found again by its id without reading the data
    assert bench("ls", "--runs-dir", str(runs)) == 0


def test_explain_names_the_generic_recipe_for_a_dataset_without_a_block(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path / "SIMS" / "Processed" / "unaligned_39.pkl", sims_record())
    code = bench("run", "--method", "concat", "--modalities", "text,audio", "--dataset", str(path), "--task",
                 "regression", "--profile", "smoke", "--explain")
    out = capsys.readouterr().out
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines["batch_size"].split()[1] == "16" and "dataset recipe (generic, none for sims)" in lines["batch_size"]
    assert "'sims3'" in lines["label_rule"] and "resolved" in lines["label_rule"]
    assert "model_params.text_hidden" in lines and "generic" in lines["model_params.text_hidden"]


def test_explain_shows_each_layer_of_a_thesis_cell(capsys) -> None:
    code = bench("run", "--method", "ogm", "--modalities", "text,vision", "--dataset", "synth-mosei",
                 "--optimizer", "sgd", "--dev-set", "--lr", "0.002", "--profile", "smoke", "--explain")
    out = capsys.readouterr().out
    assert code == 0
    layer = {line.split()[0]: line.split("  ")[-1].strip() for line in out.splitlines()[1:]}
    assert layer["batch_size"] == "dataset recipe (mosei)"  # MOSEI's 32
    assert layer["max_epochs"] == "profile (smoke)"
    assert layer["method_params.alpha"] == "method recipe (ogm)"
    assert layer["dev_set"] == "user" and layer["ratio_every"] == "configuration (dev_set)"  # --dev-set: both
    assert layer["lr"] == "user" and layer["momentum"] == "dataset recipe (mosei)"
    assert layer["model_params.text_out"] == "dataset recipe (mosei)"


def test_an_edited_spec_file_moves_the_data_fingerprint_and_so_the_run_id(tmp_path: Path) -> None:
    from bench.data import data_fingerprint
    from bench.data.cache import known_sha256
    from bench.plan.resolve import plan

    def make_config(dataset: str, profile: str, **fields):  # a cell as bench run plans it (data fingerprint)
        return plan(dataset, fields.pop("method"), fields.pop("modalities"), profile=profile, **fields).config

    path = _write(tmp_path / "wear" / "wearables.pkl", physio_record((24, 8, 8), seed=5))
    spec = tmp_path / "wear" / "wearables.spec.toml"
    spec.write_text('like = "mosi"\nmodalities = ["physio", "text"]\ndev_size = 2\n')
    first = make_config(str(path), "smoke", method="concat", modalities="physio,text", task="regression")
    assert first.data_version == data_fingerprint(str(path), "smoke") != known_sha256(path)
    spec.write_text('like = "mosi"\nmodalities = ["physio", "text"]\ndev_size = 3\n')  # another dev split
    edited = make_config(str(path), "smoke", method="concat", modalities="physio,text", task="regression")
    assert edited.data_version != first.data_version and edited.run_id != first.run_id
    sims = _write(tmp_path / "SIMS" / "Processed" / "unaligned_39.pkl", sims_record())
    assert data_fingerprint(str(sims), "smoke") == known_sha256(sims)  # a built-in spec: the file's hash, as always
