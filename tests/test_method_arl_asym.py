"""ARL (asymmetric): the magnitude, entropy and weight formulas by hand; the encoder gradients it leaves
(scaled by 1 + w_m after `start`, plain before); the shared-head unimodal outputs; whole runs."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import LN2, TAV, TV, bare_state, series_by_step, smoke_config

from bench.config import ConfigError
from bench.methods import BuildContext, get_method, validate_config
from bench.methods.arl_asym import arl_weights, mean_entropy, modulating, normalised, output_magnitude
from bench.methods.heads import shared_head_outputs
from bench.models import model_spec
from bench.train import SplitTensors, seed_everything, train_run

torch.set_num_threads(1)


def _cfg(modalities=TV, **params):
    return smoke_config(method="arl_asym", modalities=modalities, method_params=params)


# -- the formulas by hand ------------------------------------------------------------------------------


def test_output_magnitude_and_entropy_by_hand() -> None:
    # |o| = [[1, 2], [3, 0]]: batch means per class (2, 1), summed: 3
    assert output_magnitude(torch.tensor([[1.0, -2.0], [3.0, 0.0]])) == pytest.approx(3.0)
    # equal logits: p = (1/2, 1/2), entropy ln 2 per sample
    assert mean_entropy(torch.zeros(4, 2)) == pytest.approx(LN2)
    # one certain sample (entropy ~0) and one uniform over 2 (ln 2): mean ln 2 / 2
    assert mean_entropy(torch.tensor([[100.0, -100.0], [0.0, 0.0]])) == pytest.approx(LN2 / 2, abs=1e-9)
    assert normalised({"a": 3.0, "b": 1.0}) == {"a": 0.75, "b": 0.25}
    assert normalised({"a": 0.0, "b": 0.0}) == {"a": 0.5, "b": 0.5}


def test_arl_weights_by_hand() -> None:
    # magnitude shares c^ = (3/4, 1/4); entropy shares (1/4, 3/4) floored at 0.3 -> (0.3, 0.75);
    # inverses (3.3333, 1.3333) normalised u = (0.714286, 0.285714);
    # s_a = (1 - 3/4) 0.714286 = 0.178571, s_b = (1 - 1/4) 0.285714 = 0.214286;
    # softmax(8 s) = softmax(1.428571, 1.714286): w_a = 1 / (1 + e^0.285714) = 0.429053
    weights = arl_weights({"a": 3.0, "b": 1.0}, {"a": 0.2, "b": 0.6}, temperature=8.0)
    assert weights["a"] == pytest.approx(1 / (1 + math.exp(8 * (0.214286 - 0.178571))), abs=1e-5)
    assert weights["a"] == pytest.approx(0.429053, abs=1e-5) and sum(weights.values()) == pytest.approx(1.0)
    # T = 0: equal weights whatever the scores
    assert arl_weights({"a": 3.0, "b": 1.0}, {"a": 0.2, "b": 0.6}, 0.0) == pytest.approx({"a": 0.5, "b": 0.5})
    # three modalities, equal magnitudes and entropies: s_m = (2/3)(1/3) for all -> 1/3 each
    three = arl_weights({"a": 1.0, "b": 1.0, "c": 1.0}, {"a": 1.0, "b": 1.0, "c": 1.0}, 8.0)
    assert list(three.values()) == pytest.approx([1 / 3] * 3)


def test_modulation_starts_after_the_start_epoch() -> None:
    assert not modulating(5, 5) and modulating(6, 5) and modulating(0, -1)


# -- the gradients on a real model -----------------------------------------------------------------------


def _setup(tiny, modalities=TV, epoch=0, **params):
    cfg = _cfg(modalities, **params)
    state = bare_state(cfg, epoch=epoch)
    seed_everything(cfg.seed)
    spec = model_spec(cfg, tiny.feature_dims, tiny.num_classes)
    method = get_method("arl_asym")
    model = method.build(BuildContext(spec, cfg, state.params, {}))
    batch = SplitTensors(tiny.train, modalities, torch.device("cpu")).batch(torch.arange(0, 16))
    return method, model, state, batch


def _plain_encoder_grads(model, batch, coefficient, modalities):
    """d(L_f + coefficient sum_m L_m)/d encoder_m, the unimodal outputs W_m z_m + b by hand."""
    ce = torch.nn.functional.cross_entropy
    features = model.encode(batch)
    objective = ce(model.fuse(features), batch.labels)
    for m in modalities:  # the concat head's columns of m, the others' zero: W[:, cols_m] z_m + b
        cols = model.head_slices()[m]
        objective = objective + coefficient * ce(features[m] @ model.head.weight[:, cols].T + model.head.bias,
                                                 batch.labels)
    return {m: torch.autograd.grad(objective, list(model.encoders[m].parameters()), retain_graph=True)
            for m in modalities}


def test_shared_head_outputs_zero_the_other_modalities(tiny) -> None:
    _, model, _, batch = _setup(tiny, TAV)
    features = model.encode(batch)
    outputs = shared_head_outputs(model, features)
    for m, cols in model.head_slices().items():
        assert torch.allclose(outputs[m], features[m] @ model.head.weight[:, cols].T + model.head.bias, atol=1e-6)


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_after_start_each_encoder_gradient_is_scaled_by_one_plus_its_weight(tiny, modalities) -> None:
    method, model, state, batch = _setup(tiny, modalities, epoch=1, start=0, gamma=4.0)
    expected = _plain_encoder_grads(model, batch, 4.0, modalities)
    model.zero_grad(set_to_none=True)
    loss, logs = method.loss(model, batch, state)
    loss.backward()
    assert sum(logs[f"weight/{m}"] for m in modalities) == pytest.approx(1.0)
    for m in modalities:
        scale = 1.0 + logs[f"weight/{m}"]
        for param, grad in zip(model.encoders[m].parameters(), expected[m], strict=True):
            assert torch.allclose(param.grad, scale * grad, rtol=1e-4, atol=1e-7)
    # the head's gradient is not scaled: the plain objective's
    objective = loss.detach()
    expected_loss = logs["loss_multimodal"] + 4.0 * sum(logs[f"loss_unimodal/{m}"] for m in modalities)
    assert float(objective) == pytest.approx(expected_loss, rel=1e-5)


def test_up_to_start_plain_gradients_and_unit_unimodal_weight(tiny) -> None:
    method, model, state, batch = _setup(tiny, TV, epoch=5, start=5, gamma=4.0)
    expected = _plain_encoder_grads(model, batch, 1.0, TV)
    model.zero_grad(set_to_none=True)
    loss, logs = method.loss(model, batch, state)
    loss.backward()
    assert not any(key.startswith("weight/") for key in logs)
    for m in TV:
        for param, grad in zip(model.encoders[m].parameters(), expected[m], strict=True):
            assert torch.allclose(param.grad, grad, rtol=1e-4, atol=1e-7)


def test_released_weights_are_one_half_each(tiny) -> None:
    method, model, state, batch = _setup(tiny, TV, epoch=1, start=0, weight_source="released")
    expected = _plain_encoder_grads(model, batch, 4.0, TV)
    model.zero_grad(set_to_none=True)
    loss, logs = method.loss(model, batch, state)
    loss.backward()
    assert logs["weight/text"] == logs["weight/vision"] == 0.5
    for param, grad in zip(model.encoders["text"].parameters(), expected["text"], strict=True):
        assert torch.allclose(param.grad, 1.5 * grad, rtol=1e-4, atol=1e-7)


# -- configuration and whole runs ---------------------------------------------------------------------


@pytest.mark.parametrize(("params", "message"), [
    ({"weight_source": "other"}, "weight_source must be one of"),
    ({"entropy_floor": 1.0}, "entropy_floor"),
    ({"gamma": -1.0}, "gamma >= 0"),
])
def test_bad_configurations_are_config_errors(params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(_cfg(TV, **params))


def test_regression_is_refused() -> None:
    with pytest.raises(ConfigError, match="no regression form"):
        validate_config(smoke_config(method="arl_asym", modalities=TV, task="regression"))


def test_smoke_run_logs_weights_that_move(tiny) -> None:
    result = train_run(_cfg(TV, start=-1), dataset=tiny)
    assert result.status == "ok"
    text = series_by_step(result, "weight", "text")
    vision = series_by_step(result, "weight", "vision")
    assert text and set(text) == set(vision)
    assert all(text[s] + vision[s] == pytest.approx(1.0) for s in text)
    assert len({round(v, 6) for v in text.values()}) > 1  # computed per batch, not a constant
    assert series_by_step(result, "entropy", "text") and series_by_step(result, "magnitude", "vision")
