"""Reproducibility on the CPU: the same RunConfig and seed give bit-identical results in separate processes;
every stored row carries what an exact rerun needs; a rerun on changed data says so."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from clitools import bench as _bench
from conftest import tiny_split
from tiny import declare

import bench
from bench import store
from bench.data import load_dataset
from bench.data.registry import names_text
from bench.plan.resolve import make_config

torch.set_num_threads(1)

TRAIN_SCRIPT = """
import pickle, sys
import torch
torch.set_num_threads(1)
from bench.config import RunConfig
from bench.train import train_run
cfg = RunConfig.from_dict(pickle.loads(bytes.fromhex(sys.argv[1])))
result = train_run(cfg)
with open(sys.argv[2], "wb") as out:
    pickle.dump({"status": result.status, "metrics": result.metrics, "trajectory": result.trajectory,
                 "state_dict": result.state_dict}, out)
"""


def _train_in_subprocesses(cfg: Any, outputs: list[Path]) -> list[dict[str, Any]]:
    """Train `cfg` once in each of len(outputs) fresh Python processes, at the same time."""
    payload = pickle.dumps(cfg.to_dict()).hex()
    procs = [subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, payload, str(out)], env=dict(os.environ),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for out in outputs]
    logs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs), logs
    return [pickle.loads(out.read_bytes()) for out in outputs]


@pytest.mark.slow
def test_two_processes_give_bit_identical_metrics_trajectories_and_weights(tmp_path: Path) -> None:
    # OGM-GE draws Gaussian noise from the run's generator: randomness beyond initialisation and shuffling.
    cfg = make_config("synth-mosi", "smoke", method="ogm_ge", modalities=("audio", "vision"),
                      method_params={"alpha": 0.5}, seed=3)
    load_dataset("synth-mosi", "smoke")  # build the cache once, not in both processes at once
    first, second = _train_in_subprocesses(cfg, [tmp_path / "a.pkl", tmp_path / "b.pkl"])
    assert first["status"] == second["status"] == "ok"
    assert first["metrics"] == second["metrics"]  # exact float equality, every metric
    assert first["trajectory"] == second["trajectory"] and len(first["trajectory"]) > 10
    assert first["state_dict"].keys() == second["state_dict"].keys()
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    assert any(row["series"] == "coeff" for row in first["trajectory"])  # the modulation really ran


# -- provenance and rerun -----------------------------------------------------------------------------------



def _write_data(path: Path, shift: float = 0.0) -> str:
    """A small MMSA-schema file (train 40 / valid 16 / test 16); returns its SHA-256."""
    record = {split: {k: v for k, v in tiny_split(n, seed).items() if not k.startswith("_true_")}
              for seed, (split, n) in enumerate((("train", 40), ("valid", 16), ("test", 16)))}
    record["test"]["regression_labels"] = np.clip(record["test"]["regression_labels"] + shift, -3, 3)
    path.write_bytes(pickle.dumps(record, protocol=4))
    declare(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stored_rows_carry_provenance_and_a_rerun_on_changed_data_is_refused(tmp_path: Path, capsys,
                                                                             monkeypatch) -> None:
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "no-real-data"))
    data, runs = tmp_path / "custom.pkl", tmp_path / "runs"
    sha = _write_data(data)
    assert _bench("run", "--method", "concat", "--modalities", "text,vision", "--dataset", str(data), "--profile",
                  "smoke", "--seeds", "0,1", "--runs-dir", str(runs), "--no-progress") == 0
    rows, problems = store.read_results(runs)
    assert problems == [] and len(rows) == 2 and set(rows["status"]) == {"ok"}
    for _, row in rows.iterrows():
        cfg = store.stored_config(row)
        assert cfg.run_id == row["run_id"] and cfg.dataset == str(data) and cfg.data_version == sha
        assert row["package_version"] == bench.__version__ and row["git_commit"] == store.git_commit() != ""
        assert row["torch_version"] == torch.__version__ and row["data_fingerprint"] == sha
        assert row["torch_threads"] == 1 and bool(row["synthetic"]) is False
    run_id = rows["run_id"].iloc[0]
    capsys.readouterr()
    assert _bench("rerun", run_id, "--runs-dir", str(runs)) == 0
    assert "every metric matches exactly" in capsys.readouterr().out
    new_sha = _write_data(data, shift=0.5)  # the file changes after the run was stored
    assert _bench("rerun", run_id, "--runs-dir", str(runs)) == 2
    err = capsys.readouterr().err
    assert err == (f"error: cannot rerun {run_id}: its data changed since it was trained ({data} was {sha[:12]}, "
                   f"is now {new_sha[:12]}); an exact rerun needs the original data\n")
    data.unlink()
    assert _bench("rerun", run_id, "--runs-dir", str(runs)) == 2
    assert capsys.readouterr().err == f"error: {data}: no such file (dataset names: {names_text()}, or a path)\n"
