"""The example plugin examples/plugins/adversarial.py: its gradient reversal, its two optimizers, its runs
through the public paths (train_run and `bench --plugin ... run`), and the plugin loader's error cases."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from clitools import bench
from plugintools import ADVERSARIAL_PLUGIN, plugin_loaded, plugin_module
from tiny import TAV, TV

from bench import plugins, store
from bench.config import ConfigError
from bench.methods import REGISTRY as METHODS
from bench.models import REGISTRY as MODELS
from bench.plan.resolve import make_config
from bench.train import build_trainer, train_run

torch.set_num_threads(1)

METHOD, MODEL = "adversarial_shared", "shared_private_mlp"
BOTH_TASKS = ("classification", "regression")


@pytest.fixture(scope="module", autouse=True)
def adversarial() -> object:
    """The plugin's module, loaded for this file's tests only."""
    with plugin_loaded(ADVERSARIAL_PLUGIN):
        yield plugin_module(METHOD)


@pytest.fixture
def isolated_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No real data (the surrogate is used), BENCH_PLUGINS restored afterwards; the runs folder."""
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "no-real-data"))
    monkeypatch.setenv(plugins.ENV_VAR, "")
    return tmp_path / "runs"


def adversarial_config(modalities: tuple[str, ...] = TAV, task: str = "classification", **params: float):
    return make_config("synth-mosi", "smoke", method=METHOD, modalities=modalities, task=task,
                       method_params=params)


def first_batch(trainer):
    return next(trainer.train_split.iterate(trainer.cfg.batch_size))


# -- the pure functions, on numbers worked out by hand ----------------------------------------------


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward(adversarial) -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = adversarial.reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    y.backward(torch.tensor([2.0, 4.0, -6.0]))  # upstream gradient
    assert torch.equal(x.grad, torch.tensor([-1.0, -2.0, 3.0]))  # -0.5 * upstream

    # through a loss: L = sum(reverse(x, 2)^2), dL/dy = 2y = [2, -4, 6], so dL/dx = -2 * [2, -4, 6]
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    (adversarial.reverse_gradient(x, 2.0) ** 2).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-4.0, 8.0, -12.0]))

    # the layer after the reversal gets its ordinary gradient: L = sum(w * reverse(x, 1)), dL/dw = sum(x) = 2,
    # dL/dx = -1 * w = -0.5 each
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w = torch.tensor(0.5, requires_grad=True)
    (w * adversarial.reverse_gradient(x, 1.0)).sum().backward()
    assert float(w.grad) == 2.0
    assert torch.equal(x.grad, torch.tensor([-0.5, -0.5, -0.5]))

    # lambda = 0: the encoders get nothing from the discriminator
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    adversarial.reverse_gradient(x, 0.0).sum().backward()
    assert torch.equal(x.grad.abs(), torch.zeros(2))


def test_mean_pool_ignores_padding(adversarial) -> None:
    x = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                      [[6.0, 0.0], [9.0, 9.0], [9.0, 9.0]]])  # (B=2, T=3, D=2)
    pooled = adversarial.mean_pool(x, torch.tensor([2, 1]))
    assert torch.equal(pooled, torch.tensor([[2.0, 3.0], [6.0, 0.0]]))


def test_shared_features_are_stacked_with_their_modality_as_the_target(adversarial) -> None:
    shared = {"vision": torch.full((2, 3), 7.0), "text": torch.full((2, 3), 1.0)}
    features, targets = adversarial.stack_shared(shared, ("text", "vision"))
    assert features.shape == (4, 3)
    assert torch.equal(features[:, 0], torch.tensor([1.0, 1.0, 7.0, 7.0]))  # the modalities' order, not the dict's
    assert torch.equal(targets, torch.tensor([0, 0, 1, 1]))


def test_discriminator_accuracy_overall_and_per_modality(adversarial) -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 5.0]])  # guesses 0, 1, 1, 1
    targets = torch.tensor([0, 0, 1, 1])
    assert adversarial.modality_accuracies(logits, targets, ("text", "vision")) == {
        "": 75.0, "text": 50.0, "vision": 100.0}
    loss = adversarial.discriminator_loss(logits, targets)
    logs = adversarial.discriminator_logs(logits, targets, loss, ("text", "vision"))
    assert logs == {"disc_loss": pytest.approx(float(loss)), "disc_acc": 75.0, "disc_acc/text": 50.0,
                    "disc_acc/vision": 100.0}


# -- the two optimizers ------------------------------------------------------------------------------


def test_optimizers_partition_the_parameters(tiny) -> None:
    trainer = build_trainer(adversarial_config(disc_lr=2e-3), tiny)
    model, optimizers = trainer.model, trainer.optimizers
    assert list(optimizers) == ["main", "discriminator"]
    held = {name: {id(p) for group in opt.param_groups for p in group["params"]} for name, opt in optimizers.items()}
    discriminator = {id(p) for p in model.discriminator.parameters()}
    assert held["discriminator"] == discriminator
    assert held["main"] == {id(p) for p in model.parameters()} - discriminator
    assert isinstance(optimizers["discriminator"], torch.optim.Adam)
    assert [g["lr"] for g in optimizers["discriminator"].param_groups] == [2e-3]
    assert {g["lr"] for g in optimizers["main"].param_groups} == {trainer.cfg.lr}
    assert [s.optimizer for s in trainer.schedulers] == [optimizers["main"]]  # the discriminator is not scheduled


def changed_after_one_step(tiny, monkeypatch: pytest.MonkeyPatch, frozen: str | None) -> tuple[set[str], set[str]]:
    """(names of parameters one train_step changed, all parameter names) with optimizer `frozen` not stepping."""
    trainer = build_trainer(adversarial_config(), tiny)
    model = trainer.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    if frozen is not None:
        monkeypatch.setattr(trainer.optimizers[frozen], "step", lambda *args, **kwargs: None)
    loss, _ = trainer.method.train_step(model, first_batch(trainer), trainer.state)
    assert not loss.requires_grad and math.isfinite(float(loss))
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    return changed, set(before)


def test_each_optimizer_changes_only_its_own_parameters(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    changed, names = changed_after_one_step(tiny, monkeypatch, frozen="main")
    discriminator = {name for name in names if name.startswith("discriminator.")}
    assert discriminator and changed == discriminator  # only the discriminator's optimizer stepped
    changed, _ = changed_after_one_step(tiny, monkeypatch, frozen="discriminator")
    assert changed == names - discriminator  # only the main one stepped: encoders and head
    changed, _ = changed_after_one_step(tiny, monkeypatch, frozen=None)
    assert changed == names


def test_encoders_get_the_task_gradient_minus_lambda_times_the_discriminators(tiny, monkeypatch) -> None:
    reversal = 0.7
    trainer = build_trainer(adversarial_config(reversal=reversal), tiny)
    model, batch = trainer.model, first_batch(trainer)
    for optimizer in trainer.optimizers.values():
        monkeypatch.setattr(optimizer, "step", lambda *args, **kwargs: None)
    trainer.method.train_step(model, batch, trainer.state)
    step_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    # the same quantities without the reversal layer, differentiated separately
    adversarial = plugin_module(METHOD)
    named = dict(model.named_parameters())
    features = model.encode(batch)
    task_loss = trainer.state.task.loss(model.fuse(features), batch.labels)
    shared, owners = adversarial.stack_shared(model.shared_features(features), model.modalities)
    disc_loss = adversarial.discriminator_loss(model.discriminate(shared), owners)
    task_grads = torch.autograd.grad(task_loss, list(named.values()), allow_unused=True, retain_graph=True)
    disc_grads = torch.autograd.grad(disc_loss, list(named.values()), allow_unused=True)
    for (name, _), task_grad, disc_grad in zip(named.items(), task_grads, disc_grads, strict=True):
        task_part = torch.zeros_like(named[name]) if task_grad is None else task_grad
        disc_part = torch.zeros_like(named[name]) if disc_grad is None else disc_grad
        if name.startswith("discriminator."):
            expected = disc_part  # the discriminator minimises its own loss
        else:
            expected = task_part - reversal * disc_part  # encoders: the task's gradient, the adversary's reversed
        assert torch.allclose(step_grads[name], expected, atol=1e-6, rtol=1e-5), name
    shared_weight = "encoders.text.shared.0.weight"
    assert disc_grads[list(named).index(shared_weight)].abs().sum() > 0  # the reversal term is not vacuous


# -- runs through the public paths ------------------------------------------------------------------


@pytest.mark.parametrize("task", BOTH_TASKS)
def test_train_run_logs_the_discriminator_each_step(tiny, task: str) -> None:
    cfg = adversarial_config(TAV, task)
    assert cfg.model == MODEL  # the method's default model
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok", result.error
    assert all(math.isfinite(v) for v in result.metrics.values())
    steps_per_epoch = math.ceil(tiny.train.size / cfg.batch_size)
    expected_steps = int(result.metrics["epochs"]) * steps_per_epoch
    for series, modalities in (("disc_loss", ("",)), ("disc_acc", ("", *TAV))):
        for modality in modalities:
            rows = [r for r in result.trajectory if r["series"] == series and r["modality"] == modality]
            assert [r["step"] for r in rows] == list(range(1, expected_steps + 1)), (series, modality)
            assert all(r["split"] == "train" for r in rows)
            if series == "disc_acc":
                assert all(0.0 <= r["value"] <= 100.0 for r in rows)
            else:
                assert all(math.isfinite(r["value"]) and r["value"] > 0 for r in rows)


@pytest.mark.parametrize("task", BOTH_TASKS)
def test_cli_run_with_the_plugin(isolated_cli: Path, capsys, task: str) -> None:
    code = bench("--plugin", str(ADVERSARIAL_PLUGIN), "run", "--method", METHOD, "--modalities", "text,audio,vision",
                 "--dataset", "synth-mosi", "--profile", "smoke", "--seeds", "0", "--task", task,
                 "--runs-dir", str(isolated_cli), "--executor", "inline", "--no-progress")
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"model {MODEL}" in out and "params {'disc_lr': 0.001, 'reversal': 0.1}" in out
    rows, problems = store.read_results(isolated_cli)
    assert not problems and len(rows) == 1
    row = rows.iloc[0]
    assert (row["status"], row["method"], row["model"], row["task"]) == ("ok", METHOD, MODEL, task)
    assert os.environ[plugins.ENV_VAR] == str(ADVERSARIAL_PLUGIN)  # what spawned workers would load
    trajectory, _ = store.read_trajectories(isolated_cli, [row["run_id"]])
    assert {"disc_loss", "disc_acc"} <= set(trajectory["series"])


@pytest.mark.slow
def test_cli_run_in_spawned_workers_loads_the_plugin_there(isolated_cli: Path, capsys) -> None:
    code = bench("--plugin", str(ADVERSARIAL_PLUGIN), "run", "--method", METHOD, "--modalities", "text,audio",
                 "--dataset", "synth-mosi", "--profile", "smoke", "--seeds", "0", "--runs-dir", str(isolated_cli),
                 "--executor", "local", "--workers", "1", "--no-progress")
    assert code == 0, capsys.readouterr().out
    rows, _ = store.read_results(isolated_cli)
    assert list(rows["status"]) == ["ok"] and list(rows["model"]) == [MODEL]


# -- refusals ----------------------------------------------------------------------------------------


def refused(capsys, runs: Path, *args: str) -> str:
    """Run the CLI expecting exit 2 with one error line and nothing trained; that line."""
    code = bench("--plugin", str(ADVERSARIAL_PLUGIN), "run", "--modalities", "text,vision", "--dataset", "synth-mosi",
                 "--profile", "smoke", "--seeds", "0", "--runs-dir", str(runs), "--executor", "inline",
                 "--no-progress", *args)
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert not (runs / "results").exists() or not any((runs / "results").iterdir())
    return lines[0]


def test_a_model_without_a_required_capability_is_refused(isolated_cli: Path, capsys) -> None:
    line = refused(capsys, isolated_cli, "--method", "ogm", "--model", MODEL)
    assert line.startswith("error: ")
    assert "'ogm'" in line and f"'{MODEL}'" in line and "modality_outputs" in line
    line = refused(capsys, isolated_cli, "--method", METHOD, "--model", "late_fusion")
    assert f"'{METHOD}'" in line and "'late_fusion'" in line and "modality_discriminator" in line


def test_the_method_needs_two_modalities(isolated_cli: Path, capsys) -> None:
    line = refused(capsys, isolated_cli, "--method", METHOD, "--modalities", "text")
    assert f"'{METHOD}'" in line and "2 to 3 modalities" in line


# -- the loader ---------------------------------------------------------------------------------------


def test_loading_the_same_plugin_twice_is_harmless(monkeypatch: pytest.MonkeyPatch) -> None:
    method_cls, model_cls = METHODS[METHOD], MODELS[MODEL]
    names = plugins.load(ADVERSARIAL_PLUGIN)
    assert names == [f"method {METHOD}", f"model {MODEL}"]
    assert plugins.load(ADVERSARIAL_PLUGIN) == names
    assert plugins.load(Path(os.path.relpath(ADVERSARIAL_PLUGIN))) == names  # another spelling of the same file
    assert METHODS[METHOD] is method_cls and MODELS[MODEL] is model_cls
    monkeypatch.setenv(plugins.ENV_VAR, "")
    plugins.activate([str(ADVERSARIAL_PLUGIN), str(ADVERSARIAL_PLUGIN)])
    plugins.activate([str(ADVERSARIAL_PLUGIN)])
    assert os.environ[plugins.ENV_VAR] == str(ADVERSARIAL_PLUGIN)


def test_a_plugin_that_registers_nothing_is_a_clear_error(tmp_path: Path, isolated_cli: Path, capsys) -> None:
    empty = tmp_path / "nothing.py"
    empty.write_text("import torch\nSIZE = 3\n")
    with pytest.raises(ConfigError, match="registers no method, model or task"):
        plugins.load(empty)
    code = bench("--plugin", str(empty), "run", "--method", "concat", "--modalities", "text,vision")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nothing.py: registers no method, model or task" in err[0]


CLASHING = '''
from bench.methods import Method, register
from bench.models import Model, register as register_model


@register_model
class Fresh(Model):
    name = "fresh_model_of_a_failed_plugin"


@register
class Clash(Method):
    name = {name!r}
'''


@pytest.mark.parametrize("taken", ["concat", METHOD])
def test_a_plugin_that_reregisters_a_taken_name_is_a_clear_error(tmp_path: Path, isolated_cli: Path, capsys,
                                                                  taken: str) -> None:
    before = METHODS[taken]
    clashing = tmp_path / "clash.py"
    clashing.write_text(CLASHING.format(name=taken))
    with pytest.raises(ConfigError, match=f"clash.py: method name '{taken}' registered twice"):
        plugins.load(clashing)
    assert METHODS[taken] is before  # the registered class stays
    assert "fresh_model_of_a_failed_plugin" not in MODELS  # a failed plugin leaves nothing behind
    code = bench("--plugin", str(clashing), "run", "--method", "concat", "--modalities", "text,vision")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"'{taken}'" in err[0]


def test_a_missing_plugin_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        plugins.load(tmp_path / "absent.py")


def test_bad_plugin_parameters_are_config_errors(tiny) -> None:
    with pytest.raises(ConfigError, match="disc_lr must be > 0"):
        build_trainer(adversarial_config(TV, disc_lr=0.0), tiny)
    with pytest.raises(ConfigError, match="private_dim must be >= 0"):
        build_trainer(make_config("synth-mosi", "smoke", method=METHOD, modalities=TV,
                                  model_params={"private_dim": -1}), tiny)
