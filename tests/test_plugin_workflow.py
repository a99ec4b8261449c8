"""Issue 26: a researcher's own method, model and task, first-class in every command, and never a stale result.

The newcomer's loop end to end (write a method and a model plugin, list them, check them, put them in a grid
file with plugins, model, task and a sweep, run, table with significance and --tune, edit the plugin and rerun:
it retrains), and one test per numbered point of the issue.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from clitools import bench
from plugintools import ROOT, registries_restored

from bench import api, plugins, store
from bench.config import ConfigError
from bench.plan.resolve import make_config

METHOD_PLUGIN = '''
from dataclasses import dataclass

from bench.methods import Method, register


@dataclass(frozen=True)
class ScaledParams:
    scale: float = 1.0


@register
class ScaledConcat(Method):
    """The task's loss times `scale` (a stand-in for a researcher's formula)."""

    name = "scaled_concat"
    Params = ScaledParams
    tasks = ("classification", "regression")
    requires = frozenset({"features"})

    def loss(self, model, batch, state):
        features = model.encode(batch)
        return state.params.scale * FACTOR * state.task.loss(model.fuse(features), batch.labels), {}


FACTOR = 1.0
'''

MODEL_PLUGIN = '''
from dataclasses import dataclass

import torch
from torch import nn

from bench.batch import ModelOutput
from bench.models import Model, register
from bench.models.base import masked_mean, padding_mask


@dataclass(frozen=True)
class PoolParams:
    width: int = 8


class PoolNet(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.modalities = spec.modalities
        self.width = int(PoolParams(**dict(spec.params)).width)
        self.encoders = nn.ModuleDict({m: nn.Linear(spec.input_dim(m), self.width) for m in spec.modalities})
        self.head = nn.Linear(self.width * len(spec.modalities), spec.output_size)

    def feature_dim(self, modality):
        return self.width

    def encode(self, batch):
        out = {}
        for m in self.modalities:
            x = batch.inputs[m]
            out[m] = torch.tanh(self.encoders[m](masked_mean(x, padding_mask(batch.lengths[m], x.shape[1], x.device))))
        return out

    def fuse(self, features):
        return self.head(torch.cat([features[m] for m in self.modalities], dim=1))

    def modality_logits(self, features):
        n, start, out = len(self.modalities), 0, {}
        for m in self.modalities:
            w = self.head.weight.detach()[:, start:start + self.width]
            out[m] = features[m].detach() @ w.T + self.head.bias.detach() / n * BIAS_SHARE
            start += self.width
        return out

    def forward(self, batch):
        features = self.encode(batch)
        return ModelOutput(logits=self.fuse(features)[:, :WIDTH_CUT], features=features,
                           modality_logits=self.modality_logits(features))


BIAS_SHARE = 1.0
WIDTH_CUT = None


@register
class MeanPool(Model):
    name = "mean_pool"
    Params = PoolParams
    capabilities = frozenset({"features", "modality_outputs", "single_modality"})

    @classmethod
    def build(cls, spec):
        return PoolNet(spec)
'''


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    with registries_restored():
        yield


def write(path: Path, text: str, **replace: str) -> Path:
    for old, new in replace.items():
        text = text.replace(old, new)
    path.write_text(textwrap.dedent(text))
    return path


def grid_file(folder: Path, method: Path, model: Path) -> Path:
    return write(folder / "mine.toml", f'''
        name = "mine"
        plugins = ["{method.name}", "{model.name}"]
        datasets = ["synth-mosi"]
        profile = "smoke"
        task = "classification"
        model = "mean_pool"
        methods = ["concat", "scaled_concat"]
        modalities = [["text", "vision"]]
        seeds = [0, 1]

        [params.scaled_concat]
        scale = [0.5, 1.0]

        [model_params]
        width = [4, 8]
        ''')


def test_the_newcomers_loop_end_to_end(tmp_path: Path, capsys) -> None:
    method = write(tmp_path / "scaled.py", METHOD_PLUGIN)
    model = write(tmp_path / "pool.py", MODEL_PLUGIN)
    runs = tmp_path / "runs"
    # list them: each with what it offers, its version and its source file
    assert bench("--plugin", str(method), "--plugin", str(model), "models") == 0
    listing = capsys.readouterr().out
    entry = listing[listing.index("mean_pool"):]
    assert "features, modality_outputs, single_modality" in entry and f"plugin {model.resolve()}" in entry
    # check them: the model's contracts and smoke runs hold
    assert bench("check", str(model)) == 0
    assert "checks hold" in capsys.readouterr().out
    # the grid file: plugins, model, task and two sweeps (model width, method scale), on every row
    grid = grid_file(tmp_path, method, model)
    assert bench("grid", str(grid), "--runs-dir", str(runs), "--no-progress") == 0
    rows, _ = store.read_results(runs)
    assert set(rows["model"]) == {"mean_pool"} and set(rows["status"]) == {"ok"}
    assert sorted(json.loads(t)["width"] for t in rows["model_params"].unique()) == [4, 8]
    assert len(rows) == 2 * (1 + 2) * 2  # widths x (concat + 2 scales) x seeds
    mine = rows[rows["method"] == "scaled_concat"]
    recorded = {entry["path"] for text in mine["plugin_files"] for entry in json.loads(text)}
    assert recorded == {str(method.resolve()), str(model.resolve())}
    # the table: significance against concat and ranks, as on late_fusion; --tune picks a setting per cell
    capsys.readouterr()
    assert bench("table", str(grid), "--runs-dir", str(runs)) == 0
    table = capsys.readouterr().out
    assert "scaled_concat" in table and "no Late Concatenation (concat) baseline cell matches" not in table
    tested = re.search(r"correction over the table's (\d+) tests \((\d+) against the baseline", table)
    assert tested is not None and int(tested.group(2)) == 4 * 2  # 4 scaled_concat rows x 2 metrics
    assert bench("table", str(grid), "--runs-dir", str(runs), "--tune") == 0
    assert "scale=" in capsys.readouterr().out
    # edit the plugin: the same command trains the method's runs anew (concat's stay stored)
    write(method, METHOD_PLUGIN, **{"FACTOR = 1.0": "FACTOR = 2.0"})
    assert bench("grid", str(grid), "--runs-dir", str(runs), "--no-progress") == 0
    after, _ = store.read_results(runs)
    assert len(after) == len(rows) + len(mine)  # every scaled_concat run again, nothing else
    assert bench("ls", "--runs-dir", str(runs)) == 0
    assert f"{len(mine)} stored run(s) came from older code" in capsys.readouterr().out


def test_a_plugin_edit_moves_the_run_id_and_the_trainer_refuses_the_old_plan(tmp_path: Path) -> None:
    path = write(tmp_path / "scaled.py", METHOD_PLUGIN)
    plugins.activate([str(path)])
    before = make_config("synth-mosi", "smoke", method="scaled_concat")
    code = dict(before.code)
    assert code["method"].startswith("scaled_concat@1+") and code["model"] == "late_fusion@1"
    write(path, METHOD_PLUGIN, **{"FACTOR = 1.0": "FACTOR = 3.0"})
    plugins.load(path)  # a process that sees the edited file
    after = make_config("synth-mosi", "smoke", method="scaled_concat")
    assert after.run_id != before.run_id
    assert plugins.code_changes(before) == [f"method {code['method']} -> {dict(after.code)['method']}"]
    from tiny import make_tiny_dataset

    from bench.train import build_trainer

    with pytest.raises(ConfigError, match="planned for other code"):
        build_trainer(before, make_tiny_dataset())


def test_a_bumped_version_moves_the_run_ids_of_a_built_in_method(monkeypatch) -> None:
    from bench.methods import REGISTRY

    before = make_config("synth-mosi", "smoke", method="ogm")
    monkeypatch.setattr(REGISTRY["ogm"], "version", 2)
    after = make_config("synth-mosi", "smoke", method="ogm")
    assert after.run_id != before.run_id and dict(after.code)["method"] == "ogm@2"
    assert plugins.code_changes(before) == ["method ogm@1 -> ogm@2"]
    # the runs it needs are pinned to their own method's code, not the parent's
    ensemble = make_config("synth-mosi", "smoke", method="ensemble")
    from bench.plan.deps import dependencies

    assert {dict(d.code)["method"] for d in dependencies(ensemble)} == {"unimodal@1"}


def test_rerun_refuses_a_run_of_older_code_and_readers_refuse_an_edited_row(tmp_path: Path, monkeypatch,
                                                                           capsys) -> None:
    runs = tmp_path / "runs"
    assert bench("run", "--method", "concat", "--modalities", "text,vision", "--dataset", "synth-mosi",
                 "--profile", "smoke", "--seeds", "0", "--runs-dir", str(runs), "--no-progress") == 0
    run_id = store.read_results(runs)[0]["run_id"].iloc[0]
    from bench.methods import REGISTRY

    monkeypatch.setattr(REGISTRY["concat"], "version", 2)
    capsys.readouterr()
    assert bench("rerun", run_id, "--runs-dir", str(runs)) == 2
    assert "trained by other code than is loaded now (method concat@1 -> concat@2)" in capsys.readouterr().err
    # a row whose stored config was edited no longer hashes to its id: left out by every reader, one line
    path = store.result_path(runs, run_id)
    frame = pd.read_parquet(path)
    edited = json.loads(frame.loc[0, "config_json"]) | {"seed": 1}
    frame.loc[0, "config_json"] = json.dumps(edited, sort_keys=True)
    frame.to_parquet(path)
    rows, problems = store.read_results(runs)
    assert len(rows) == 0 and any("hashes to run id" in p for p in problems)


def test_a_grid_files_plugins_are_remembered_by_later_commands_in_a_fresh_process(tmp_path: Path) -> None:
    method = write(tmp_path / "scaled.py", METHOD_PLUGIN)
    model = write(tmp_path / "pool.py", MODEL_PLUGIN)
    runs = tmp_path / "runs"
    grid = write(tmp_path / "g.toml", f'''
        plugins = ["{method.name}", "{model.name}"]
        datasets = ["synth-mosi"]
        profile = "smoke"
        methods = ["scaled_concat"]
        model = "mean_pool"
        modalities = [["text", "vision"]]
        seeds = [0]
        ''')
    assert bench("grid", str(grid), "--runs-dir", str(runs), "--no-progress") == 0
    run_id = store.read_results(runs)[0]["run_id"].iloc[0]
    # a new process, no --plugin: rerun loads the method and model from the row's recorded paths
    out = subprocess.run([sys.executable, "-m", "bench.cli", "rerun", run_id, "--runs-dir", str(runs)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "every metric matches exactly" in out.stdout


def test_an_unknown_method_or_model_suggests_a_plugin(tmp_path: Path, capsys) -> None:
    assert bench("run", "--method", "mmcosine_mine", "--modalities", "text,vision", "--runs-dir",
                 str(tmp_path)) == 2
    assert "--plugin FILE.py" in capsys.readouterr().err
    from bench.methods import validate_config

    with pytest.raises(ConfigError, match=r"unknown model 'my_transformer'.*--plugin FILE\.py"):
        validate_config(make_config("synth-mosi", "smoke", model="my_transformer"))


@pytest.mark.parametrize(("edit", "problem"), [
    ({"BIAS_SHARE = 1.0": "BIAS_SHARE = 0.0"}, "modality logits sum to the fused logits only up to"),
    ({"WIDTH_CUT = None": "WIDTH_CUT = -1"}, "forward(batch).logits has shape"),
])
def test_bench_check_finds_a_broken_promise(tmp_path: Path, capsys, edit: dict[str, str], problem: str) -> None:
    model = write(tmp_path / "pool.py", MODEL_PLUGIN, **edit)
    assert bench("check", str(model)) == 1
    out = capsys.readouterr().out
    assert "FAIL  model mean_pool" in out and problem in out


def test_every_built_in_model_keeps_its_capability_contracts() -> None:
    from bench.conformance import model_checks
    from bench.models import REGISTRY

    broken = [(check.what, check.problems) for name in sorted(REGISTRY) for check in model_checks(name)
              if not check.ok]
    assert broken == []


def test_a_one_task_method_runs_its_own_task_and_a_mismatch_names_its_tasks() -> None:
    assert make_config("synth-mosi", "smoke", method="sati", modalities="text,audio,vision").task == "regression"
    from bench.methods import validate_config

    wrong = make_config("synth-mosi", "smoke", method="sati", modalities="text,audio,vision",
                        task="classification")
    with pytest.raises(ConfigError, match=r"has no classification form \(it supports: regression; --task regression"):
        validate_config(wrong)


def test_echo_none_prints_nothing(tmp_path: Path, capsys) -> None:
    rows = api.run("concat", "text,vision", "synth-mosi", profile="smoke", seeds=(0,), runs_dir=tmp_path,
                   echo=None, progress=False)
    assert list(rows["status"]) == ["ok"]
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_export_names_a_shared_parameter_per_method(tmp_path: Path) -> None:
    from bench.export import param_column_names

    rows = pd.DataFrame({"method": ["sati", "scaled_concat", "ogm"],
                         "method_params": [json.dumps({"scale": 30.0}), json.dumps({"scale": 0.5}),
                                           json.dumps({"alpha": 0.1})]})
    assert param_column_names(rows) == {("sati", "scale"): "param_sati.scale",
                                        ("scaled_concat", "scale"): "param_scaled_concat.scale",
                                        ("ogm", "alpha"): "param_alpha"}


def test_a_legend_shows_only_the_model_parameters_that_differ() -> None:
    from bench.report.plots import _short

    a = json.dumps({"text_hidden": 64, "text_out": 32, "audio_hidden": 16})
    b = json.dumps({"text_hidden": 128, "text_out": 32, "audio_hidden": 16})
    assert _short(a, [a, b]) == "text_hidden=64"


def test_plot_draws_a_series_a_method_logs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    api.run("ogm", "text,vision", "synth-mosi", profile="smoke", seeds=(0, 1), runs_dir=runs, echo=None)
    paths = api.plot("series:coeff", runs, out=tmp_path / "coeff.png")
    assert paths[0].stat().st_size > 1000
    with pytest.raises(ConfigError, match="series:<name>"):
        api.plot("coefs", runs)


def test_no_method_file_branches_on_a_task_name() -> None:
    """The task interface (per_sample_loss, sample_error, hits, average_members) replaced every such branch."""
    branch = re.compile(r"task\s*[!=]=\s*[\"']|[\"'](classification|regression)[\"']\s*[!=]=\s*")
    offenders = [f"{path.name}:{i}" for path in sorted((ROOT / "bench" / "methods").glob("*.py"))
                 for i, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    assert offenders == []


def test_task_hooks_on_numbers_worked_out_by_hand() -> None:
    from bench.tasks import make_task

    classification = make_task("classification")
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # p = (1/2, 1/2) and (e^2/(e^2+1), 1/(e^2+1))
    labels = torch.tensor([1, 0])
    # -log 1/2 = 0.693147; -log(e^2/(e^2+1)) = log(1 + e^-2) = 0.126928
    assert classification.per_sample_loss(logits, labels).tolist() == pytest.approx([0.693147, 0.126928], abs=1e-6)
    assert classification.hits(logits, labels).tolist() == [False, True]  # argmax of row 0 is class 0
    # log of the mean of (1/2, 1/2) and (1, 0): log(3/4), log(1/4)
    mean = classification.average_members([torch.tensor([[0.0, 0.0]]), torch.tensor([[50.0, 0.0]])])
    assert mean.tolist()[0] == pytest.approx([-0.287682, -1.386294], abs=1e-5)
    regression = make_task("regression")  # L1 loss
    out, y = torch.tensor([[0.5], [-1.0]]), torch.tensor([1.5, 1.0])
    assert regression.per_sample_loss(out, y).tolist() == [1.0, 2.0]
    assert regression.sample_error(out, y).tolist() == [1.0, 4.0]  # squared, whatever the loss
    assert regression.hits(out, y).tolist() == [True, False]  # sign right / wrong


def test_perfs_methods_section_times_one_task_methods_on_their_own_task(monkeypatch) -> None:
    """`bench perf`'s default methods section used to stop at FeaDA ("no classification form")."""
    import bench.perf as perf
    import bench.train

    trained = []

    def fake_train(cfg, dataset=None, **_):
        from bench.methods import validate_config

        validate_config(cfg)  # what the real run checks first
        trained.append((cfg.method, cfg.task))
        return bench.train.RunResult(cfg, "ok", None, {"epochs": 1}, [], None, 0.0, "cpu", "", True)

    monkeypatch.setattr(bench.train, "train_run", fake_train)
    monkeypatch.setattr(perf, "load_dataset", lambda *a, **k: None)
    figures = perf.measure_methods("synth-mosi", "smoke", 3, ("text", "audio", "vision"), repeats=1)
    assert {"feada", "sati", "concat"} <= set(figures)
    assert ("feada", "regression") in trained and ("concat", "classification") in trained


def test_rank_ranks_each_task_of_a_preset_apart(tmp_path: Path) -> None:
    """modern-2025 holds classification cells and a regression cell: --rank gives one ranking per task."""
    from bench.presets import expand
    from bench.store import RunRecord, save_result

    cells = expand("modern-2025", profile="smoke", datasets=("mosi",), source="synth", seeds=(0, 1))
    for cell in cells:
        for cfg in cell.configs:
            metrics = ({"test_acc2_non0": 70.0 + cfg.seed, "test_mae": 1.0} if cfg.task == "regression"
                       else {"test_acc": 50.0 + cfg.seed + (cell.method == "remix"), "test_loss": 90.0})
            save_result(tmp_path, RunRecord(config=cfg, status="ok", metrics=metrics, synthetic=True))
    text = api.ranking("modern-2025", tmp_path, profile="smoke", datasets=("mosi",), source="synth", seeds=(0, 1))
    assert "by test_acc\n" in text and "by test_acc2_non0\n" in text
    classification = text[:text.index("by test_acc2_non0")]
    first = next(line for line in classification.splitlines() if line.startswith("| ") and "method" not in line
                 and "---" not in line)
    assert first.startswith("| Remix |")  # one point above every other method in every cell
