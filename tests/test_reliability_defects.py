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


def test_numbers_too_large_to_store_are_refused() -> None:
    with pytest.raises(ConfigError, match="out of range"):
        check_value("ogm", "alpha", 10**400)  # no float holds it
    with pytest.raises(ConfigError, match="out of range"):
        check_value(*_an_int_param(), 2**63)  # the store's int64 column does not hold it


def _an_int_param() -> tuple[str, str]:
    """(method, parameter) of the first integer method parameter."""
    from bench.methods import REGISTRY
    from bench.params import param_kinds

    return next((m, name) for m in sorted(REGISTRY) for name, kind in param_kinds(m).items() if kind == "int")


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


# -- D4: a grid file states its run count and refuses past a limit ----------------------------------

def _grid_file(tmp_path: Path, body: str, methods: str = '["concat"]') -> Path:
    path = tmp_path / "g.toml"
    path.write_text(f'datasets=["synth-mosi"]\nprofile="smoke"\nmethods={methods}\nmodalities=[["text","vision"]]\n'
                    + body)
    return path


def test_a_million_run_grid_is_refused_at_once_naming_the_count(tmp_path: Path, capsys) -> None:
    seeds = list(range(1000))
    alphas = [round(0.001 * (i + 1), 3) for i in range(1000)]
    grid = _grid_file(tmp_path, f"seeds={seeds}\n[params.ogm]\nalpha={alphas}\n", '["ogm"]')
    code, err = _bench(["grid", str(grid), "--dry-run", "--runs-dir", str(tmp_path / "runs")], capsys)
    _one_line(code, err, "1,000,000 runs", "--yes")


def test_run_count_is_the_product_of_the_lists() -> None:
    from bench import gridfile

    spec = gridfile.parse({"datasets": ["synth-mosi"], "methods": ["concat", "ogm"],
                           "modalities": [["text", "vision"], ["audio", "vision"]], "optimizers": ["adam", "sgd"],
                           "params": {"ogm": {"alpha": [0.1, 0.2, 0.3], "form": "shifted"}}}, "test")
    # 2 modality pairs x 2 optimizers x (1 concat + 3 ogm settings) x 5 seeds
    assert gridfile.run_count(spec, range(5)) == 2 * 2 * 4 * 5
    gridfile.MAX_RUNS, old = 50, gridfile.MAX_RUNS
    try:
        with pytest.raises(ConfigError, match="80 runs, more than 50"):
            gridfile.check_run_count(spec, range(5))
        with gridfile.confirmed():
            assert gridfile.check_run_count(spec, range(5)) == 80
    finally:
        gridfile.MAX_RUNS = old


def test_yes_builds_a_large_grid(tmp_path: Path, capsys, monkeypatch) -> None:
    from bench import gridfile

    monkeypatch.setattr(gridfile, "MAX_RUNS", 3)
    monkeypatch.setattr(gridfile, "ANNOUNCE_RUNS", 3)
    grid = _grid_file(tmp_path, "seeds=[0, 1, 2, 3]\n")
    code, err = _bench(["grid", str(grid), "--dry-run", "--runs-dir", str(tmp_path / "runs")], capsys)
    _one_line(code, err, "4 runs, more than 3")
    code, err = _bench(["grid", str(grid), "--dry-run", "--yes", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 0 and "4 runs; building" in err


# -- D8: the grid's name names files: no path, no control character ----------------------------------

@pytest.mark.parametrize("name", ["../../../escaped", "a/b", "a\\\\b", "a\\u0000b", "..", ".hidden"])
def test_unsafe_grid_names_are_refused(name: str, tmp_path: Path, capsys) -> None:
    grid = _grid_file(tmp_path, f'seeds=[0]\nname="{name}"\n')
    code, err = _bench(["report", str(grid), "--runs-dir", str(tmp_path / "runs"), "--out-dir",
                        str(tmp_path / "reports" / "a")], capsys)
    _one_line(code, err, "name", "not a plain name")
    assert not list(tmp_path.rglob("*-report.html"))


def test_a_plain_grid_name_is_kept() -> None:
    from bench import gridfile

    spec = gridfile.parse({"name": "my sweep-1", "methods": ["concat"], "modalities": [["text", "vision"]]}, "t")
    assert spec.name == "my sweep-1"


# -- D9: grid-file keys applied, duplicates seen ----------------------------------------------------------

def test_one_and_one_point_zero_are_one_value(tmp_path: Path, capsys) -> None:
    grid = _grid_file(tmp_path, "seeds=[0]\n[params.ogm]\nalpha=[1, 1.0]\n", '["ogm"]')
    code, err = _bench(["grid", str(grid), "--dry-run", "--runs-dir", str(tmp_path / "runs")], capsys)
    _one_line(code, err, "params.ogm.alpha", "listed twice")


def test_the_model_key_is_applied(tmp_path: Path) -> None:
    from bench import gridfile

    spec = gridfile.parse({"methods": ["concat", "cpsl"], "modalities": [["text", "vision"]],
                           "datasets": ["synth-mosi"]}, "t")
    cells = gridfile.expand(spec, "smoke", (0,))
    assert {c.method: c.configs[0].model for c in cells} == {"concat": "late_fusion", "cpsl": "cpsl"}
    forced = spec.replace(model="late_fusion", methods=("cpsl",))
    with pytest.raises(ConfigError, match="cpsl_parts.*late_fusion"):
        gridfile.expand(forced, "smoke", (0,))


# -- D14: messages of grid files ---------------------------------------------------------------------

def test_a_method_without_the_grid_task_says_so(tmp_path: Path, capsys) -> None:
    path = tmp_path / "g.toml"
    path.write_text('datasets=["synth-mosi"]\ntask="classification"\nmethods=["sati"]\n'
                    'modalities=[["text","vision","audio"]]\n')
    code, err = _bench(["grid", str(path), "--dry-run", "--runs-dir", str(tmp_path / "runs")], capsys)
    _one_line(code, err, "g.toml", "sati has no classification form")


def test_an_unknown_test_dataset_names_the_file_and_key(tmp_path: Path, capsys) -> None:
    grid = _grid_file(tmp_path, 'seeds=[0]\ntest_dataset="nonexistent"\n')
    code, err = _bench(["grid", str(grid), "--dry-run", "--runs-dir", str(tmp_path / "runs")], capsys)
    _one_line(code, err, "g.toml: test_dataset: nonexistent")


# -- D10: OSErrors on the store or an output path: one line ------------------------------------------

def _concat_run(runs: Path) -> list[str]:
    return [*RUN, "--method", "concat", "--seeds", "0", "--runs-dir", str(runs)]


def test_runs_dir_that_is_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, err = _bench(_concat_run(afile), capsys)
    _one_line(code, err, "afile")
    code, err = _bench(_concat_run(afile / "below"), capsys)
    _one_line(code, err, "afile")


@pytest.mark.parametrize("errno_name, exit_code", [("ENOSPC", 1), ("EIO", 1), ("EROFS", 2)])
def test_an_oserror_while_claiming_is_one_line(errno_name: str, exit_code: int, tmp_path: Path, capsys,
                                               monkeypatch) -> None:
    import errno
    import os

    from bench import store

    def refuse(*args, **kwargs):
        number = getattr(errno, errno_name)
        raise OSError(number, os.strerror(number), str(tmp_path / "claims"))

    monkeypatch.setattr(store, "try_claim", refuse)
    code, err = _bench(_concat_run(tmp_path / "runs"), capsys)
    lines = err.strip().splitlines()
    assert code == exit_code and len(lines) == 1 and lines[0].startswith("error: [Errno"), err


def test_report_out_dir_that_is_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    grid = _grid_file(tmp_path, "seeds=[0]\n")
    assert _bench(["grid", str(grid), "--runs-dir", str(tmp_path / "runs")], capsys)[0] == 0
    code, err = _bench(["report", str(grid), "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(afile)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "afile" in err, err


def test_an_output_file_survives_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    import errno

    from bench import store
    from bench.store import atomic

    out = tmp_path / "t.md"
    store.write_output(out, "old table\n")

    def full(path: Path, data: bytes) -> None:
        path.write_bytes(data[:3])  # the disk fills up part-way through
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "write_synced", full)
    with pytest.raises(OSError, match="No space"):
        store.write_output(out, "new table\n")
    assert out.read_text() == "old table\n" and [p.name for p in tmp_path.iterdir()] == ["t.md"]


def test_an_output_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    from bench import store

    with pytest.raises(IsADirectoryError, match="give a file name"):
        store.write_output(tmp_path, b"x")


# -- D7: a plugin model's output width and undeclared capabilities, on the first batch --------------------

CONTRACT_PLUGIN = '''
import dataclasses

import torch
from torch import nn

from bench.methods.base import Method, register as register_method
from bench.models import register
from bench.models.late_fusion import LateFusion


class Padded(nn.Module):
    """Late fusion with `extra` zero logits appended (a wrong output width), and no per-modality outputs."""

    def __init__(self, inner, extra):
        super().__init__()
        self.inner, self.extra = inner, extra

    def forward(self, batch):
        out = self.inner(batch)
        pad = out.logits.new_zeros(out.logits.shape[0], self.extra)
        return dataclasses.replace(out, logits=torch.cat([out.logits, pad], dim=1), modality_logits={})


@register
class WideTest(LateFusion):
    name = "wide_test"
    capabilities = frozenset({"encoders", "features", "linear_head", "single_modality"})

    @classmethod
    def defaults(cls, recipe):
        return {f"{m}_{part}": 8 for m in ("text", "audio", "vision") for part in ("hidden", "out")}

    @classmethod
    def build(cls, spec):
        return Padded(LateFusion.build(spec), 5)


@register
class NarrowTest(WideTest):
    name = "narrow_test"

    @classmethod
    def build(cls, spec):
        return Padded(LateFusion.build(spec), 0)


@register_method
class ReadsModalityLogits(Method):
    name = "reads_modality_logits_test"

    def loss(self, model, batch, state):
        out = model(batch)
        extra = sum(logits.sum() * 0 for logits in out.modality_logits.values())
        return state.task.loss(out.logits, batch.labels) + extra, {}
'''


@pytest.fixture()
def contract_plugin(tmp_path: Path):
    from plugintools import plugin_loaded

    path = tmp_path / "contract_plugin.py"
    path.write_text(CONTRACT_PLUGIN)
    with plugin_loaded(path):
        yield


def _train(method: str, model: str):
    from bench.train import train_run

    cfg = make_config("synth-mosi", "smoke", method=method, modalities=("text", "vision"), model=model,
                      max_epochs=1)
    return train_run(cfg)


@pytest.mark.slow
def test_a_model_with_the_wrong_output_width_fails_on_the_first_batch(contract_plugin) -> None:
    with pytest.raises(ConfigError, match=r"wide_test.*\(\d+, 8\).*needs 3 output"):
        _train("concat", "wide_test")


@pytest.mark.slow
def test_reading_an_undeclared_capability_fails_naming_it(contract_plugin) -> None:
    with pytest.raises(ConfigError, match="reads ModelOutput.modality_logits.*declare requires = {'modality_outputs'}"):
        _train("reads_modality_logits_test", "narrow_test")


@pytest.mark.slow
def test_a_method_that_reads_nothing_undeclared_trains_on_the_narrow_model(contract_plugin) -> None:
    result = _train("concat", "narrow_test")
    assert result.status == "ok" and len(result.predictions["test"]["probs"][0]) == 3


# -- D11: a plugin's SystemExit or KeyboardInterrupt --------------------------------------------------------

@pytest.mark.parametrize("body, shown", [("import sys\nsys.exit(0)\n", "SystemExit: 0"),
                                         ("raise SystemExit('msg')\n", "SystemExit: msg"),
                                         ("raise KeyboardInterrupt\n", "KeyboardInterrupt")])
def test_a_plugin_that_exits_at_import_is_refused(body: str, shown: str, tmp_path: Path, capsys) -> None:
    import bench.methods

    plugin = tmp_path / "exits.py"
    plugin.write_text(body)
    before = dict(bench.methods.REGISTRY)
    code, err = _bench(["--plugin", str(plugin), *_concat_run(tmp_path / "runs")], capsys)
    _one_line(code, err, "exits.py", "import failed", shown)
    assert dict(bench.methods.REGISTRY) == before and not (tmp_path / "runs").exists()


# -- D13: a test split of another feature width, duplicate sample ids ---------------------------------------

def _data_file(tmp_path: Path, change) -> Path:
    import pickle

    import numpy as np
    from conftest import tiny_split
    from tiny import declare

    record = {split: {k: v for k, v in tiny_split(n, seed).items() if not k.startswith("_true_")}
              for seed, (split, n) in enumerate((("train", 12), ("valid", 6), ("test", 6)))}
    change(record, np)
    path = tmp_path / "data" / "bad.pkl"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(pickle.dumps(record, protocol=4))
    declare(path)
    return path


def _wider_test_vision(record, np) -> None:
    vision = record["test"]["vision"]
    record["test"]["vision"] = np.concatenate([vision, np.ones_like(vision[:, :, :1])], axis=2)


def _duplicate_ids(record, np) -> None:
    record["train"]["id"][3] = record["train"]["id"][0]


@pytest.mark.parametrize("change, words", [(_wider_test_vision, "split 'test', key 'vision': feature width"),
                                           (_duplicate_ids, "split 'train', key 'id': 1 id(s) used more than once")])
def test_data_check_refuses_inconsistent_splits(change, words: str, tmp_path: Path, capsys) -> None:
    path = _data_file(tmp_path, change)
    code, err = _bench(["data", "check", str(path)], capsys)
    _one_line(code, err, words)
    code, err = _bench(["run", "--method", "concat", "--modalities", "text,vision", "--dataset", str(path),
                        "--profile", "smoke", "--seeds", "0", "--runs-dir", str(tmp_path / "runs")], capsys)
    _one_line(code, err, words)
    assert not (tmp_path / "runs" / "results").exists()


# -- D14: small things ----------------------------------------------------------------------------------------

def test_a_lone_comma_is_not_no_noise(tmp_path: Path, capsys) -> None:
    code, err = _bench([*_concat_run(tmp_path / "runs"), "--test-noise", ","], capsys)
    _one_line(code, err, "test noise")


def test_a_parameter_whose_name_has_another_type_elsewhere_keeps_its_value(tmp_path: Path) -> None:
    from plugintools import plugin_loaded

    from bench import store
    from bench.store.record import RunRecord

    plugin = tmp_path / "text_alpha.py"
    plugin.write_text('''
from dataclasses import dataclass

from bench.methods.base import Method, register


@register
class TextAlpha(Method):
    name = "text_alpha_test"

    @dataclass(frozen=True)
    class Params:
        alpha: str = "low"
''')
    with plugin_loaded(plugin):
        cfg = make_config("synth-mosi", "smoke", method="text_alpha_test", modalities=("text", "vision"),
                          method_params={"alpha": "high"})
        columns = store.result_columns(RunRecord(config=cfg, status="ok"))
    assert columns["param_alpha"][0] is None  # the typed column (a float: ogm's alpha) cannot hold it
    assert columns["param_alpha_text"][0] == "high"
