"""The defects of the reliability findings (D1-D14), each reproduced: bad input is one line and exit 2,
a fault is retried, or the number is right. Nothing here trains (the job function is a fake)."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_execute_fakes as fakes

from bench import cli, execute
from bench.config import ConfigError, RunConfig
from bench.params import check_value
from bench.plan.resolve import make_config


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "no-real-data"))
    monkeypatch.setattr(execute, "default_job_fn", lambda: fakes.fake_job)  # nothing trains


def _bench(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Exit code and stderr of the CLI run in-process."""
    try:
        cli.main(args)
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    return code, capsys.readouterr().err


def _one_line(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0], err


RUN = ["run", "--modalities", "text,vision", "--dataset", "synth-mosi", "--profile", "smoke"]


# -- D1: NaN and +-Infinity --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--method", "cggm", "--param", "lam=NaN"],
    ["--method", "cggm", "--param", "clip_norm=-Infinity"],
    ["--method", "pmr", "--param", "alpha=NaN"],
    ["--method", "ogm", "--param", "alpha=Infinity"],
    ["--method", "ogm", "--param", "alpha=1e400"],  # JSON reads it as inf
    ["--method", "concat", "--lr", "nan"],
    ["--method", "concat", "--lr", "inf"],
])
def test_non_finite_values_are_refused_in_one_line(args: list[str], tmp_path: Path, capsys) -> None:
    code, err = _bench([*RUN, *args, "--seeds", "0", "--runs-dir", str(tmp_path / "runs")], capsys)
    _one_line(code, err, "finite")
    assert not (tmp_path / "runs" / "results").exists()


def test_check_value_refuses_nan_and_inf_but_keeps_ints_as_floats() -> None:
    assert check_value("ogm", "alpha", 1) == 1.0 and isinstance(check_value("ogm", "alpha", 1), float)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ConfigError, match="finite"):
            check_value("ogm", "alpha", bad)


def test_a_config_with_a_nan_anywhere_is_refused() -> None:
    for change in ({"method_params": (("lam", float("nan")),)}, {"momentum": float("inf")},
                   {"group_lrs": (("text", float("nan")),)}, {"model_params": (("text_hidden", float("inf")),)}):
        with pytest.raises(ConfigError, match="finite"):
            RunConfig(**change)


def test_toml_nan_in_a_grid_file_is_refused(tmp_path: Path, capsys) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text('datasets=["synth-mosi"]\nprofile="smoke"\nmethods=["ogm"]\nmodalities=[["text","vision"]]\n'
                    'seeds=[0]\n[params.ogm]\nalpha=[0.5, nan]\n')
    code, err = _bench(["grid", str(grid), "--dry-run", "--runs-dir", str(tmp_path / "runs")], capsys)
    _one_line(code, err, "g.toml", "alpha", "finite")


# -- D2: seeds outside [0, 2**32) -------------------------------------------------------------------

@pytest.mark.parametrize("seeds", ["0,4294967296", "18446744073709551616", "-1"])
def test_seeds_outside_32_bits_are_refused(seeds: str, tmp_path: Path, capsys) -> None:
    code, err = _bench([*RUN, "--method", "concat", "--seeds", seeds, "--runs-dir", str(tmp_path)], capsys)
    _one_line(code, err, "2**32")


def test_largest_seed_is_accepted_and_the_next_is_not() -> None:
    assert RunConfig(seed=2**32 - 1).seed == 4294967295
    with pytest.raises(ConfigError, match="2\\*\\*32"):
        RunConfig(seed=2**32)
    with pytest.raises(ConfigError):
        RunConfig(seed=True)


def test_grid_file_seed_of_2_to_the_64_is_refused(tmp_path: Path, capsys) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text('datasets=["synth-mosi"]\nprofile="smoke"\nmethods=["concat"]\nmodalities=[["text","vision"]]\n'
                    'seeds=[18446744073709551616]\n')
    code, err = _bench(["grid", str(grid), "--dry-run", "--runs-dir", str(tmp_path / "runs")], capsys)
    _one_line(code, err, "g.toml", "seed")


# -- D7: model parameters typed like method parameters ----------------------------------------------

@pytest.mark.parametrize("value, words", [("64.5", "an integer"), ("true", "an integer"), ("NaN", "finite")])
def test_model_params_are_type_checked(value: str, words: str, tmp_path: Path, capsys) -> None:
    code, err = _bench([*RUN, "--method", "concat", "--model-param", f"text_hidden={value}", "--seeds", "0",
                        "--runs-dir", str(tmp_path)], capsys)
    _one_line(code, err, "text_hidden", words)


def test_model_param_of_the_right_type_is_kept() -> None:
    cfg = make_config("synth-mosi", "smoke", method="concat", modalities=("text", "vision"),
                      model_params={"text_hidden": 64})
    assert dict(cfg.model_params)["text_hidden"] == 64
    assert dict(RunConfig.from_dict(cfg.to_dict()).model_params)["text_hidden"] == 64
