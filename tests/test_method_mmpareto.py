"""MMPareto: the min-norm weights, the cosine test and the magnitude step by hand; the gradients it writes on
a real model (one and two micro-batches, inside and outside the window); whole runs with 2 and 3 modalities."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, bare_state, method_setup, series_by_step, smoke_config

from bench.config import ConfigError
from bench.methods import get_method, validate_config
from bench.methods.mmpareto import (
    ParetoWeights,
    WithUnimodalHeads,
    encoder_parameters,
    inner_products,
    integrate_gradients,
    kan_mcp_losses,
    min_norm_weight,
    pareto_weights,
)
from bench.train import build_trainer, train_run

torch.set_num_threads(1)

SERIES = ("weight_multimodal", "weight_unimodal", "cos", "conflict")


def _cfg(modalities: tuple[str, ...] = TV, **fields):
    return smoke_config(method="mmpareto", modalities=modalities, **fields)


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# -- the weights by hand ---------------------------------------------------------------------------------


def test_min_norm_weight_by_hand_and_the_solver_edges() -> None:
    # x1 = (1, 0), x2 = (-1, 1): <x1,x1> = 1, <x1,x2> = -1, <x2,x2> = 2
    # c = (<x2,x2> - <x1,x2>) / (|x1|^2 + |x2|^2 - 2 <x1,x2>) = (2 + 1) / (1 + 2 + 2) = 0.6
    assert min_norm_weight(1.0, -1.0, 2.0) == pytest.approx(0.6)
    # c x1 + (1 - c) x2 = (0.2, 0.4) has the same inner product (0.2) with both: the min-norm point
    assert min_norm_weight(1.0, 2.0, 5.0) == 0.999  # <x1,x2> >= <x1,x1>: the minimum is at x1's end
    assert min_norm_weight(4.0, 1.0, 1.0) == 0.001  # <x1,x2> >= <x2,x2>: at x2's end


def test_pareto_weights_half_each_without_conflict_min_norm_with_it() -> None:
    conflict = pareto_weights(1.0, -1.0, 2.0)  # cos = -1 / sqrt(1 * 2) = -0.707107
    assert conflict.conflict and conflict.cos == pytest.approx(-1 / math.sqrt(2))
    assert (conflict.multimodal, conflict.unimodal) == pytest.approx((0.6, 0.4))
    agree = pareto_weights(1.0, 1.0, 2.0)  # x1 = (1, 0), x2 = (1, 1): cos = 1 / sqrt(2) > 0
    assert not agree.conflict and (agree.multimodal, agree.unimodal) == (0.5, 0.5)
    assert agree.cos == pytest.approx(1 / math.sqrt(2))
    # orthogonal (cos = 0): the official test is strict, so min-norm: c = (3 - 0) / (1 + 3 - 0) = 0.75
    orthogonal = pareto_weights(1.0, 0.0, 3.0)
    assert orthogonal.conflict and orthogonal.multimodal == pytest.approx(0.75)
    # a zero unimodal gradient: cos logged as 0, <x1,x2> = 0 >= <x2,x2> = 0 -> the solver's 0.001
    zero = pareto_weights(1.0, 0.0, 0.0)
    assert zero.cos == 0.0 and zero.conflict and zero.multimodal == 0.001


def test_inner_products_run_over_every_tensor_of_the_encoder() -> None:
    a, b = [_t(1, 2), _t(3)], [_t(0, 1), _t(2)]
    # <a,a> = 1 + 4 + 9 = 14; <a,b> = 0 + 2 + 6 = 8; <b,b> = 0 + 1 + 4 = 5
    assert inner_products(a, b) == (14.0, 8.0, 5.0)


def test_integrate_gradients_by_hand() -> None:
    weights = ParetoWeights(0.6, 0.4, -0.7, True)
    g_mm, g_u = [_t(1, 0), _t(1)], [_t(-1, 1), _t(-1)]
    first, second = integrate_gradients(g_mm, g_u, weights, gamma=1.5)
    # tensor 1: d = 2 (0.6 (1, 0) + 0.4 (-1, 1)) = (0.4, 0.8), |d| = sqrt(0.8) = 0.894427;
    # u = g_mm + g_u = (0, 1), |u| = 1; |u| / |d| = 1.118034 > 1 -> d |u| / |d| = (1, 2) / sqrt(5);
    # times gamma 1.5: (0.670820, 1.341641)
    assert torch.allclose(first, _t(1.5 / math.sqrt(5), 3.0 / math.sqrt(5)))
    # tensor 2: d = 2 (0.6 - 0.4) = 0.4, u = 0 -> ratio 0 <= 1, d kept: 1.5 * 0.4 = 0.6 (per tensor)
    assert torch.allclose(second, _t(0.6))
    # no magnitude step: gamma * d = 1.5 * (0.4, 0.8)
    assert torch.allclose(integrate_gradients(g_mm, g_u, weights, 1.5, rescale=False)[0], _t(0.6, 1.2))
    # no conflict: d = g_mm + g_u = u, ratio 1: the plain sum times gamma, 1.5 * (2, 1) = (3, 1.5)
    agree = integrate_gradients([_t(1, 0)], [_t(1, 1)], ParetoWeights(0.5, 0.5, 0.7, False), 1.5)
    assert torch.allclose(agree[0], _t(3.0, 1.5))
    # both zero: stays zero (no division by a zero norm)
    assert torch.equal(integrate_gradients([_t(0.0)], [_t(0.0)], weights, 1.5)[0], _t(0.0))


# -- the gradients on a real model ---------------------------------------------------------------------------


def _setup(tiny, modalities=TV, **fields):
    return method_setup(tiny, "mmpareto", modalities, **fields)


def _reference(model, batches, modalities, gamma=1.5, in_window=True):
    """Encoder gradients the method must write, from plain autograd on the mean of the batches' losses."""
    fused = sum(torch.nn.functional.cross_entropy(model(b).logits, b.labels) for b in batches) / len(batches)
    expected = {}
    for m in modalities:
        params = encoder_parameters(model, m)
        unimodal = sum(torch.nn.functional.cross_entropy(model.unimodal_heads[m](model.encode(b)[m]), b.labels)
                       for b in batches) / len(batches)
        g_mm = list(torch.autograd.grad(fused, params, retain_graph=True))
        g_u = list(torch.autograd.grad(unimodal, params))
        weights = pareto_weights(*inner_products(g_mm, g_u))
        combined = (integrate_gradients(g_mm, g_u, weights, gamma) if in_window
                    else [a + b for a, b in zip(g_mm, g_u, strict=True)])
        expected[m] = (weights, combined)
    return expected


def test_the_kan_mcp_magnitude_reference_weighs_the_unimodal_gradient_by_hand() -> None:
    # g_mm = [3, 0], g_u = [0, 4]: cos 0 (a conflict); c = (16 - 0) / (9 + 16) = 0.64, w_u = 0.36
    g_mm, g_u = [_t(3.0, 0.0)], [_t(0.0, 4.0)]
    weights = pareto_weights(*inner_products(g_mm, g_u))
    assert (weights.multimodal, weights.unimodal) == pytest.approx((0.64, 0.36))
    # d = 2 (0.64 [3, 0] + 0.36 [0, 4]) = [3.84, 2.88], |d| = 4.8
    # official (a = 1): |[3, 4]| = 5 > 4.8 -> d * 5 / 4.8 = [4, 3], times 1.5 = [6, 4.5]
    assert torch.allclose(integrate_gradients(g_mm, g_u, weights, 1.5)[0], _t(6.0, 4.5))
    # KAN-MCP on MOSI (a = weight1 = 0.1): |[3, 0.4]| = 3.027 < 4.8 -> d alone, times 1.5 = [5.76, 4.32]
    assert torch.allclose(integrate_gradients(g_mm, g_u, weights, 1.5, unimodal_weight=0.1)[0], _t(5.76, 4.32))


def test_kan_mcp_losses_by_hand() -> None:
    fused = torch.tensor([[1.0], [3.0]])
    unimodal = {"text": torch.tensor([[0.5], [2.0]])}
    mse, l1 = kan_mcp_losses(fused, unimodal, torch.tensor([0.0, 1.0]))
    # MSE: ((1 - 0)^2 + (3 - 1)^2) / 2 = 2.5; L1: (|0.5 - 0| + |2 - 1|) / 2 = 0.75
    assert float(mse) == pytest.approx(2.5) and float(l1["text"]) == pytest.approx(0.75)


def test_kan_mcp_regression_form_writes_its_integrated_gradients(tiny) -> None:
    trainer = build_trainer(_cfg(TV, task="regression"), tiny)
    method, model, state = trainer.method, trainer.model, trainer.state
    batch = trainer.train_split.batch(torch.arange(0, 16))
    y = batch.labels.float()
    fused = torch.nn.functional.mse_loss(model(batch).logits.view(-1), y)
    expected = {}
    for m in TV:
        params = encoder_parameters(model, m)
        unimodal = torch.nn.functional.l1_loss(model.unimodal_heads[m](model.encode(batch)[m]).view(-1), y)
        g_mm = list(torch.autograd.grad(fused, params, retain_graph=True))
        g_u = list(torch.autograd.grad(unimodal, params))
        weights = pareto_weights(*inner_products(g_mm, g_u))
        expected[m] = integrate_gradients(g_mm, g_u, weights, 1.5, unimodal_weight=0.1)
    model.zero_grad(set_to_none=True)
    loss, logs = method.loss(model, batch, state)
    loss.backward()
    # the objective: MSE + 0.1 (L1_text + L1_vision)
    assert float(loss.detach()) == pytest.approx(
        logs["loss_multimodal"] + 0.1 * (logs["loss_unimodal/text"] + logs["loss_unimodal/vision"]), rel=1e-6)
    assert logs["loss_multimodal"] == pytest.approx(float(fused.detach()), rel=1e-6)
    method.after_backward(model, state)
    for m in TV:
        for param, grad in zip(encoder_parameters(model, m), expected[m], strict=True):
            assert torch.allclose(param.grad, grad, rtol=1e-4, atol=1e-7)
    # "ours": every loss the task's (L1), weight 1
    trainer = build_trainer(_cfg(TV, task="regression", method_params={"regression_form": "ours"}), tiny)
    method, model, state = trainer.method, trainer.model, trainer.state
    loss, logs = method.loss(model, batch, state)
    task_loss = state.task.loss(model(batch).logits, batch.labels)
    assert logs["loss_multimodal"] == pytest.approx(float(task_loss.detach()), rel=1e-6)
    assert float(loss.detach()) == pytest.approx(
        logs["loss_multimodal"] + logs["loss_unimodal/text"] + logs["loss_unimodal/vision"], rel=1e-6)


def test_kan_mcp_weight1_per_dataset_from_the_recipes() -> None:
    declared = type(get_method("mmpareto"))
    # train_mosi.py --weight1 0.1, train_mosei.py --weight1 1
    assert declared.paper_fields("mosi", "quick") == {"method_params": {"regression_unimodal_weight": 0.1}}
    assert declared.paper_fields("mosei", "quick") == {"method_params": {"regression_unimodal_weight": 1.0}}


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_after_backward_writes_the_integrated_encoder_gradients(tiny, modalities) -> None:
    method, model, state, train = _setup(tiny, modalities)
    batch = train.batch(torch.arange(0, 16))
    expected = _reference(model, [batch], modalities)
    model.zero_grad(set_to_none=True)
    loss, logs = method.loss(model, batch, state)
    loss.backward()
    # the objective is L_mm + sum_m L_m, but its graph stops at the features: no encoder gradient yet
    assert all(p.grad is None for p in model.encoders.parameters())
    uniform = torch.nn.functional.cross_entropy(model(batch).logits, batch.labels) + sum(
        torch.nn.functional.cross_entropy(model.unimodal_heads[m](model.encode(batch)[m]), batch.labels)
        for m in modalities)
    assert float(loss.detach()) == pytest.approx(float(uniform.detach()), rel=1e-6)
    heads = [*model.model.head.parameters(), *model.unimodal_heads.parameters()]
    for param, grad in zip(heads, torch.autograd.grad(uniform, heads), strict=True):
        assert torch.allclose(param.grad, grad, atol=1e-7)  # the heads: the plain gradients
    logs.update(method.after_backward(model, state))
    for m in modalities:
        weights, combined = expected[m]
        for param, grad in zip(encoder_parameters(model, m), combined, strict=True):
            assert torch.allclose(param.grad, grad, rtol=1e-4, atol=1e-7)
        assert logs[f"weight_multimodal/{m}"] == pytest.approx(weights.multimodal, rel=1e-4)
        assert logs[f"weight_unimodal/{m}"] == pytest.approx(weights.unimodal, rel=1e-4)
        assert logs[f"cos/{m}"] == pytest.approx(weights.cos, rel=1e-4, abs=1e-6)
        assert logs[f"conflict/{m}"] == float(weights.conflict)
        assert f"loss_unimodal/{m}" in logs
    assert logs["in_window"] == 1.0


def test_micro_batches_of_a_step_are_integrated_once_on_their_mean(tiny) -> None:
    method, model, state, train = _setup(tiny, TV, step_every=2)
    batches = [train.batch(torch.arange(0, 8)), train.batch(torch.arange(8, 16))]
    expected = _reference(model, batches, TV)
    model.zero_grad(set_to_none=True)
    for batch in batches:  # as the loop does with step_every 2: each loss divided by the group size
        loss, _ = method.loss(model, batch, state)
        (loss / 2).backward()
    logs = method.after_backward(model, state)
    for m in TV:
        weights, combined = expected[m]
        for param, grad in zip(encoder_parameters(model, m), combined, strict=True):
            assert torch.allclose(param.grad, grad, rtol=1e-4, atol=1e-7)
        assert logs[f"weight_multimodal/{m}"] == pytest.approx(weights.multimodal, rel=1e-4)


def test_outside_the_window_the_encoders_get_the_plain_sum(tiny) -> None:
    cfg = _cfg(TV, window_start=0, window_end=1, max_epochs=3)
    method, model, _, train = _setup(tiny, TV)
    state = bare_state(cfg, epoch=2)
    batch = train.batch(torch.arange(0, 16))
    expected = _reference(model, [batch], TV, in_window=False)
    model.zero_grad(set_to_none=True)
    loss, _ = method.loss(model, batch, state)
    loss.backward()
    logs = method.after_backward(model, state)
    assert logs["in_window"] == 0.0
    for m in TV:
        assert logs[f"weight_multimodal/{m}"] == logs[f"weight_unimodal/{m}"] == 0.5
        for param, grad in zip(encoder_parameters(model, m), expected[m][1], strict=True):
            assert torch.allclose(param.grad, grad, rtol=1e-4, atol=1e-7)


def test_the_wrapper_keeps_the_run_models_forward_and_capabilities(tiny) -> None:
    _, model, _, train = _setup(tiny, TAV)
    assert isinstance(model, WithUnimodalHeads)
    batch = train.batch(torch.arange(0, 4))
    out, inner = model(batch), model.model(batch)
    assert torch.equal(out.logits, inner.logits)
    assert model.encoders is model.model.encoders and model.modalities == TAV
    keys = set(model.state_dict())
    assert {"unimodal_heads.text.weight", "unimodal_heads.audio.bias", "model.head.weight"} <= keys
    assert model.unimodal_heads["text"].in_features == 32 and model.unimodal_heads["audio"].in_features == 16


# -- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"dev_set": True}, "no dev-set variant"),
    ({"method_params": {"gamma": 0.0}}, "gamma must be > 0"),
    ({"modalities": ("text",)}, "needs 2 to 3 modalities"),
    ({"method_params": {"alpha": 1.0}}, "unknown parameter"),
    ({"method_params": {"regression_form": "mse"}}, "regression_form"),
    ({"method_params": {"regression_unimodal_weight": 0.0}}, "regression_unimodal_weight"),
])
def test_bad_configurations_are_config_errors(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method="mmpareto", **{"modalities": TV, **fields}))


def test_thesis_settings_are_the_official_ones() -> None:
    declared = type(get_method("mmpareto"))
    assert declared.thesis.params == {"gamma": 1.5, "rescale": True}
    assert declared.thesis.window == (0, -1) and declared.table_order == 120


# -- whole runs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("modalities", [TV, TAV])
def test_smoke_run_logs_the_weights_and_meets_conflicts(tiny, modalities, task) -> None:
    result = train_run(_cfg(modalities, task=task), dataset=tiny)
    assert result.status == "ok"
    assert all(math.isfinite(v) for v in result.metrics.values())
    logged = {(row["series"], row["modality"]) for row in result.trajectory if row["split"] == "train"}
    assert {(s, m) for s in SERIES for m in modalities} | {("in_window", "")} <= logged
    valid = {(row["series"], row["modality"]) for row in result.trajectory if row["split"] == "valid"}
    assert {("unimodal_loss", m) for m in modalities} <= valid
    # it acts: some step meets a conflict and takes min-norm weights other than 1/2, and the cosines vary
    conflicts = [v for m in modalities for v in series_by_step(result, "conflict", m).values()]
    weights = [v for m in modalities for v in series_by_step(result, "weight_multimodal", m).values()]
    assert 1.0 in conflicts and any(abs(w - 0.5) > 1e-3 for w in weights)
    assert len(set(series_by_step(result, "cos", modalities[0]).values())) > 1
