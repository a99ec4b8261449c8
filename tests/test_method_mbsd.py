"""MBSD (BalanceBenchmark's trainer): the pair weight, the logit distance and the KL term by hand; the
objective on a real model inside and outside the window; whole runs with 2 and 3 modalities."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, loss_outside_window, method_setup, series_by_step, smoke_config

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.inforeg import half_bias_logits
from bench.methods.mbsd import pair_terms, weighted_means
from bench.train import train_run

torch.set_num_threads(1)


def _pair(rs_on="logits"):
    first = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]], dtype=torch.float64).log().requires_grad_()
    second = torch.tensor([[0.4, 0.5, 0.1], [0.5, 0.4, 0.1]], dtype=torch.float64).log()
    labels = torch.tensor([0, 2])
    right = torch.tensor([True, False])  # sample 0: the first modality is right; sample 1: neither
    return first, pair_terms(first, second, labels, right, rs_on)


def test_pair_terms_by_hand() -> None:
    _, graph = _pair()
    terms = type(graph)(graph.weight.detach(), graph.rs.detach(), graph.kl.detach())
    # sample 0: p_first,y = 0.7, p_second,y = 0.4 -> w = 0.3
    # KL = p_w (log p_w - p_s) = 0.4 (ln 0.4 - 0.7) = 0.4 (-0.916291 - 0.7) = -0.646516
    # RS = ((ln 0.7 - ln 0.4)^2 + (ln 0.2 - ln 0.5)^2 + 0) / 3 = (0.313170 + 0.839589) / 3 = 0.384253
    assert float(terms.weight[0]) == pytest.approx(0.3)
    assert float(terms.kl[0]) == pytest.approx(-0.646516, abs=1e-6)
    assert float(terms.rs[0]) == pytest.approx(0.384253, abs=1e-6)
    assert float(terms.weight[1]) == 0.0  # neither right: w = 0
    # on probabilities: ((0.3)^2 + (0.3)^2 + 0) / 3 = 0.06
    assert float(_pair("probs")[1].rs[0].detach()) == pytest.approx(0.06)


def test_kl_term_is_finite_where_the_weak_probability_underflows() -> None:
    first = torch.tensor([[-1000.0, 0.0]])  # p_first,y = 0 for y = 0
    second = torch.tensor([[0.0, 0.0]])  # p_second,y = 0.5
    terms = pair_terms(first, second, torch.tensor([0]), torch.tensor([False]))
    assert float(terms.kl[0]) == 0.0  # p_w log p_w - p_w p_s with p_w = 0: 0 log 0 = 0, not nan


def test_weighted_means_by_hand_and_the_weights_gradient() -> None:
    first, terms = _pair()
    rs, kl = weighted_means([terms])
    # (0.3 * 0.384253 + 0) / 2 = 0.057638;  0.3 * -0.646516 / 2 = -0.096977
    assert float(rs.detach()) == pytest.approx(0.057638, abs=1e-6)
    assert float(kl.detach()) == pytest.approx(-0.096977, abs=1e-6)
    # two pairs: the mean of the pairs
    rs2, _ = weighted_means([terms, terms])
    assert float(rs2.detach()) == pytest.approx(float(rs.detach()))
    # w keeps its gradient (the trainer's in-place writes), unless weight_grad is off: the gradients differ
    (with_w,) = torch.autograd.grad(weighted_means([terms], True)[0], [first], retain_graph=True)
    (without_w,) = torch.autograd.grad(weighted_means([terms], False)[0], [first])
    assert not torch.allclose(with_w, without_w)


# -- on a real model ----------------------------------------------------------------------------------------



@pytest.mark.parametrize("modalities", [TV, TAV])
def test_objective_on_a_real_model(tiny, modalities) -> None:
    method, model, state, train = method_setup(tiny, "mbsd", modalities)
    batch = train.batch(torch.arange(0, 16))
    loss, logs = method.loss(model, batch, state)
    ce = torch.nn.functional.cross_entropy
    features = model.encode(batch)
    logits = half_bias_logits(model, features)
    names = list(logits)
    right = {m: logits[m].argmax(dim=1) == batch.labels for m in names}
    pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    rs, kl = weighted_means([pair_terms(logits[a], logits[b], batch.labels, right[a] | right[b])
                             for a, b in pairs])
    expected = ce(model(batch).logits, batch.labels) + sum(ce(o, batch.labels) for o in logits.values()) + rs + kl
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert logs["loss_rs"] == pytest.approx(float(rs.detach()), rel=1e-6)
    assert logs["in_window"] == 1.0


def test_outside_the_window_only_the_fused_loss(tiny) -> None:
    loss, plain, logs = loss_outside_window(tiny, "mbsd")
    assert loss == pytest.approx(plain, rel=1e-6) and logs == {"in_window": 0.0}


@pytest.mark.parametrize(("fields", "message"), [
    ({"method_params": {"rs_on": "features"}}, "rs_on must be one of"),
    ({"dev_set": True}, "no dev-set variant"),
    ({"task": "regression"}, "has no regression form"),
])
def test_bad_configurations_are_config_errors(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method="mbsd", **fields))


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_runs_log_the_terms(tiny, modalities) -> None:
    result = train_run(smoke_config(method="mbsd", modalities=modalities, max_epochs=2), dataset=tiny)
    assert result.status == "ok" and all(math.isfinite(v) for v in result.metrics.values())
    weights = list(series_by_step(result, "weight_mean", "").values())
    assert weights and any(w > 0 for w in weights)
    assert len(set(series_by_step(result, "loss_rs", "").values())) > 1
    assert {(r["series"], r["modality"]) for r in result.trajectory} >= {("loss_unimodal", m) for m in modalities}
