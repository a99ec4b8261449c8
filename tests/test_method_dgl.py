"""DGL: the disentangled objective by hand (encoders: unimodal gradient only; head: fused gradient only),
the same on a real model, the logged gradient sizes, configuration and a whole run."""

from __future__ import annotations

import pytest
import torch
from tiny import TAV, TV, bare_state, series_by_step, smoke_config

from bench.config import ConfigError
from bench.methods import BuildContext, get_method, validate_config
from bench.methods.dgl import disentangled_objective, mean_abs_gradient
from bench.models import model_spec
from bench.train import SplitTensors, seed_everything, train_run

torch.set_num_threads(1)


def _cfg(modalities=TV, **params):
    return smoke_config(method="dgl", modalities=modalities, method_params=params)


def test_disentangled_objective_by_hand() -> None:
    # encoders: z_a = a, z_v = v (scalars); head: fuse = w_a z_a + w_v z_v; unimodal outputs w_m z_m.
    a, v = torch.tensor(2.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    w_a, w_v = torch.tensor(0.5, requires_grad=True), torch.tensor(-1.0, requires_grad=True)
    features = {"a": a * 1.0, "v": v * 1.0}
    fused = w_a * features["a"].detach() + w_v * features["v"].detach()  # "loss" = the fused output
    unimodal = 4.0 * (w_a * features["a"] + w_v * features["v"])  # alpha = 4
    objective = disentangled_objective(fused, unimodal, features)
    # value: fused 0.5*2 - 3 = -2; unimodal 4 * (1 - 3) = -8; sum -10
    assert float(objective.detach()) == pytest.approx(-10.0)
    objective.backward()
    # encoders: alpha w_m only (4 * 0.5 = 2, 4 * -1 = -4); the fused term never reaches them
    assert float(a.grad) == pytest.approx(2.0) and float(v.grad) == pytest.approx(-4.0)
    # head: z_m from the fused term only (2 and 3), not 2 + 4 * 2 = 10 as joint training would give
    assert float(w_a.grad) == pytest.approx(2.0) and float(w_v.grad) == pytest.approx(3.0)


def test_mean_abs_gradient_by_hand() -> None:
    p, q, r = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    p.grad, q.grad = torch.tensor([1.0, -3.0]), torch.tensor([0.5, 0.5])
    assert mean_abs_gradient([p, q, r]) == pytest.approx(2.0 + 0.5)  # r has no gradient: 0


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_real_model_gets_the_disentangled_gradients(tiny, modalities) -> None:
    cfg = _cfg(modalities, alpha=3.0)
    state = bare_state(cfg)
    seed_everything(cfg.seed)
    method = get_method("dgl")
    model = method.build(BuildContext(model_spec(cfg, tiny.feature_dims, tiny.num_classes), cfg, state.params, {}))
    batch = SplitTensors(tiny.train, modalities, torch.device("cpu")).batch(torch.arange(0, 16))
    ce = torch.nn.functional.cross_entropy
    # references by hand: unimodal outputs W[:, cols_m] z_m + b; fused = the model's forward
    features = model.encode(batch)
    unimodal = 3.0 * sum(ce(features[m] @ model.head.weight[:, c].T + model.head.bias, batch.labels)
                         for m, c in model.head_slices().items())
    fused = ce(model(batch).logits, batch.labels)
    encoders = list(model.encoders.parameters())
    head = list(model.head.parameters())
    expected_encoders = torch.autograd.grad(unimodal, encoders, retain_graph=True)
    expected_head = torch.autograd.grad(fused, head)
    model.zero_grad(set_to_none=True)
    loss, logs = method.loss(model, batch, state)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(float((fused + unimodal).detach()), rel=1e-5)
    for param, grad in zip(encoders, expected_encoders, strict=True):
        assert torch.allclose(param.grad, grad, rtol=1e-4, atol=1e-7)
    for param, grad in zip(head, expected_head, strict=True):
        assert torch.allclose(param.grad, grad, rtol=1e-4, atol=1e-7)
    logged = method.after_backward(model, state)
    assert set(logged) == {f"grad/{m}" for m in modalities} and all(v > 0 for v in logged.values())
    assert logs["loss_multimodal"] == pytest.approx(float(fused.detach()), rel=1e-5)


@pytest.mark.parametrize(("fields", "message"), [
    ({"method_params": {"alpha": 0.0}}, "alpha must be > 0"),
    ({"dev_set": True}, "no dev-set variant"),
    ({"task": "regression"}, "no regression form"),
])
def test_bad_configurations_are_config_errors(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method="dgl", **{"modalities": TV, **fields}))


def test_smoke_run_logs_unimodal_losses_that_fall(tiny) -> None:
    result = train_run(_cfg(TV), dataset=tiny)
    assert result.status == "ok"
    text = series_by_step(result, "loss_unimodal", "text")
    assert len(text) > 2 and series_by_step(result, "grad", "vision")
    steps = sorted(text)
    assert text[steps[-1]] < text[steps[0]]  # the text encoder learns from its unimodal loss alone
