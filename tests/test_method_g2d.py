"""G2D: the distillation terms, the teachers' confidence and the prioritised coefficients by hand; the
teachers loaded from the unimodal runs and kept frozen; the gradients after SMP; a whole run on trained
unimodal teachers."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, bare_state, series_by_step, smoke_config

from bench.config import ConfigError
from bench.methods import BuildContext, get_method, validate_config
from bench.methods.baselines import unimodal_config
from bench.methods.g2d import STEP_KEY, confidence_scores, distillation_loss, prioritised_coefficients
from bench.methods.umt import TeacherStudent, distillation_losses
from bench.models import model_spec
from bench.train import SplitTensors, seed_everything, train_run

torch.set_num_threads(1)
LN3 = math.log(3.0)


def _cfg(modalities=TV, **fields):
    return smoke_config(method="g2d", modalities=modalities, **fields)


# -- the formulas by hand ------------------------------------------------------------------------------


def test_distillation_loss_by_hand() -> None:
    student, teacher = torch.zeros(1, 2), torch.tensor([[LN3, 0.0]])
    # teacher p = (3/4, 1/4), student q = (1/2, 1/2):
    # KL = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.304099 - 0.173287 = 0.130812
    assert float(distillation_loss(student, teacher, 1.0)) == pytest.approx(0.130812, abs=1e-6)
    # T = 2: p = (sqrt3, 1) / (sqrt3 + 1) = (0.633975, 0.366025); KL = 0.036341; times T^2 = 0.145363
    assert float(distillation_loss(student, teacher, 2.0)) == pytest.approx(0.145363, abs=1e-6)
    # the batch mean: a second, identical pair leaves it unchanged
    assert float(distillation_loss(student.repeat(2, 1), teacher.repeat(2, 1), 1.0)) == pytest.approx(0.130812,
                                                                                                        abs=1e-6)


def test_feature_loss_and_confidence_by_hand() -> None:
    # the feature term is UMT's MSE: (1 + 4) / 2
    assert float(distillation_losses({"a": torch.tensor([[1.0, 2.0]])}, {"a": torch.zeros(1, 2)})["a"]) == 2.5
    logits = {"a": torch.tensor([[0.0, 0.0], [LN3, 0.0]]), "v": torch.tensor([[0.0, LN3], [0.0, 0.0]])}
    labels = torch.tensor([0, 0])
    # a: 1/2 + 3/4 = 1.25; v: 1/4 + 1/2 = 0.75 (sums over the batch, as the official score)
    assert confidence_scores(logits, labels) == pytest.approx({"a": 1.25, "v": 0.75})


def test_prioritised_coefficients() -> None:
    assert prioritised_coefficients({"a": 1.25, "v": 0.75}) == {"a": 0.0, "v": 1.0}  # official: a dominant
    assert prioritised_coefficients({"a": 0.5, "v": 0.75}) == {"a": 1.0, "v": 0.0}
    assert prioritised_coefficients({"a": 1.0, "v": 1.0}) == {"a": 1.0, "v": 1.0}  # tie (the official raises)
    assert prioritised_coefficients({"t": 2.0, "a": 1.0, "v": 3.0}) == {"t": 0.0, "a": 1.0, "v": 0.0}
    assert prioritised_coefficients({"t": 1.0, "a": 1.0, "v": 2.0}) == {"t": 1.0, "a": 0.0, "v": 0.0}


# -- the teachers and the gradients on a real model ----------------------------------------------------


def _fake_teacher_states(cfg, tiny):
    """Each modality's unimodal checkpoint: a freshly built unimodal model with seed-dependent weights."""
    method = get_method("unimodal")
    deps = {}
    for i, m in enumerate(cfg.modalities):
        uni = unimodal_config(cfg, m)
        torch.manual_seed(100 + i)
        spec = model_spec(uni, tiny.feature_dims, tiny.num_classes)
        deps[uni.run_id] = method.build(BuildContext(spec, uni, None, {})).state_dict()
    return deps


def _setup(tiny, modalities=TV, epoch=0, **fields):
    cfg = _cfg(modalities, **fields)
    state = bare_state(cfg, epoch=epoch)
    deps = _fake_teacher_states(cfg, tiny)
    seed_everything(cfg.seed)
    method = get_method("g2d")
    model = method.build(BuildContext(model_spec(cfg, tiny.feature_dims, tiny.num_classes), cfg, state.params, deps))
    batch = SplitTensors(tiny.train, modalities, torch.device("cpu")).batch(torch.arange(0, 16))
    return method, model, state, batch, deps, cfg


def test_teachers_are_the_unimodal_checkpoints_frozen_in_eval_mode(tiny) -> None:
    _, model, _, _, deps, cfg = _setup(tiny, TAV)
    assert isinstance(model, TeacherStudent)
    for m in TAV:
        stored = deps[unimodal_config(cfg, m).run_id]
        for name, value in model.teachers[m].state_dict().items():
            assert torch.equal(value, stored[name]), (m, name)
    assert not any(p.requires_grad for p in model.teachers.parameters())
    model.train()
    assert model.model.training and not any(t.training for t in model.teachers.values())
    groups = get_method("g2d").optimizers(model, cfg)[0].groups
    optimised = {id(p) for g in groups for p in g["params"]}
    assert not optimised & {id(p) for p in model.teachers.parameters()}


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_objective_and_smp_gradients(tiny, modalities) -> None:
    method, model, state, batch, _, _ = _setup(tiny, modalities)
    ce, kl, mse = (torch.nn.functional.cross_entropy, torch.nn.functional.kl_div, torch.nn.functional.mse_loss)
    with torch.no_grad():
        t_logits = {m: model.teachers[m](batch).logits for m in modalities}
        t_features = {m: model.teachers[m].encode(batch)[m] for m in modalities}
    features = model.encode(batch)
    fused = model.fuse(features)
    reference = ce(fused, batch.labels) + sum(
        kl(fused.log_softmax(1), t_logits[m].softmax(1), reduction="batchmean") + mse(features[m], t_features[m])
        for m in modalities)
    plain = torch.autograd.grad(reference, list(model.model.parameters()))
    model.zero_grad(set_to_none=True)
    loss, logs = method.loss(model, batch, state)
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
    loss.backward()
    coefficients = dict(state.scratch[STEP_KEY])
    logs.update(method.after_backward(model, state))
    scores = {m: logs[f"teacher_score/{m}"] for m in modalities}
    assert coefficients == prioritised_coefficients(scores) and sum(coefficients.values()) == 1.0
    frozen = {id(p): coefficients[m] for m in modalities for p in model.encoder_parameters(m)}
    for param, grad in zip(model.model.parameters(), plain, strict=True):
        k = frozen.get(id(param), 1.0)  # biases and the head keep their gradients
        assert torch.allclose(param.grad, k * grad, rtol=1e-4, atol=1e-7)
    for m in modalities:
        assert logs[f"coefficient/{m}"] == coefficients[m]


def test_outside_the_window_every_gradient_is_kept(tiny) -> None:
    method, model, _, batch, _, _ = _setup(tiny, TV)
    state = bare_state(_cfg(TV, window_start=0, window_end=0, max_epochs=2), epoch=1)
    loss, _ = method.loss(model, batch, state)
    loss.backward()
    before = {id(p): p.grad.clone() for p in model.model.parameters()}
    logs = method.after_backward(model, state)
    assert logs == {"coefficient/text": 1.0, "coefficient/vision": 1.0}
    assert all(torch.equal(p.grad, before[id(p)]) for p in model.model.parameters())


# -- configuration and a whole run ---------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"method_params": {"kd_temperature": 0.0}}, "kd_temperature must be > 0"),
    ({"dev_set": True}, "no dev-set variant"),
    ({"task": "regression"}, "no regression form"),
])
def test_bad_configurations_are_config_errors(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method="g2d", **{"modalities": TV, **fields}))


def test_needs_the_same_seeds_unimodal_runs() -> None:
    cfg = _cfg(TV)
    assert [c.run_id for c in get_method("g2d").needs(cfg)] == [unimodal_config(cfg, m).run_id for m in TV]


def test_whole_run_on_trained_teachers_logs_scores_and_coefficients(tiny) -> None:
    cfg = _cfg(TV)
    deps = {}
    for needed in get_method("g2d").needs(cfg):
        result = train_run(needed, dataset=tiny)
        assert result.status == "ok"
        deps[needed.run_id] = result.state_dict
    result = train_run(cfg, deps=deps, dataset=tiny)
    assert result.status == "ok"
    text, vision = series_by_step(result, "coefficient", "text"), series_by_step(result, "coefficient", "vision")
    assert text and all(text[s] + vision[s] in (1.0, 2.0) for s in text)
    # the text teacher (the tiny data's clear signal) is the more confident: text's encoder is held back
    assert sum(text.values()) < sum(vision.values())
    assert series_by_step(result, "loss_feature_kd", "vision")
