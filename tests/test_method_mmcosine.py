"""MMCosine: the scaled cosine logits by hand; the loss and the two evaluation readings on a real model;
configuration errors; whole runs with 2 and 3 modalities."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, bare_state, method_setup, smoke_config

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.mmcosine import CosineModel, cosine_logits, target_logit_mean
from bench.train import train_run

torch.set_num_threads(1)


def _cfg(modalities=TV, **fields):
    return smoke_config(method="mmcosine", modalities=modalities, **fields)


# -- the formulas by hand ----------------------------------------------------------------------------------


def test_cosine_logits_by_hand() -> None:
    z = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # |z_1| = 5, |z_2| = 2
    w = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # class rows: (1, 0) and (1, 1) / sqrt(2)
    # z_1 = (0.6, 0.8): cos with (1, 0) = 0.6, with (1, 1)/sqrt(2) = 1.4 / sqrt(2) = 0.989949
    # z_2 = (0, 1):     cos with (1, 0) = 0,   with (1, 1)/sqrt(2) = 1 / sqrt(2)   = 0.707107
    expected = 10.0 * torch.tensor([[0.6, 1.4 / math.sqrt(2)], [0.0, 1 / math.sqrt(2)]])
    assert torch.allclose(cosine_logits(z, w, 10.0), expected, atol=1e-6)
    # invariant to the scale of a feature or of a class row: only angles count
    assert torch.allclose(cosine_logits(7 * z, torch.tensor([[2.0, 0.0], [5.0, 5.0]]), 10.0), expected, atol=1e-6)
    # the logits are bounded by the scaling
    assert float(cosine_logits(torch.randn(5, 3), torch.randn(4, 3), 15.0).abs().max()) <= 15.0 + 1e-5


def test_target_logit_mean_by_hand() -> None:
    logits = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    # true classes 1 and 1: (2 + (-1)) / 2 = 0.5
    assert target_logit_mean(logits, torch.tensor([1, 1])) == pytest.approx(0.5)


# -- on a real model ---------------------------------------------------------------------------------------


def _setup(tiny, modalities=TV, **fields):
    return method_setup(tiny, "mmcosine", modalities, **fields)


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_loss_is_cross_entropy_of_the_summed_cosine_logits(tiny, modalities) -> None:
    method, model, state, train = _setup(tiny, modalities)
    batch = train.batch(torch.arange(0, 16))
    loss, logs = method.loss(model, batch, state)
    features = model.encode(batch)
    weight = model.head.weight.detach()
    expected_logits = 0
    for m, cols in model.model.head_slices().items():
        expected_logits = expected_logits + cosine_logits(features[m].detach(), weight[:, cols], 10.0)
    expected = torch.nn.functional.cross_entropy(expected_logits, batch.labels)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    assert model.head.bias.grad is None  # the bias takes no part in the cosine loss
    assert all(p.grad is not None for p in model.encoders.parameters())
    assert set(logs) == {"in_window"} | {f"{s}/{m}" for s in ("logit_target", "loss_unimodal") for m in modalities}
    assert all(abs(logs[f"logit_target/{m}"]) <= 10.0 for m in modalities)


def test_evaluation_readings_head_is_official_cosine_is_balancebenchmark(tiny) -> None:
    _, model, _, train = _setup(tiny, TV)
    batch = train.batch(torch.arange(0, 8))
    assert isinstance(model, CosineModel)
    out = model(batch)
    assert torch.equal(out.logits, model.model(batch).logits)  # "head": the plain head output, bias included
    cosine = model.modality_cosine_logits(model.encode(batch))
    assert set(out.modality_logits) == set(TV)
    assert torch.allclose(out.modality_logits["text"], cosine["text"])  # per-modality outputs: the c_m
    _, other, _, _ = _setup(tiny, TV, method_params={"eval_logits": "cosine"})
    assert torch.allclose(other(batch).logits, cosine["text"] + cosine["vision"])


def test_outside_the_window_the_plain_task_loss_on_the_head(tiny) -> None:
    method, model, _, train = _setup(tiny, TV)
    state = bare_state(_cfg(TV, window_start=0, window_end=1, max_epochs=3), epoch=2)
    batch = train.batch(torch.arange(0, 16))
    loss, logs = method.loss(model, batch, state)
    plain = torch.nn.functional.cross_entropy(model.model(batch).logits, batch.labels)
    assert logs["in_window"] == 0.0 and float(loss.detach()) == pytest.approx(float(plain.detach()), rel=1e-6)


@pytest.mark.parametrize(("fields", "message"), [
    ({"dev_set": True}, "no dev-set variant"),
    ({"method_params": {"scaling": 0.0}}, "scaling must be > 0"),
    ({"method_params": {"eval_logits": "both"}}, "eval_logits must be one of"),
    ({"task": "regression"}, "no regression form"),
    ({"method_params": {"alpha": 1.0}}, "unknown parameter"),
])
def test_bad_configurations_are_config_errors(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method="mmcosine", **{"modalities": TV, **fields}))


# -- whole runs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_smoke_run_raises_the_target_cosines(tiny, modalities) -> None:
    result = train_run(_cfg(modalities, max_epochs=4), dataset=tiny)
    assert result.status == "ok"
    assert all(math.isfinite(v) for v in result.metrics.values())
    # training pushes each modality's true-class cosine up: the text one (a clear signal) grows
    rows = [r for r in result.trajectory if r["series"] == "logit_target" and r["modality"] == "text"]
    first, last = rows[0]["value"], rows[-1]["value"]
    assert last > first
    assert all(abs(r["value"]) <= 10.0 for r in rows)
