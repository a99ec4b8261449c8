"""`bench run / grid / ls / rerun` through bench.cli.main: output, exit codes, conflicting flags."""

from __future__ import annotations

import pytest
import test_execute_fakes as fakes
from clitools import bench

from bench import execute, presets, store
from bench.cli_runs import metric_differences, parse_modality_filter, parse_params, parse_window
from bench.config import ConfigError
from bench.plan.resolve import make_config


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "no-real-data"))
    for name in ("BENCH_FAKE_LOG", "BENCH_FAKE_DELAY", "BENCH_FAKE_FAIL_SEEDS", "BENCH_FAKE_EXIT_SEEDS",
                 "BENCH_FAKE_METHODS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(execute, "default_job_fn", lambda: fakes.fake_job)




def test_run_prints_each_seed_and_the_mean(tmp_path, capsys):
    code = bench("run", "--method", "ogm", "--modalities", "text,vision", "--dataset", "mosi", "--profile",
                 "smoke", "--seeds", "0,1,2", "--runs-dir", str(tmp_path), "--param", "alpha=0.7")
    out = capsys.readouterr().out
    assert code == 0
    assert "(synthetic surrogate)" in out and "labels sign" in out
    assert "params {'alpha': 0.7, 'form': 'official', 'include_biases': False}" in out  # every parameter resolved
    seed_lines = [line for line in out.splitlines() if line.startswith("seed ")]
    assert [line.split()[1:3] for line in seed_lines] == [["0", "ok"], ["1", "ok"], ["2", "ok"]]
    assert "acc 42.00" in seed_lines[0] and "epochs 2" in seed_lines[0]
    # fake accuracies 42, 43, 44: mean 43, sample std 1
    assert "mean ± std over 3 ok seed(s) (ddof=1): acc 43.00 ± 1.00  loss 57.00 ± 1.00" in out
    rows, _ = store.read_results(tmp_path)
    assert set(rows["param_alpha"]) == {0.7} and set(rows["dataset"]) == {"synth-mosi"}


def test_run_exits_1_when_a_seed_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_FAKE_FAIL_SEEDS", "1")
    code = bench("run", "--method", "concat", "--modalities", "audio,vision", "--dataset", "synth-mosei",
                 "--profile", "smoke", "--seeds", "0,1", "--runs-dir", str(tmp_path))
    out = capsys.readouterr().out
    assert code == 1
    assert "seed 1  failed" in out and "planned failure for seed 1" in out
    assert "over 1 ok seed(s)" in out and "acc 42.00 ± -" in out


def test_run_uses_thesis_defaults_then_flags(tmp_path, capsys):
    code = bench("run", "--method", "agm", "--modalities", "audio,vision", "--dataset", "synth-mosei",
                 "--optimizer", "sgd", "--dev-set", "--window", "1:3", "--seeds", "4", "--profile", "smoke",
                 "--runs-dir", str(tmp_path))
    assert code == 0
    rows, _ = store.read_results(tmp_path)
    row = rows.iloc[0]
    assert (row["optimizer"], row["lr"], row["param_alpha"], bool(row["dev_set"]), row["ratio_every"]) == (
        "sgd", 5e-3, 2.0, True, 2)
    assert (row["window_start"], row["window_end"], row["seed"]) == (1, 3, 4)


@pytest.mark.parametrize("args, message", [
    (["grid", "table-6.10", "--dry-run", "--retry-failed"], "conflicts with --retry-failed"),
    (["grid", "table-6.10", "--executor", "inline", "--workers", "3"], "conflicts with --workers 3"),
    (["grid", "table-6.10", "--partition", "gpu"], "--partition only applies to --executor slurm"),
    (["grid", "table-99"], "unknown preset"),
    (["grid", "table-6.3", "--method", "agm"], "unknown method"),
    (["run", "--method", "nope", "--modalities", "text,vision"], "unknown method"),
    (["run", "--method", "concat", "--modalities", "text,smell"], "unknown modality"),
    (["run", "--method", "concat", "--modalities", "text"], "needs 2 to 8 modalities"),
    (["run", "--method", "ogm", "--modalities", "text,vision", "--param", "beta=1"], "beta"),
    (["run", "--method", "ogm", "--modalities", "text,vision", "--window", "7"], "--window"),
    (["run", "--method", "concat", "--modalities", "text,vision", "--dataset", "/nonexistent/x.pkl"],
     "neither"),
    (["rerun", "0123456789abcdef"], "no stored result"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    code = bench(*args, "--runs-dir", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "results").exists()  # nothing trained


def test_grid_dry_run_lists_jobs_and_trains_nothing(tmp_path, capsys):
    code = bench("grid", "table-6.10", "--dry-run", "--runs-dir", str(tmp_path))
    out = capsys.readouterr().out
    assert code == 0
    assert "250 jobs (44 cells, 30 dependency runs): 0 already stored ok, 0 stored failures, 250 to train" in out
    assert "(dependency)" in out and "synthetic surrogate" in out
    assert not (tmp_path / "results").exists()


def test_grid_trains_filtered_cells_and_reports_stored_runs(tmp_path, capsys):
    args = ["grid", "table-6.10", "--profile", "smoke", "--dataset", "mosi", "--method", "concat,ensemble",
            "--modalities", "text+vision", "--seeds", "0,1", "--runs-dir", str(tmp_path), "--no-progress"]
    assert bench(*args) == 0
    out = capsys.readouterr().out
    assert "8 runs: 8 ok, 0 failed, 0 already stored" in out  # 2 concat + 2 ensemble + 4 unimodal
    assert bench(*args, "--dry-run") == 0
    assert "8 already stored ok, 0 stored failures, 0 to train" in capsys.readouterr().out


def test_ls_counts_reports_corrupt_files_and_what_a_preset_lacks(tmp_path, capsys):
    assert bench("run", "--method", "concat", "--modalities", "text,vision", "--profile", "smoke", "--seeds",
                 "0,1", "--runs-dir", str(tmp_path)) == 0
    bad = tmp_path / "results" / "ffffffffffffffff.parquet"
    bad.write_bytes(b"garbage")
    capsys.readouterr()
    assert bench("ls", "--runs-dir", str(tmp_path), "--preset", "table-6.10", "--profile", "smoke",
                 "--dataset", "mosi", "--seeds", "0,1") == 0
    out = capsys.readouterr().out
    assert "2 stored run(s)" in out and "synth-mosi" in out and "concat" in out
    assert f"corrupt: {bad}: unreadable parquet" in out
    assert "50 runs incl. dependencies, 2 ok, 0 failed, 48 missing" in out
    assert "lacks 6.10 synth-mosi text+vision ogm standard/adam: seeds 0,1" in out
    assert "text+vision concat" not in out.split("missing")[1]  # the stored cell is complete


def test_rerun_exact_match_and_mismatch(tmp_path, capsys, monkeypatch):
    assert bench("run", "--method", "concat", "--modalities", "text,vision", "--profile", "smoke", "--seeds",
                 "0", "--runs-dir", str(tmp_path)) == 0
    run_id = presets.thesis_config("synth-mosi", "concat", ("text", "vision"), profile="smoke", seed=0).run_id
    capsys.readouterr()
    assert bench("rerun", run_id, "--runs-dir", str(tmp_path)) == 0
    assert "every metric matches exactly" in capsys.readouterr().out
    monkeypatch.setattr(execute, "default_job_fn", lambda: fakes.drifting_job)
    assert bench("rerun", run_id, "--runs-dir", str(tmp_path)) == 1
    out = capsys.readouterr().out
    assert "rerun differs" in out and "test_acc: stored 42.0 -> rerun" in out
    assert "test_loss" not in out  # only the metric that changed is listed


def test_parsers():
    assert parse_window("0:4") == (0, 4) and parse_window("2:") == (2, -1)
    with pytest.raises(ConfigError):
        parse_window("x:y")
    assert parse_params(["alpha=1", "form=shifted", "include_biases=true"], "ogm") == {
        "alpha": 1.0, "form": "shifted", "include_biases": True}
    assert isinstance(parse_params(["alpha=1"], "ogm")["alpha"], float)  # same run id as alpha=1.0
    assert parse_modality_filter("text+vision,audio+vision") == ["text+vision", "audio+vision"]
    assert parse_modality_filter("vision,text") == ["text+vision"]
    assert metric_differences({"a": 1.0, "b": float("nan")}, {"a": 1.0, "b": float("nan")}) == []
    assert metric_differences({"a": 1.0}, {"a": 1.5, "c": 2.0}) == [
        "a: stored 1.0 -> rerun 1.5 (delta +0.5)", "c: stored None -> rerun 2.0"]


@pytest.mark.slow
def test_rerun_of_a_real_training_run_matches_exactly(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    from bench.train import train_run

    monkeypatch.setattr(execute, "default_job_fn", lambda: train_run)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert bench("run", "--method", "ogm_ge", "--modalities", "audio,vision", "--profile", "smoke",
                     "--seeds", "0", "--runs-dir", str(tmp_path), "--no-progress") == 0
        run_id = store.read_results(tmp_path)[0]["run_id"].iloc[0]
        assert bench("rerun", run_id, "--runs-dir", str(tmp_path)) == 0
    finally:
        torch.set_num_threads(threads)
    assert "every metric matches exactly" in capsys.readouterr().out


def test_ctrl_c_exits_130_and_a_rerun_resumes(tmp_path, capsys, monkeypatch):
    def interrupted(cfg, deps=None, device="cpu"):
        if cfg.seed == 1:
            raise KeyboardInterrupt
        return fakes.fake_job(cfg, deps, device)

    monkeypatch.setattr(execute, "default_job_fn", lambda: interrupted)
    args = ["run", "--method", "concat", "--modalities", "text,vision", "--profile", "smoke", "--seeds", "0,1,2",
            "--runs-dir", str(tmp_path), "--no-progress"]
    assert bench(*args) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert len(store.completed_ids(tmp_path)) == 1
    monkeypatch.setattr(execute, "default_job_fn", lambda: fakes.fake_job)
    assert bench(*args) == 0
    assert "3 ok seed(s)" in capsys.readouterr().out


def test_ls_warns_when_a_dataset_mixes_data_versions(tmp_path, capsys):
    first, second = fakes.fake_job(make_config("synth-mosi", "smoke", seed=0)), fakes.fake_job(
        make_config("synth-mosi", "smoke", seed=1))
    second.data_fingerprint = "another-version"
    store.save_result(tmp_path, first)
    store.save_result(tmp_path, second)
    assert bench("ls", "--runs-dir", str(tmp_path)) == 0
    assert "warning: synth-mosi runs were trained on 2 different data versions" in capsys.readouterr().out
