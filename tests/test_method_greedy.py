"""Greedy: the learning-speed ratios, d_BDR, the running gate mean, the utilisation rate and the official
re-balancing state machine by hand; the MMTM gates and curation on a real model; whole runs."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, method_setup, smoke_config

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.greedy import (
    STATE_KEY,
    Curation,
    GreedyModel,
    bdr_difference,
    running_mean,
    speed_ratio,
    utilisation_rate,
)
from bench.train import train_run

torch.set_num_threads(1)


# -- the formulas by hand ----------------------------------------------------------------------------------


def test_speed_ratio_by_hand() -> None:
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))  # ||a||^2 = 5
    b = torch.nn.Parameter(torch.tensor([2.0]))  # ||b||^2 = 4
    a.grad, b.grad = torch.tensor([0.3, 0.0]), torch.tensor([0.0])  # ||grad||^2 = 0.09
    assert speed_ratio([a, b]) == pytest.approx(0.09 / 9)
    c = torch.nn.Parameter(torch.tensor([3.0]))  # no gradient: counts 0; weights 5 + 4 + 9 = 18
    assert speed_ratio([a, b, c]) == pytest.approx(0.09 / 18)


def test_bdr_difference_by_hand() -> None:
    # log10(1 / 10) - log10(4 / 4) = -1 - 0 = -1
    assert bdr_difference([1.0, 4.0], [10.0, 4.0]) == pytest.approx(-1.0)
    # log10(100 / 1) - log10(1 / 10) = 2 + 1 = 3
    assert bdr_difference([100.0, 1.0], [1.0, 10.0]) == pytest.approx(3.0)
    assert bdr_difference([0.0, 1.0], [1.0, 1.0]) == 0.0  # nothing summed yet


def test_running_mean_and_utilisation_by_hand() -> None:
    # (0.8 + 0.5 * 2) / 3 = 0.6
    assert float(running_mean(torch.tensor(0.5), torch.tensor(0.8), 2)) == pytest.approx(0.6)
    assert float(running_mean(torch.tensor(0.0), torch.tensor(0.8), 0)) == pytest.approx(0.8)  # first mean
    # (0.8 - 0.6) / 0.8 = 0.25
    assert utilisation_rate(0.8, 0.6) == pytest.approx(0.25) and utilisation_rate(0.0, 0.0) == 0.0


def test_curation_state_machine_follows_the_official_rule() -> None:
    state = Curation()
    calls = []

    def ratios(bypass, main):
        def give():
            calls.append(1)
            return bypass, main
        return give

    # locked (before starting_epoch): the sums grow, no curation. d = log10(1/1) - log10(1/1) = 0
    state.after_backward(False, ratios([1.0, 1.0], [1.0, 1.0]), epsilon=0.01, window=2)
    assert not state.active and state.d == 0.0 and len(calls) == 1
    # unlocked: sums (1 + 9, 1 + 0) / (1 + 0, 1 + 0): d = log10(10) - log10(1) = 1 > 0.01: care for modality 0
    state.after_backward(True, ratios([9.0, 0.0], [0.0, 0.0]), epsilon=0.01, window=2)
    assert state.active and state.caring == 0 and state.d == pytest.approx(1.0) and len(calls) == 2
    # curating: no measurement; the window (2) counts down, then ends
    state.after_backward(True, ratios([5.0, 5.0], [5.0, 5.0]), epsilon=0.01, window=2)
    assert state.active and state.steps == 1 and len(calls) == 2
    state.after_backward(True, ratios([5.0, 5.0], [5.0, 5.0]), epsilon=0.01, window=2)
    assert not state.active and len(calls) == 2
    # out of curation again: sums (10, 1 + 99) / (1, 1): d = log10(10) - log10(100) = -1: care for modality 1
    state.after_backward(True, ratios([0.0, 99.0], [0.0, 0.0]), epsilon=0.01, window=2)
    assert state.active and state.caring == 1 and state.d == pytest.approx(-1.0)


def test_small_d_keeps_curation_off() -> None:
    state = Curation()
    # d = log10(1.01 / 1) - log10(1 / 1) = 0.0043 < 0.01
    state.after_backward(True, lambda: ([1.01, 1.0], [1.0, 1.0]), epsilon=0.01, window=5)
    assert not state.active and state.caring == 0 and abs(state.d) < 0.01


# -- on a real model ---------------------------------------------------------------------------------------


def test_mmtm_gates_by_formula_and_curation_uses_the_running_mean(tiny) -> None:
    _, model, _, train = method_setup(tiny, "greedy", TV)
    assert isinstance(model, GreedyModel)
    batch = train.batch(torch.arange(0, 8))
    features = model.encode(batch)
    squeeze = torch.cat([features["text"], features["vision"]], dim=1)
    excitation = torch.relu(squeeze @ model.mmtm_squeeze.weight.T + model.mmtm_squeeze.bias)
    gate_text = torch.sigmoid(excitation @ model.mmtm_excite["text"].weight.T + model.mmtm_excite["text"].bias)
    assert model.mmtm_squeeze.out_features == int(2 * (32 + 32) / 4)
    model.train()
    gated = model.gated(features)
    assert torch.allclose(gated["text"], features["text"] * gate_text, atol=1e-6)
    assert torch.allclose(model.gate_means["text"], gate_text.mean(dim=0), atol=1e-6)  # first mean: the batch's
    cared = model.gated(features, caring=0)  # the second call: the mean of two equal batch means
    assert torch.allclose(cared["text"], features["text"] * model.gate_means["text"], atol=1e-6)
    assert torch.allclose(cared["vision"], gated["vision"], atol=1e-6)  # the other keeps its own gates
    # no gradient reaches the cared modality's excitation layer through its constant gate
    torch.nn.functional.cross_entropy(model.unimodal_heads["text"](cared["text"]), batch.labels).backward()
    assert model.mmtm_excite["text"].weight.grad is None


@pytest.mark.parametrize("objective", ["branches", "fused"])
def test_loss_and_speed_ratios_on_a_real_model(tiny, objective) -> None:
    method, model, state, train = method_setup(tiny, "greedy", TV, method_params={"objective": objective})
    method.on_train_start(model, state)
    batch = train.batch(torch.arange(0, 16))
    loss, logs = method.loss(model, batch, state)
    model.zero_grad(set_to_none=True)
    loss.backward()
    logits, branches = model.predict(model.gated(model.encode(batch)))
    ce = torch.nn.functional.cross_entropy
    expected = (ce(branches["text"], batch.labels) + ce(branches["vision"], batch.labels) if objective == "branches"
                else ce(logits, batch.labels))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    assert torch.allclose(logits, branches["text"] + branches["vision"] if objective == "fused"
                          else (branches["text"] + branches["vision"]) / 2, atol=1e-6)
    logs.update(method.after_backward(model, state))
    curation = state.scratch[STATE_KEY]
    by_hand = [speed_ratio([*model.mmtm_squeeze.parameters(), *model.mmtm_excite[m].parameters()]) for m in TV]
    main = [speed_ratio(list(model.encoders[m].parameters())
                        + (list(model.unimodal_heads[m].parameters()) if objective == "branches" else []))
            for m in TV]
    assert curation.bypass == pytest.approx(by_hand) and curation.main == pytest.approx(main)
    assert logs["d_bdr"] == pytest.approx(math.log10(by_hand[0] / main[0]) - math.log10(by_hand[1] / main[1]))


@pytest.mark.parametrize(("fields", "message"), [
    ({"dev_set": True}, "no dev-set variant"),
    ({"method_params": {"epsilon": -1.0}}, "epsilon must be >= 0"),
    ({"method_params": {"curation_window": 0}}, "curation_window must be >= 1"),
    ({"method_params": {"objective": "sum"}}, "objective must be one of"),
    ({"method_params": {"starting_epoch": -1}}, "starting_epoch must be >= 0"),
    ({"modalities": TAV}, "needs exactly 2 modalities"),
    ({"task": "regression"}, "no regression form"),
])
def test_bad_configurations_are_config_errors(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method="greedy", **{"modalities": TV, **fields}))


# -- whole runs ----------------------------------------------------------------------------------------------


def test_smoke_run_curates_in_windows_and_logs_utilisation(tiny) -> None:
    result = train_run(smoke_config(method="greedy", modalities=TV, max_epochs=5), dataset=tiny)
    assert result.status == "ok" and all(math.isfinite(v) for v in result.metrics.values())
    curation = [r["value"] for r in result.trajectory if r["series"] == "curation"]
    unlocked = [r["value"] for r in result.trajectory if r["series"] == "unlocked"]
    # 4 steps per epoch: locked through epochs 0 and 1 (starting_epoch 2), no curation there
    assert unlocked[:8] == [0.0] * 8 and unlocked[8:] == [1.0] * (len(unlocked) - 8)
    assert curation[:9] == [0.0] * 9  # the first unlocked decision acts from the step after it
    assert 1.0 in curation[9:]
    # a curation lasts the window (5 steps) once it starts: runs of 1.0 are 5 long unless the run ends
    runs, length = [], 0
    for value in curation + [0.0]:
        if value == 1.0:
            length += 1
        elif length:
            runs.append(length)
            length = 0
    assert runs and all(n == 5 for n in runs[:-1])
    valid = {(r["series"], r["modality"]) for r in result.trajectory if r["split"] == "valid"}
    assert {("utilisation", "text"), ("utilisation", "vision")} <= valid
