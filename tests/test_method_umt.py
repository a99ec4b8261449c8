"""UMT and UME: the distillation terms and the ensemble's mean by hand; the teachers are the unimodal runs'
checkpoints, frozen and in eval mode; the loss on a real model; whole runs on top of trained unimodal runs."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, bare_state, method_setup, smoke_config

from bench.batch import ModelOutput
from bench.config import ConfigError
from bench.methods import get_method, validate_config
from bench.methods.baselines import SoftVotingEnsemble, mean_outputs, unimodal_config
from bench.methods.umt import TeacherStudent, distillation_losses, umt_objective
from bench.models import model_class, model_spec
from bench.tasks import make_task
from bench.train import train_run

torch.set_num_threads(1)


def _unimodal_states(tiny, method: str, modalities, seed_offset: int = 100) -> dict:
    """Unimodal checkpoints (untrained, seeded apart from the student) keyed as the method's needs."""
    cfg = smoke_config(method=method, modalities=modalities)
    states = {}
    for i, m in enumerate(modalities):
        need = unimodal_config(cfg, m)
        torch.manual_seed(seed_offset + i)
        spec = model_spec(need, tiny.feature_dims, tiny.num_classes)
        states[need.run_id] = model_class(need.model).build(spec).state_dict()
    return states


# -- the formulas by hand ----------------------------------------------------------------------------------


def test_distillation_losses_and_objective_by_hand() -> None:
    student = {"text": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "vision": torch.tensor([[0.0], [2.0]])}
    teacher = {"text": torch.tensor([[1.0, 0.0], [3.0, 5.0]]), "vision": torch.tensor([[1.0], [1.0]])}
    # text: squared differences 0, 4, 0, 1 -> mean 5 / 4 = 1.25; vision: 1, 1 -> mean 1.0
    losses = distillation_losses(student, teacher)
    assert float(losses["text"]) == pytest.approx(1.25) and float(losses["vision"]) == pytest.approx(1.0)
    # L = 0.5 + 10 * (1.25 + 1.0) = 23.0
    assert float(umt_objective(torch.tensor(0.5), losses, 10.0)) == pytest.approx(23.0)


def test_ume_means_the_unimodal_logits_by_hand() -> None:
    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = torch.tensor(logits)

        def forward(self, batch):
            return ModelOutput(logits=self.logits)

    members = {"text": Fixed([[2.0, 0.0]]), "vision": Fixed([[0.0, 4.0]])}
    # logits: ((2, 0) + (0, 4)) / 2 = (1, 2): class 1
    task = make_task("classification")
    means = SoftVotingEnsemble(members, task, mean_outputs)(None).logits
    assert torch.allclose(means, torch.tensor([[1.0, 2.0]]))
    # probabilities: softmax(2, 0) = (0.880797, 0.119203), softmax(0, 4) = (0.017986, 0.982014);
    # mean (0.449392, 0.550608), and the vote's logits are its log
    vote = SoftVotingEnsemble(members, task)(None).logits.exp()
    assert torch.allclose(vote, torch.tensor([[0.449392, 0.550608]]), atol=1e-6)


# -- UMT on a real model ------------------------------------------------------------------------------------


def _umt(tiny, modalities=TV, **fields):
    deps = _unimodal_states(tiny, "umt", modalities)
    return (*method_setup(tiny, "umt", modalities, deps=deps, **fields), deps)


def test_teachers_are_the_unimodal_checkpoints_frozen_and_in_eval_mode(tiny) -> None:
    method, model, state, train, deps = _umt(tiny, TAV)
    assert isinstance(model, TeacherStudent)
    cfg = state.cfg
    text_state = deps[unimodal_config(cfg, "text").run_id]
    assert torch.equal(model.teachers["text"].encoders["text"].lstm.weight_ih_l0,
                       text_state["encoders.text.lstm.weight_ih_l0"])
    # the student starts fresh (BalanceBenchmark), not from the teacher
    assert not torch.equal(model.encoders["text"].lstm.weight_ih_l0, text_state["encoders.text.lstm.weight_ih_l0"])
    assert all(not p.requires_grad for p in model.teachers.parameters())
    model.train()
    assert model.training and not model.teachers.training
    groups = method.param_groups(model, cfg)  # the optimizer never sees a teacher parameter
    teacher_ids = {id(p) for p in model.teachers.parameters()}
    assert not any(id(p) in teacher_ids for g in groups for p in g["params"])


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_loss_adds_the_weighted_feature_distillation(tiny, modalities) -> None:
    method, model, state, train, _ = _umt(tiny, modalities)
    batch = train.batch(torch.arange(0, 16))
    loss, logs = method.loss(model, batch, state)
    features = model.encode(batch)
    fused = torch.nn.functional.cross_entropy(model(batch).logits, batch.labels)
    distill = {m: float(((features[m] - model.teachers[m].encode(batch)[m]) ** 2).mean().detach())
               for m in modalities}
    assert float(loss.detach()) == pytest.approx(float(fused.detach()) + 10.0 * sum(distill.values()), rel=1e-5)
    for m in modalities:
        assert logs[f"distill/{m}"] == pytest.approx(distill[m], rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in model.teachers.parameters())


def test_outside_the_window_only_the_fused_loss(tiny) -> None:
    method, model, _, train, _ = _umt(tiny, TV)
    state = bare_state(smoke_config(method="umt", modalities=TV, window_start=0, window_end=1, max_epochs=3),
                       epoch=2)
    batch = train.batch(torch.arange(0, 16))
    loss, logs = method.loss(model, batch, state)
    assert logs["in_window"] == 0.0 and float(loss.detach()) == pytest.approx(logs["loss_multimodal"])


@pytest.mark.parametrize(("method", "fields", "message"), [
    ("umt", {"dev_set": True}, "no dev-set variant"),
    ("umt", {"method_params": {"distill_weight": -1.0}}, "distill_weight must be >= 0"),
    ("umt", {"task": "regression"}, "no regression form"),
    ("ume", {"method_params": {"combine": "vote"}}, "combine must be one of"),
    ("ume", {"dev_set": True}, "no dev-set variant"),
    ("ume", {"task": "regression"}, "no regression form"),
])
def test_bad_configurations_are_config_errors(method, fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method=method, **{"modalities": TV, **fields}))


def test_both_need_the_same_seeds_unimodal_runs() -> None:
    cfg = smoke_config(method="umt", modalities=TAV)
    for name in ("umt", "ume"):
        needed = get_method(name).needs(cfg.replace(method=name))
        assert [n.modalities for n in needed] == [("text",), ("audio",), ("vision",)]
        assert all(n.method == "unimodal" and n.seed == cfg.seed for n in needed)


# -- whole runs on trained unimodal runs ---------------------------------------------------------------------


def _last_epoch_distill(result, modality: str) -> float:
    rows = [r["value"] for r in result.trajectory if r["series"] == "distill" and r["modality"] == modality]
    return sum(rows[-4:]) / 4  # 4 steps per epoch: 64 training rows, batch 16


def test_umt_pulls_the_student_features_towards_the_teachers_and_ume_runs(tiny) -> None:
    cfg = smoke_config(method="umt", modalities=TV, max_epochs=4)
    deps = {need.run_id: train_run(need, dataset=tiny).state_dict for need in get_method("umt").needs(cfg)}
    result = train_run(cfg, deps=deps, dataset=tiny)
    assert result.status == "ok" and all(math.isfinite(v) for v in result.metrics.values())
    plain = train_run(cfg.replace(method_params=(("distill_weight", 0.0),)), deps=deps, dataset=tiny)
    for m in TV:  # with the term (w = 10) the student's features end closer to the teacher's than without (w = 0)
        assert _last_epoch_distill(result, m) < _last_epoch_distill(plain, m)
    ume = train_run(cfg.replace(method="ume", method_params=()), deps=deps, dataset=tiny)
    assert ume.status == "ok" and 0.0 <= ume.metrics["test_acc"] <= 100.0
