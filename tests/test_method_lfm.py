"""LFM: the alignment term, the weight schedules and the hypergradient by hand; the objective and the
prediction on a real model; whole runs whose weights move as the official update says."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, bare_state, method_setup, series_by_step, smoke_config

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.lfm import (
    LFMModel,
    alignment,
    alpha_lr,
    fitted_weights,
    hypergradient,
    lfm_losses,
    lfm_objective,
    pairwise_alignment,
    update_weights,
)
from bench.train import train_run

torch.set_num_threads(1)


def _logits(*probs: float) -> torch.Tensor:
    return torch.tensor([probs], dtype=torch.float64).log()  # (1, K): softmax gives `probs` back


# -- the formulas by hand -----------------------------------------------------------------------------------


def test_alignment_is_the_official_kl_from_the_mixture() -> None:
    # p = (0.5, 0.5), q = (0.9, 0.1), m = (0.7, 0.3)
    # KL(m || p) = 0.7 ln(0.7/0.5) + 0.3 ln(0.3/0.5) = 0.235531 - 0.153248 = 0.082283
    # KL(m || q) = 0.7 ln(0.7/0.9) + 0.3 ln(0.3/0.1) = -0.175920 + 0.329584 = 0.153664
    # J = (0.082283 + 0.153664) / 2 = 0.117973
    value = float(alignment(_logits(0.5, 0.5), _logits(0.9, 0.1)))
    assert value == pytest.approx(0.117973, abs=2e-6)
    # not the textbook JS, whose KLs run from p and q to m: (KL(p||m) + KL(q||m)) / 2 = 0.107833
    assert abs(value - 0.107833) > 1e-3
    # a batch of two: the mean of the rows (the same pair twice, and identical rows -> 0)
    two = alignment(torch.cat([_logits(0.5, 0.5), _logits(0.2, 0.8)]), torch.cat([_logits(0.9, 0.1),
                                                                                 _logits(0.2, 0.8)]))
    assert float(two) == pytest.approx(0.117973 / 2, abs=2e-6)


def test_alignment_is_finite_where_a_probability_underflows() -> None:
    # class 2 has probability exp(-1000) = 0 in both: its term is 0 log 0 = 0 (kl_div's convention), not nan
    logits = torch.tensor([[0.0, -1000.0]])
    assert float(alignment(logits, logits)) == 0.0


def test_pairwise_alignment_averages_the_pairs() -> None:
    a, b, c = _logits(0.5, 0.5), _logits(0.9, 0.1), _logits(0.5, 0.5)
    # pairs (a,b) = 0.117973, (a,c) = 0, (b,c) = 0.117973 -> mean 0.078649
    assert float(pairwise_alignment([a, b, c])) == pytest.approx(2 * 0.117973 / 3, abs=2e-6)
    assert float(pairwise_alignment([a, b])) == pytest.approx(0.117973, abs=2e-6)


def test_objective_and_fitted_weights() -> None:
    # 2 (0.05 * 1.2 + 0.95 * 0.4) = 2 (0.06 + 0.38) = 0.88
    assert float(lfm_objective(torch.tensor(1.2), torch.tensor(0.4), 0.05, 0.95)) == pytest.approx(0.88)
    assert fitted_weights(0) == pytest.approx((0.204623704, 0.795376296))
    # epoch 10: 0.204623704 + 0.0335472727 + 0.0122989557 - 0.00292947416 + 0.000223835486 - 0.0000053972
    #         = 0.2477588965; the align weight is 1 minus it (the coefficients are negatives past the first)
    cls, align = fitted_weights(10)
    assert cls == pytest.approx(0.2477588965, abs=1e-9) and align == pytest.approx(0.7522411035, abs=1e-9)


def test_alpha_learning_rate_halves_every_twenty_epochs_and_the_update_clips() -> None:
    assert alpha_lr(0, 1e-4, 20) == 1e-4 and alpha_lr(19, 1e-4, 20) == 1e-4
    assert alpha_lr(20, 1e-4, 20) == 5e-5 and alpha_lr(45, 1e-4, 20) == 2.5e-5
    # 0.95 - 1e-4 * 11.6 = 0.94884; a_cls = 0.05116
    assert update_weights(0.95, 11.6, 1e-4) == pytest.approx((0.05116, 0.94884))
    # 0.06 - 1e-4 * 200 = 0.04 -> clipped to 0.05; and 0.9 + 1e-4 * 1000 = 1.0 -> 0.95
    assert update_weights(0.06, 200.0, 1e-4) == pytest.approx((0.95, 0.05))
    assert update_weights(0.9, -1000.0, 1e-4) == pytest.approx((0.05, 0.95))


def test_hypergradient_by_hand() -> None:
    theta = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    # CE = theta^2, A = theta^3; L_tot' = 2 wc theta + 3 wa theta^2, v = 2 theta (a constant)
    # d/dtheta <L_tot', v> = (2 wc + 6 wa theta) v = (0.1 + 5.7) * 2 = 11.6 at theta = 1
    g = hypergradient((theta ** 2).sum(), (theta ** 3).sum(), 0.05, 0.95, [theta])
    assert g == pytest.approx(11.6)
    # two parameters: CE = t1 t2, A = t2^2; L_tot' = (wc t2, wc t1 + 2 wa t2), v = (t2, t1)
    # <L_tot', v> with v constant: d/dt1 = wc v2 = wc t1 = 0.05 * 2 = 0.1 (kept: the first tensor);
    # d/dt2 = wc v1 + 2 wa v2 = 0.15 + 3.8 = 3.95 (dropped, as the official [0])
    t1 = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    t2 = torch.nn.Parameter(torch.tensor([3.0], dtype=torch.float64))
    assert hypergradient((t1 * t2).sum(), (t2 ** 2).sum(), 0.05, 0.95, [t1, t2]) == pytest.approx(0.1)
    assert hypergradient((t1 * t2).sum(), (t2 ** 2).sum(), 0.05, 0.95, [t2, t1]) == pytest.approx(3.95)


# -- on a real model ----------------------------------------------------------------------------------------



@pytest.mark.parametrize("modalities", [TV, TAV])
def test_prediction_is_the_heads_mean_and_the_objective_the_official_one(tiny, modalities) -> None:
    method, model, state, train = method_setup(tiny, "lfm", modalities)
    assert isinstance(model, LFMModel)
    batch = train.batch(torch.arange(0, 16))
    features = model.encode(batch)
    heads = {m: model.unimodal_heads[m](z) for m, z in features.items()}
    mean = sum(heads.values()) / len(heads)
    out = model(batch)
    assert torch.allclose(out.logits, mean, atol=1e-6)
    assert torch.allclose(sum(out.modality_logits.values()), mean, atol=1e-6)
    state.scratch["lfm/weights"] = (0.3, 0.7)
    loss, logs = method.loss(model, batch, state)
    ce = torch.nn.functional.cross_entropy(mean, batch.labels)
    align = pairwise_alignment(list(heads.values()))
    assert float(loss.detach()) == pytest.approx(float(2 * (0.3 * ce + 0.7 * align).detach()), rel=1e-5)
    assert logs["loss_cls"] == pytest.approx(float(ce.detach()), rel=1e-5)


def test_fusion_model_option_keeps_the_run_models_prediction(tiny) -> None:
    _, model, _, train = method_setup(tiny, "lfm", TV, method_params={"fusion": "model"})
    batch = train.batch(torch.arange(0, 8))
    assert torch.equal(model(batch).logits, model.model(batch).logits)
    cls_loss, _ = lfm_losses(model, batch, bare_state(smoke_config(method="lfm")).task)
    expected = torch.nn.functional.cross_entropy(model.model(batch).logits, batch.labels)
    assert float(cls_loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


# -- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"method_params": {"schedule": "cosine"}}, "schedule must be one of"),
    ({"method_params": {"fusion": "concat"}}, "fusion must be one of"),
    ({"method_params": {"cls_init": 1.5}}, "cls_init must be in"),
    ({"dev_set": True}, "no dev-set variant"),
    ({"task": "regression"}, "has no regression form"),
])
def test_bad_configurations_are_config_errors(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method="lfm", **fields))


# -- whole runs ---------------------------------------------------------------------------------------------


def test_learned_weights_move_by_the_logged_hypergradient(tiny) -> None:
    cfg = smoke_config(method="lfm", modalities=TV, max_epochs=3, method_params={"lr_alpha": 0.05})
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok" and all(math.isfinite(v) for v in result.metrics.values())
    align = list(series_by_step(result, "weight_align", "").values())
    grads = list(series_by_step(result, "alpha_grad", "").values())
    cls = list(series_by_step(result, "weight_cls", "").values())
    assert len(align) == len(grads) == 3
    previous = 0.95  # the official start; each epoch's update: clip(previous - 0.05 g, 0.05, 0.95)
    for w, g, c in zip(align, grads, cls, strict=True):
        assert w == pytest.approx(min(0.95, max(0.05, previous - 0.05 * g)), abs=1e-6)
        assert c == pytest.approx(1 - w, abs=1e-9)
        previous = w
    assert any(g != 0.0 for g in grads)
    logged = {row["series"] for row in result.trajectory}
    assert {"loss_cls", "loss_align", "lr_alpha"} <= logged


def test_fitted_schedule_logs_the_polynomial(tiny) -> None:
    result = train_run(smoke_config(method="lfm", modalities=TAV, max_epochs=2,
                                    method_params={"schedule": "fitted"}), dataset=tiny)
    assert result.status == "ok"
    assert list(series_by_step(result, "weight_cls", "").values()) == pytest.approx(
        [fitted_weights(0)[0], fitted_weights(1)[0]])
