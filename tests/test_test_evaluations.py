"""Test-time evaluations: seeded feature noise at valid steps, an out-of-domain test set, their storage,
the run ids they leave alone, the CLI's errors and the `bench table --evaluations` table."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from clitools import bench
from tiny import make_tiny_dataset, smoke_config

import bench.train as train_module
from bench import gridfile, store
from bench.config import ConfigError, RunConfig
from bench.data import load_dataset
from bench.data.types import SplitArrays
from bench.plan.resolve import make_config
from bench.report import evaluations as evals
from bench.train import add_feature_noise, noise_generator, train_run, transfer_mismatches

torch.set_num_threads(1)


# -- run ids ------------------------------------------------------------------------------------------

# The ids of configurations without test-time evaluations: the fields leave them as they were. Recomputed for
# run-id scheme 4 (the code identity moved every id; the evaluation fields still add nothing at their defaults).
MAIN_IDS = {
    ("synth-mosi", "smoke", "concat", ("text", "vision"), 0, "classification"): "d273ec40007b743b",
    ("synth-mosei", "quick", "ogm", ("audio", "vision"), 3, "regression"): "a7c6643f54bc0866",
}


@pytest.mark.parametrize("key", list(MAIN_IDS))
def test_run_ids_of_existing_configurations_are_those_of_main(key) -> None:
    dataset, profile, method, mods, seed, task = key
    cfg = make_config(dataset, profile, method=method, modalities=mods, seed=seed, task=task)
    assert cfg.run_id == MAIN_IDS[key]
    assert "test_noise" not in cfg.identity() and "test_dataset" not in cfg.identity()


def test_set_evaluations_are_part_of_the_run_id_and_round_trip() -> None:
    base = make_config("synth-mosi", "smoke", method="concat", modalities=("text", "vision"))
    noisy = base.replace(test_noise=(0.1, 0.5))
    zero = base.replace(test_noise=(0.0,))  # sigma 0 is set (a row is stored), so it is another run
    ood = base.replace(test_dataset="synth-mosei")
    ids = {base.run_id, noisy.run_id, zero.run_id, ood.run_id}
    assert len(ids) == 4
    assert noisy.identity()["test_noise"] == [0.1, 0.5]
    assert RunConfig.from_dict(noisy.to_dict()) == noisy and RunConfig.from_dict(base.to_dict()).run_id == base.run_id
    assert base.replace(test_noise=[1, 0.1, 1]).test_noise == (1.0, 0.1)  # floats, each once, order kept
    with pytest.raises(ConfigError, match="finite and >= 0"):
        base.replace(test_noise=(-0.5,))


# -- the noise ----------------------------------------------------------------------------------------

def test_noise_is_added_at_valid_steps_only_by_hand() -> None:
    # one modality, B=2 rows of T=3 steps x D=2 features; row 0 has 3 valid steps, row 1 only 1
    features = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)
    lengths = torch.tensor([3, 1])
    noisy = add_feature_noise({"audio": features}, {"audio": lengths}, 0.5, torch.Generator().manual_seed(4))
    draws = torch.randn((2, 3, 2), generator=torch.Generator().manual_seed(4))  # the same stream by hand
    added = noisy["audio"] - features
    torch.testing.assert_close(added[0], 0.5 * draws[0])  # every step of row 0
    torch.testing.assert_close(added[1, 0], 0.5 * draws[1, 0])  # row 1's one valid step
    assert torch.equal(noisy["audio"][1, 1:], features[1, 1:])  # its padding untouched


def test_noise_generator_depends_on_seed_and_sigma_only() -> None:
    def draw(seed: int, sigma: float) -> torch.Tensor:
        return torch.randn(5, generator=noise_generator(seed, sigma))

    assert torch.equal(draw(0, 0.5), draw(0, 0.5))
    assert not torch.equal(draw(0, 0.5), draw(1, 0.5))
    assert not torch.equal(draw(0, 0.5), draw(0, 1.0))


def _padded_longer(split: SplitArrays, extra: int) -> SplitArrays:
    """The split with `extra` more steps per modality (other step counts than training), half the rows
    using them as valid steps."""
    features, lengths = {}, {}
    for m, x in split.features.items():
        pad = np.ones((x.shape[0], extra, x.shape[2]), dtype=np.float32)
        features[m] = np.concatenate([x, pad], axis=1)
        longer = np.asarray(split.lengths[m]).copy()
        longer[::2] = x.shape[1] + extra
        lengths[m] = longer
    return dataclasses.replace(split, features=features, lengths=lengths)


def test_sigma_zero_equals_the_clean_metrics_and_the_ood_test_runs(tiny, monkeypatch) -> None:
    other = make_tiny_dataset(seed=5, name="tiny-ood")
    other = dataclasses.replace(other, test=_padded_longer(other.test, 3))
    monkeypatch.setattr(train_module, "load_ood_dataset", lambda cfg: other)
    cfg = smoke_config(method="concat", max_epochs=2, test_noise=(0.0, 1.0), test_dataset="tiny-ood")
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok"
    clean, loud, ood = result.evaluations
    assert (clean["kind"], clean["sigma"], loud["sigma"], ood["kind"], ood["test_dataset"]) == (
        "noise", 0.0, 1.0, "ood", "tiny-ood")
    for name in ("test_acc", "test_loss", "test_acc_text", "test_acc_vision"):
        assert clean[name] == result.metrics[name]
    assert loud["test_loss"] != result.metrics["test_loss"]
    assert math.isnan(ood["sigma"]) and 0.0 <= ood["test_acc"] <= 100.0
    again = train_run(cfg, dataset=tiny)
    assert again.evaluations[1] == loud  # seeded: the same config gives the same numbers


def test_a_mismatched_test_dataset_fails_before_training(tiny, monkeypatch) -> None:
    wider = make_tiny_dataset(seed=1, name="wide")
    features = {**wider.test.features, "text": np.zeros((wider.test.size, 5, 9), dtype=np.float32)}
    monkeypatch.setattr(train_module, "load_ood_dataset",
                        lambda cfg: dataclasses.replace(wider, test=dataclasses.replace(wider.test,
                                                                                        features=features)))
    monkeypatch.setattr(train_module, "build_trainer", lambda *a, **k: pytest.fail("trained"))
    cfg = smoke_config(method="concat", test_dataset="wide")
    with pytest.raises(ConfigError, match="text: 6 features in synth-mosi, 9 in wide"):
        train_run(cfg, dataset=tiny)


def test_mismatch_texts_of_the_surrogates() -> None:
    mosi, mosei = load_dataset("synth-mosi", "smoke"), load_dataset("synth-mosei", "smoke")
    assert transfer_mismatches(("text", "audio"), "classification", "synth-mosi", mosi, "synth-mosei", mosei) == [
        "audio: 5 features in synth-mosi, 74 in synth-mosei", "classes: 3 in synth-mosi, 7 in synth-mosei"]
    assert transfer_mismatches(("text",), "regression", "synth-mosi", mosi, "synth-mosei", mosei) == []
    no_vision = SimpleNamespace(test=SimpleNamespace(features={"text": np.zeros((1, 2, 768))}), modalities=("text",),
                                num_classes=3)
    assert transfer_mismatches(("text", "vision"), "regression", "synth-mosi", mosi, "x", no_vision) == [
        "vision: in synth-mosi, not in x"]


# -- the CLI and the store --------------------------------------------------------------------------

RUN = ("run", "--method", "unimodal", "--dataset", "synth-mosi", "--profile", "smoke", "--seeds", "0",
       "--no-progress", "--task", "regression")


def test_cli_mismatch_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    code = bench(*RUN, "--modalities", "audio", "--test-dataset", "synth-mosei", "--runs-dir", str(tmp_path))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "audio: 5 features in synth-mosi, 74 in synth-mosei" in err
    assert not (tmp_path / "results").exists()
    assert bench(*RUN, "--modalities", "text", "--test-noise", "0.1,-1", "--runs-dir", str(tmp_path)) == 2
    assert "--test-noise" in capsys.readouterr().err


def test_cli_stores_noise_and_ood_rows(tmp_path: Path) -> None:
    code = bench(*RUN, "--modalities", "text", "--test-dataset", "synth-mosei", "--test-noise", "0,0.5",
                 "--runs-dir", str(tmp_path))
    assert code == 0
    results, _ = store.read_results(tmp_path)
    row = results.iloc[0]
    assert row["test_dataset"] == "synth-mosei"
    rows, problems = store.read_evaluations(tmp_path)
    assert problems == [] and list(rows["run_id"]) == [row["run_id"]] * 3
    assert list(rows["kind"]) == ["noise", "noise", "ood"] and list(rows["test_dataset"]) == ["", "", "synth-mosei"]
    assert rows["test_mae"].iloc[0] == row["test_mae"]  # sigma 0 is the clean test split
    assert rows["test_mae"].notna().all() and rows["test_acc"].isna().all()  # the task's columns only


def test_cli_rerun_matches_the_stored_evaluations(tmp_path: Path, capsys) -> None:
    assert bench(*RUN, "--modalities", "text", "--test-noise", "0.5", "--runs-dir", str(tmp_path)) == 0
    run_id = store.read_results(tmp_path)[0]["run_id"].iloc[0]
    capsys.readouterr()
    assert bench("rerun", run_id, "--runs-dir", str(tmp_path)) == 0
    path = store.evaluation_path(tmp_path, run_id)
    rows = pd.read_parquet(path)
    rows.loc[0, "test_mae"] += 1.0
    rows.to_parquet(path)
    assert bench("rerun", run_id, "--runs-dir", str(tmp_path)) == 1
    assert "noise sigma=0.5 test_mae: stored" in capsys.readouterr().out


def test_grid_with_a_mismatched_test_dataset_exits_2_before_training(tmp_path: Path, capsys) -> None:
    grid = tmp_path / "ood.toml"
    grid.write_text('datasets = ["mosi"]\nprofile = "smoke"\nsource = "synth"\nmethods = ["concat"]\n'
                    'modalities = [["text", "vision"]]\nseeds = [0]\ntest_dataset = "mosei"\n')
    assert bench("grid", str(grid), "--runs-dir", str(tmp_path / "runs"), "--no-progress") == 2
    assert "vision: 20 features in synth-mosi, 35 in synth-mosei" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "results").exists()


def test_grid_file_takes_the_evaluations_and_shows_them() -> None:
    spec = gridfile.parse({"methods": ["concat"], "modalities": [["text", "vision"]], "test_noise": [0.5, 1],
                           "test_dataset": "mosei"}, "g.toml")
    assert spec.test_noise == (0.5, 1.0) and spec.test_dataset == "mosei"
    assert gridfile.parse(__import__("tomllib").loads(gridfile.to_toml(spec)), "g.toml") == dataclasses.replace(
        spec, where="g.toml")
    cells = gridfile.expand(dataclasses.replace(spec, source="synth", datasets=("mosi",)), "smoke", (0,))
    assert {(c.test_noise, c.test_dataset) for cell in cells for c in cell.configs} == {((0.5, 1.0), "synth-mosei")}
    with pytest.raises(ConfigError, match="test_noise"):
        gridfile.parse({"methods": ["concat"], "modalities": [["text"]], "test_noise": ["a"]}, "g.toml")


def test_table_command_shows_the_noise_column(tmp_path: Path, capsys) -> None:
    grid = tmp_path / "noisy.toml"
    grid.write_text('datasets = ["mosi"]\nprofile = "smoke"\nsource = "synth"\nmethods = ["concat"]\n'
                    'modalities = [["text", "vision"]]\nseeds = [0]\ntest_noise = [0.5]\n')
    runs = str(tmp_path / "runs")
    assert bench("grid", str(grid), "--runs-dir", runs, "--no-progress") == 0
    capsys.readouterr()
    assert bench("table", str(grid), "--runs-dir", runs, "--evaluations") == 0
    out = capsys.readouterr().out
    assert "| in-domain (clean) | noise σ=0.5 | n |" in out and "| text+vision | Late Concatenation" in out
    assert bench("table", str(grid), "--runs-dir", runs, "--evaluations", "--format", "latex") == 2


# -- the table --------------------------------------------------------------------------------------

def _cell(method: str, seeds: int = 3) -> SimpleNamespace:
    configs = tuple(make_config("synth-mosi", "smoke", method=method, modalities=("text", "vision"), seed=s,
                                test_noise=(0.5,), test_dataset="synth-mosi-shift") for s in range(seeds))
    return SimpleNamespace(table="g", dataset="synth-mosi", family="mosi", modalities="text+vision", method=method,
                           config_label="standard", optimizer="adam", configs=configs)


def test_evaluations_frame_means_and_significance_by_hand() -> None:
    concat, ogm = _cell("concat"), _cell("ogm")
    results, rows = [], []
    values = {"concat": ([50, 51, 52], [40, 41, 42], [30, 31, 32]), "ogm": ([50, 52, 54], [60, 61, 62], [31, 30, 32])}
    for cell in (concat, ogm):
        clean, noisy, ood = values[cell.method]
        for cfg, a, b, c in zip(cell.configs, clean, noisy, ood, strict=True):
            results.append({"run_id": cfg.run_id, "status": "ok", "test_acc": a})
            rows.append({"run_id": cfg.run_id, "kind": "noise", "sigma": 0.5, "test_dataset": "", "test_acc": b})
            rows.append({"run_id": cfg.run_id, "kind": "ood", "sigma": math.nan, "test_dataset": "synth-mosi-shift",
                         "test_acc": c})
    metric = evals.table_metric([concat, ogm])
    frame = evals.evaluations_frame([concat, ogm], pd.DataFrame(results), pd.DataFrame(rows), metric)
    got = frame.set_index(["method", "column"])
    assert got.loc[("ogm", "clean"), "mean"] == 52.0 and got.loc[("ogm", "clean"), "std"] == 2.0
    assert got.loc[("ogm", "noise σ=0.5"), "mean"] == 61.0 and got.loc[("ogm", "noise σ=0.5"), "mark"] == "‡"
    assert got.loc[("ogm", "OOD synth-mosi-shift"), "mark"] == ""  # 31 vs 31: no difference
    assert got.loc[("ogm", "clean"), "mark"] == ""  # 52 ± 2 vs 51 ± 1 over 3 seeds: not significant
    assert math.isnan(got.loc[("concat", "clean"), "p_value"])  # the baseline is not tested against itself
    text = evals.markdown(frame, "g", metric, synthetic=True)
    assert "| in-domain (clean) | noise σ=0.5 | OOD synth-mosi-shift | n |" in text
    row = "| text+vision | OGM | standard/adam | synth-mosi | 52.00 ± 2.00 | 61.00 ± 1.00‡ | 31.00 ± 1.00 | 3 |"
    assert row in text
    assert text.startswith("### SYNTHETIC SURROGATE")
