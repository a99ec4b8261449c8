"""Grid files: every list crossed, one-line errors naming the file and the key, `bench grid --show`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from clitools import bench

from bench import api, gridfile, store
from bench.presets import expand, thesis_config

GRID = """\
datasets = ["mosi"]
profile = "smoke"
task = "classification"
model = "late_fusion"
methods = ["concat", "ogm"]
modalities = [["text", "vision"], ["audio", "vision"]]
optimizers = ["adam"]
dev_set = false
seeds = [0, 1]

[params.ogm]
alpha = [0.1, 0.5]
"""


pytestmark = pytest.mark.usefixtures("fake_training")


@pytest.fixture()
def grid_file(tmp_path: Path) -> Path:
    path = tmp_path / "my-grid.toml"
    path.write_text(GRID)
    return path


def test_every_list_is_crossed(grid_file):
    cells = api.cells(str(grid_file))
    runs = [(c.method, c.modalities, dict(cfg.method_params).get("alpha"), cfg.seed)
            for c in cells for cfg in c.configs]
    assert len(runs) == 12 and len({cfg.run_id for c in cells for cfg in c.configs}) == 12
    assert sum(1 for r in runs if r[0] == "concat") == 4  # 2 pairs x 2 seeds
    assert sorted({r[2] for r in runs if r[0] == "ogm"}) == [0.1, 0.5] and sum(r[0] == "ogm" for r in runs) == 8
    ogm = next(c for c in cells if c.method == "ogm" and c.setting == (("alpha", 0.1),))
    # Each run is the thesis's configuration with the file's parameters on top: the same run id as bench run's.
    assert ogm.configs[1].run_id == thesis_config("synth-mosi", "ogm", ("text", "vision"), profile="smoke", seed=1,
                                                  method_params={"alpha": 0.1}).run_id
    assert ogm.config_label == "standard [alpha=0.1]" and ogm.base_label == "standard" and ogm.settings_tried == 2
    assert {c.table for c in cells} == {"my-grid"}


def test_grid_trains_a_file_and_table_and_ls_read_it(grid_file, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert bench("grid", str(grid_file), "--runs-dir", str(runs), "--no-progress") == 0
    assert "my-grid (smoke): 6 cells, 12 runs incl. dependencies" in capsys.readouterr().out
    rows, _ = store.read_results(runs)
    assert len(rows) == 12 and sorted(rows[rows["method"] == "ogm"]["param_alpha"].unique()) == [0.1, 0.5]
    assert bench("ls", "--runs-dir", str(runs), "--preset", str(grid_file)) == 0
    out = capsys.readouterr().out
    assert "grid file my-grid (smoke): 12 runs incl. dependencies, 12 ok, 0 failed, 0 missing" in out
    assert bench("table", str(grid_file), "--runs-dir", str(runs)) == 0
    out = capsys.readouterr().out
    assert "Grid 'my-grid'" in out and out.count("| Standard training [alpha=0.5] | OGM |") == 2  # both blocks
    assert bench("grid", str(grid_file), "--runs-dir", str(runs), "--method", "concat", "--dry-run") == 0
    assert "4 jobs (2 cells, 0 dependency runs): 4 already stored ok" in capsys.readouterr().out


def _one_line_error(code: int, err: str) -> str:
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


BASE = 'methods = ["ogm"]\nmodalities = [["text", "vision"]]\n'
BAD_FILES = {
    "unknown_key": (BASE + 'method = "ogm"\n', "unknown key 'method'"),
    "unknown_method": ('methods = ["nope"]\nmodalities = [["text", "vision"]]\n', "methods: unknown method 'nope'"),
    "unknown_parameter": (BASE + "[params.ogm]\nbeta = [1.0]\n", "params.ogm.beta: unknown parameter(s) beta"),
    "parameter_type": (BASE + '[params.ogm]\nalpha = ["high"]\n', "params.ogm.alpha: parameter alpha of method "
                                                                  "'ogm' takes a number, got 'high'"),
    "bool_for_float": (BASE + "[params.ogm]\nalpha = true\n", "params.ogm.alpha:"),
    "params_of_absent_method": (BASE + "[params.agm]\nalpha = 1.0\n", "params.agm: method 'agm' is not in methods"),
    "parameter_value": (BASE + '[params.ogm]\nform = ["official", "weird"]\n', "[params.ogm: form=weird]"),
    "seeds_type": (BASE + 'seeds = "0,1"\n', "seeds: expected a list of integers in [0, 2**32) = "
                                             "[0, 4294967295], got '0,1'"),
    "flat_modalities": ('methods = ["ogm"]\nmodalities = ["text", "vision"]\n', "modalities: expected a list of "
                                                                                 "modality lists"),
    "unknown_modality": ('methods = ["ogm"]\nmodalities = [["text", "smell"]]\n', "unknown modality 'smell'"),
    "dev_set_type": (BASE + 'dev_set = "yes"\n', "dev_set: expected true, false or a list of them"),
    "task": (BASE + 'task = "ranking"\n', "task: unknown task 'ranking'; registered: "),
    "task_form": (BASE + 'task = "regression"\n', "methods: ogm has no regression form"),
    "model": (BASE + 'model = "early_fusion"\n', "(a model of your own: list its file under plugins = [...])"),
    "model_capabilities": (BASE + 'model = "s2lif"\n', "needs the model capabilities"),
    "task_params": (BASE + '[task_params]\nlos = "mse"\n', "unknown option(s) los for task"),
    "model_params": (BASE + '[model_params]\ntext_hiden = 8\n', "unknown parameter(s) text_hiden for model"),
    "plugins": (BASE + 'plugins = ["missing.py"]\n', "plugins: plugin "),
    "profile": (BASE + 'profile = "huge"\n', "profile: unknown value 'huge'"),
    "missing_methods": ('modalities = [["text", "vision"]]\n', "missing key 'methods'"),
    "not_toml": ('methods = ["ogm"\n', "not valid TOML"),
    "modality_count": ('methods = ["unimodal"]\nmodalities = [["text", "vision"]]\n', "needs exactly 1 modalities"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_grid_files_exit_2_with_one_line_naming_the_file_and_the_key(case, tmp_path, capsys):
    text, message = BAD_FILES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    for command in ("grid", "table"):
        error = _one_line_error(bench(command, str(path), "--runs-dir", str(tmp_path / "runs")),
                                capsys.readouterr().err)
        assert error.startswith(f"error: {path}: ") and message in error, error
    assert not (tmp_path / "runs" / "results").exists()


def test_a_missing_grid_file_and_a_filter_outside_the_file_exit_2(grid_file, tmp_path, capsys):
    _one_line_error(bench("grid", str(tmp_path / "absent.toml")), capsys.readouterr().err)
    error = _one_line_error(bench("grid", str(grid_file), "--method", "agm", "--dry-run"), capsys.readouterr().err)
    assert "unknown method 'agm'" in error and "choose from concat, ogm" in error


def _show(*args: str, capsys) -> str:
    assert bench("grid", "--show", *args) == 0
    return capsys.readouterr().out


def _run_ids(cells) -> set[str]:
    return {cfg.run_id for cell in cells for cfg in cell.configs}


def test_show_writes_a_preset_that_round_trips_exactly(tmp_path, capsys):
    text = _show("table-6.4", "--profile", "smoke", "--seeds", "0,1", capsys=capsys)
    path = tmp_path / "t64.toml"
    path.write_text(text)
    assert "This file trains exactly the runs of table-6.4." in text
    preset = _run_ids(expand("table-6.4", profile="smoke", seeds=(0, 1)))
    assert _run_ids(api.cells(str(path))) == preset and len(preset) == 3 * 2 * 2 * 2 * 2


def test_show_of_table_6_10_says_which_rows_a_flat_file_cannot_express(tmp_path, capsys):
    text = _show("table-6.10", "--profile", "smoke", "--seeds", "0,1", capsys=capsys)
    path = tmp_path / "t610.toml"
    path.write_text(text)
    preset_cells = expand("table-6.10", profile="smoke", seeds=(0, 1))
    from_file = _run_ids(api.cells(str(path)))
    assert from_file < _run_ids(preset_cells)  # a subset, nothing outside the preset
    listed = re.findall(r"^#   - (\S+) (\S+) (\S+)/(\S+) \(mosi, mosei\): (.+)$", text, flags=re.MULTILINE)
    assert len(listed) == 6 and f"cannot express {len(listed)} row(s)" in text
    assert ("text+vision", "pmr", "standard", "adam") in {row[:4] for row in listed}
    assert any("sets ema=0.1 on top of the thesis's parameters" in row[4] for row in listed)
    # What the file lacks is exactly the listed rows.
    left_out = {cfg.run_id for c in preset_cells for cfg in c.configs
                if (c.modalities, c.method, c.config_label, c.optimizer) in {row[:4] for row in listed}}
    assert _run_ids(preset_cells) - from_file == left_out and len(from_file) == 8 * 2 * 2 * 2


def test_show_of_a_grid_file_parses_back_to_the_same_grid(grid_file, capsys):
    text = _show(str(grid_file), capsys=capsys)
    again = gridfile.parse(gridfile.tomllib.loads(text), "shown", default_name="my-grid")
    assert again.replace(where="x") == gridfile.load(grid_file).replace(where="x")
    assert "alpha = [0.1, 0.5]" in text


def test_show_refuses_filters(capsys):
    error = _one_line_error(bench("grid", "--show", "table-6.10", "--method", "ogm"), capsys.readouterr().err)
    assert "--show writes the whole grid" in error
