"""InfoReg: window rate, Fisher trace, scores and regulation weights by hand; the proximal gradient on a
real model; the objective; windows per modality or from one modality; smoke runs with 2 and 3 modalities."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, series_by_step, smoke_config, whole_split
from torch.nn import functional as F

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.inforeg import (
    STATE_KEY,
    STEP_SCORES_KEY,
    add_proximal_gradient,
    fisher_trace,
    half_bias_logits,
    leading_modality,
    modality_alphas,
    parse_alphas,
    regulation_weights,
    strong_modality,
    true_class_scores,
    window_rate,
    window_source,
)
from bench.train import build_trainer, train_run

torch.set_num_threads(1)


def _cfg(modalities: tuple[str, ...] = TV, **fields):
    return smoke_config(method="inforeg", modalities=modalities, **fields)


def _started(tiny, modalities: tuple[str, ...] = TV, **fields):
    """A trainer whose method has run on_train_start and on_epoch_start (epoch 0)."""
    trainer = build_trainer(_cfg(modalities, **fields), tiny)
    trainer.method.on_train_start(trainer.model, trainer.state)
    trainer.method.on_epoch_start(trainer.model, trainer.state)
    return trainer


# -- formulas by hand ------------------------------------------------------------------------------------


def test_window_rate_by_hand() -> None:
    assert window_rate([]) == 1.0  # epoch 0: no trace yet, the window is open
    # [2]: padded ten zeros; newest mean 2/10, previous mean 0 -> (0.2 - 0) / 0.2 = 1
    assert window_rate([2.0]) == pytest.approx(1.0)
    # [2, 3]: newest (2 + 3)/10 = 0.5, previous 2/10 = 0.2 -> 0.3 / 0.5 = 0.6
    assert window_rate([2.0, 3.0]) == pytest.approx(0.6)
    # span 2, [1, 2, 4]: newest (2 + 4)/2 = 3, previous (1 + 2)/2 = 1.5 -> 1.5 / 3 = 0.5
    assert window_rate([1.0, 2.0, 4.0], span=2) == pytest.approx(0.5)
    # a falling trace: span 2, [4, 2, 1]: newest 1.5, previous 3 -> -1.5 / 1.5 = -1 (closed)
    assert window_rate([4.0, 2.0, 1.0], span=2) == pytest.approx(-1.0)
    assert window_rate([0.0, 0.0]) == 0.0  # no gradient at all: closed (ours; the official divides by 0)


def test_fisher_trace_sums_the_mean_of_each_weight_matrix() -> None:
    # mean([1, 3]) + mean([[4]]) = 2 + 4 = 6
    assert fisher_trace([torch.tensor([1.0, 3.0]), torch.tensor([[4.0]])]) == pytest.approx(6.0)


def test_scores_are_batch_sums_of_true_class_probabilities() -> None:
    labels = torch.tensor([2, 0])
    odds = {"text": [[1, 1, 2], [1, 3, 4]], "vision": [[1, 1, 1], [1, 1, 2]]}
    logits = {m: torch.tensor(o, dtype=torch.float64).log() for m, o in odds.items()}
    scores = true_class_scores(logits, labels)
    assert scores["text"] == pytest.approx(0.625)  # 2/4 + 1/8
    assert scores["vision"] == pytest.approx(7 / 12)  # 1/3 + 1/4


def test_regulation_weights_by_hand() -> None:
    alphas = {"text": 0.95, "vision": 0.95}
    both_open = {"text": True, "vision": True}
    # gap 3 - 2 = 1: 0.95 exp(tanh 1) = 0.95 exp(0.761594) = 0.95 * 2.141688 = 2.034603; the other 0
    assert regulation_weights({"text": 3.0, "vision": 2.0}, alphas, both_open) == pytest.approx(
        {"text": 2.034603300511882, "vision": 0.0})
    # the official visual constant 0.1 when vision leads by 0.25: 0.1 exp(tanh 0.25) = 0.1 exp(0.244919)
    assert regulation_weights({"text": 1.0, "vision": 1.25}, {"text": 0.95, "vision": 0.1}, both_open) == (
        pytest.approx({"text": 0.0, "vision": 0.12775173987844324}))
    # the leader's window closed: nobody; a tie: nobody
    assert regulation_weights({"text": 3.0, "vision": 2.0}, alphas, {"text": False, "vision": True}) == {
        "text": 0.0, "vision": 0.0}
    assert regulation_weights({"text": 2.0, "vision": 2.0}, alphas, both_open) == {"text": 0.0, "vision": 0.0}


def test_three_modalities_regulate_the_leader_by_its_gap_to_the_mean_of_the_others() -> None:
    scores = {"text": 3.0, "audio": 1.0, "vision": 2.0}
    assert leading_modality(scores) == "text"
    assert leading_modality({"text": 3.0, "audio": 3.0, "vision": 1.0}) is None
    # gap = 3 - (1 + 2)/2 = 1.5: 0.95 exp(tanh 1.5) = 0.95 exp(0.905148) = 0.95 * 2.472298 = 2.348684
    betas = regulation_weights(scores, dict.fromkeys(scores, 0.95), dict.fromkeys(scores, True))
    assert betas == pytest.approx({"text": 2.3486835019846546, "audio": 0.0, "vision": 0.0})


def test_proximal_gradient_adds_beta_times_the_drift() -> None:
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    param.grad = torch.tensor([0.5, -0.5])
    fresh = torch.nn.Parameter(torch.tensor([3.0]))  # no gradient yet
    add_proximal_gradient([param, fresh], [torch.tensor([0.0, 4.0]), torch.tensor([1.0])], beta=2.0)
    # [0.5 + 2 (1 - 0), -0.5 + 2 (2 - 4)] = [2.5, -4.5]; the missing gradient becomes 2 (3 - 1) = 4
    assert torch.equal(param.grad, torch.tensor([2.5, -4.5]))
    assert torch.equal(fresh.grad, torch.tensor([4.0]))


def test_alphas_parse_per_modality_and_reject_bad_text() -> None:
    assert parse_alphas("audio=0.95, vision=0.1", ("audio", "vision"), 0.5) == {"audio": 0.95, "vision": 0.1}
    assert parse_alphas("", TV, 0.5) == {"text": 0.5, "vision": 0.5}
    for bad in ("audio=0.9", "text:0.9", "text=x", "text=-1"):
        with pytest.raises(ConfigError, match="alphas"):
            parse_alphas(bad, TV, 0.5)


def test_the_strong_modality_gets_the_official_alpha_and_the_weak_one_a_tenth_of_it_by_hand() -> None:
    # official main.py: audio (CREMA-D's strong modality) leads -> beta = 0.95 exp(tanh gap); visual leads ->
    # beta2 = 0.1 exp(tanh gap). Here "auto": the strong one has the highest summed score so far.
    assert strong_modality({"text": 30.0, "vision": 20.0}, TV) == "text"
    assert strong_modality({"text": 3.0, "vision": 20.0}, TV) == "vision"
    assert strong_modality({}, TV) == "text"  # no score yet: the first in modality order
    assert strong_modality({"text": 30.0}, TV, "vision") == "vision"  # a name wins
    alphas = modality_alphas(TV, "text", 0.95, 0.1)
    assert alphas == {"text": 0.95, "vision": 0.1}
    assert modality_alphas(TAV, "audio", 0.95, 0.1) == {"text": 0.1, "audio": 0.95, "vision": 0.1}
    assert modality_alphas(TV, "text", 0.95, 0.1, "vision=0.3") == {"text": 0.95, "vision": 0.3}
    both_open = {"text": True, "vision": True}
    # the weak modality leads by 1: 0.1 exp(tanh 1) = 0.1 exp(0.761594) = 0.1 * 2.141688 = 0.214169
    assert regulation_weights({"text": 2.0, "vision": 3.0}, alphas, both_open)["vision"] == pytest.approx(
        0.214168768474935)
    # the strong one leads by 1: 0.95 exp(tanh 1) = 2.034603
    assert regulation_weights({"text": 3.0, "vision": 2.0}, alphas, both_open)["text"] == pytest.approx(
        2.034603300511882)
    # the windows: the strong modality's trace (official), each its own, or a named one's
    assert window_source("strong", "text") == "text" and window_source("own", "text") is None
    assert window_source("vision", "text") == "vision"


# -- the method on a real model ----------------------------------------------------------------------------


def test_loss_is_fused_ce_plus_the_unimodal_ce_of_the_half_bias_logits(tiny) -> None:
    trainer = _started(tiny)
    model, state, method = trainer.model, trainer.state, trainer.method
    batch = whole_split(tiny, "train", TV)
    loss, logs = method.loss(model, batch, state)
    with torch.no_grad():
        features = model.encode(batch)
        fused = model.fuse(features)
        unimodal = half_bias_logits(model, features)
    assert torch.allclose(sum(unimodal.values()), fused, atol=1e-6)  # o_text + o_vision = f
    expected = F.cross_entropy(fused, batch.labels) + sum(F.cross_entropy(o, batch.labels) for o in unimodal.values())
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert set(logs) == {"unimodal_loss/text", "unimodal_loss/vision"}
    plain = _started(tiny, method_params={"unimodal_loss": "none"})
    loss, logs = plain.method.loss(plain.model, batch, plain.state)
    with torch.no_grad():
        assert float(loss.detach()) == pytest.approx(float(F.cross_entropy(plain.model(batch).logits, batch.labels)),
                                                    rel=1e-6)
    assert logs == {}


def test_after_backward_pulls_only_the_leading_encoder_toward_its_epoch_start(tiny) -> None:
    trainer = _started(tiny)
    model, state, method = trainer.model, trainer.state, trainer.method
    with torch.no_grad():  # drift every text encoder parameter by 0.1 from its epoch-start value
        for p in model.encoders["text"].parameters():
            p.add_(0.1)
    loss, _ = method.loss(model, whole_split(tiny, "train", TV), state)
    loss.backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    state.scratch[STEP_SCORES_KEY] = {"text": 3.0, "vision": 2.0}  # text leads by 1
    logs = method.after_backward(model, state)
    beta = 2.034603300511882  # 0.95 exp(tanh 1)
    assert logs["beta/text"] == pytest.approx(beta) and logs["beta/vision"] == 0.0
    assert logs["score/text"] == 3.0
    for name, param in model.named_parameters():
        if name.startswith("encoders.text."):  # weights and biases: g + beta * 0.1
            assert torch.allclose(param.grad, before[name] + beta * 0.1, atol=1e-6), name
        else:  # vision encoder and head untouched
            assert torch.equal(param.grad, before[name]), name
    # the Fisher sums hold the squared stepped gradients of the weight matrices; the trace their means
    info = state.scratch[STATE_KEY]
    for m in TV:
        for total, param in zip(info.fisher[m], model.encoder_parameters(m), strict=True):
            assert torch.equal(total, param.grad ** 2)
    traces = method.on_epoch_end(model, state)
    expected = sum(float((p.grad ** 2).mean()) for p in model.encoder_parameters("text"))
    assert traces["fisher_trace/text"] == pytest.approx(expected, rel=1e-6)
    assert info.traces["text"] == [traces["fisher_trace/text"]]


def test_a_leading_weak_modality_is_pulled_with_the_weak_alpha(tiny) -> None:
    trainer = _started(tiny)
    model, state, method = trainer.model, trainer.state, trainer.method
    state.scratch[STATE_KEY].totals = {"text": 50.0, "vision": 10.0}  # text has been the strong modality
    loss, _ = method.loss(model, whole_split(tiny, "train", TV), state)
    loss.backward()
    state.scratch[STEP_SCORES_KEY] = {"text": 2.0, "vision": 3.0}  # vision leads by 1 this step
    logs = method.after_backward(model, state)
    assert logs["beta/vision"] == pytest.approx(0.214168768474935) and logs["beta/text"] == 0.0  # 0.1 exp(tanh 1)
    assert logs["strong/text"] == 1.0 and state.scratch[STATE_KEY].totals == {"text": 52.0, "vision": 13.0}
    former = _started(tiny, method_params={"weak_alpha": 0.95, "window_modality": "own"})  # one alpha for all
    former.state.scratch[STATE_KEY].totals = {"text": 50.0, "vision": 10.0}
    loss, _ = former.method.loss(former.model, whole_split(tiny, "train", TV), former.state)
    loss.backward()
    former.state.scratch[STEP_SCORES_KEY] = {"text": 2.0, "vision": 3.0}
    assert former.method.after_backward(former.model, former.state)["beta/vision"] == pytest.approx(2.034603300511882)


@pytest.mark.parametrize(("window_modality", "totals", "expected"), [
    ("own", {}, {"text": 1.0, "vision": 0.0}), ("text", {}, {"text": 1.0, "vision": 1.0}),
    ("vision", {}, {"text": 0.0, "vision": 0.0}),
    ("strong", {"text": 9.0, "vision": 4.0}, {"text": 1.0, "vision": 1.0}),  # text strong: its window for all
    ("strong", {"text": 4.0, "vision": 9.0}, {"text": 0.0, "vision": 0.0})])  # vision strong
def test_windows_from_each_trace_or_from_one_modality(tiny, window_modality: str, totals, expected) -> None:
    trainer = _started(tiny, method_params={"window_modality": window_modality})
    info = trainer.state.scratch[STATE_KEY]
    info.totals = dict(totals)
    # text [1, 1]: newest 0.2, previous 0.1 -> k 0.5 (open); vision [1, 0]: newest 0.1, previous 0.1 -> 0
    info.traces = {"text": [1.0, 1.0], "vision": [1.0, 0.0]}
    logs = trainer.method.on_epoch_start(trainer.model, trainer.state)
    assert logs["window_rate/text"] == pytest.approx(0.5) and logs["window_rate/vision"] == 0.0
    assert {m: logs[f"in_window/{m}"] for m in TV} == expected


def test_validate_rejects_bad_settings(tiny) -> None:
    for params, match in [({"alpha": -1.0}, "alpha"), ({"span": 0}, "span"), ({"window_modality": "audio"},
                          "window_modality"), ({"unimodal_loss": "aux"}, "unimodal_loss"),
                          ({"alphas": "sound=1"}, "alphas"), ({"weak_alpha": -0.1}, "weak_alpha"),
                          ({"strong_modality": "audio"}, "strong_modality")]:
        with pytest.raises(ConfigError, match=match):
            validate_config(_cfg(method_params=params), tiny.modalities)
    with pytest.raises(ConfigError, match="dev-set"):
        validate_config(_cfg(dev_set=True), tiny.modalities)
    with pytest.raises(ConfigError, match="regression"):
        validate_config(_cfg(task="regression"), tiny.modalities)


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_inforeg_runs_and_its_series_act(tiny, modalities: tuple[str, ...]) -> None:
    result = train_run(_cfg(modalities, max_epochs=3), dataset=tiny)
    assert result.status == "ok", result.error
    assert all(math.isfinite(v) for v in result.metrics.values())
    present = {(row["series"], row["modality"]) for row in result.trajectory}
    series = ("fisher_trace", "in_window", "window_rate", "beta", "score", "unimodal_loss")
    assert {(s, m) for s in series for m in modalities} <= present
    assert all(math.isfinite(row["value"]) for row in result.trajectory)
    betas = [v for m in modalities for v in series_by_step(result, "beta", m).values()]
    assert max(betas) > 0.9 and min(betas) == 0.0  # each step regulates its leader only
    traces = [row["value"] for row in result.trajectory if row["series"] == "fisher_trace"]
    assert len(traces) == 3 * len(modalities) and min(traces) > 0.0


def test_a_closed_window_stops_the_regulation(tiny) -> None:
    # threshold 0.9: epochs 0 and 1 have k = 1; epoch 2 has k = T_1 / (T_0 + T_1) < 0.9 unless T_1 > 9 T_0
    result = train_run(_cfg(max_epochs=3, method_params={"threshold": 0.9}), dataset=tiny)
    assert result.status == "ok", result.error
    for m in TV:
        rows = {row["epoch"]: row["value"] for row in result.trajectory
                if row["series"] == "in_window" and row["modality"] == m}
        assert rows == {0: 1.0, 1: 1.0, 2: 0.0}
        epoch_two = [row["value"] for row in result.trajectory
                     if row["series"] == "beta" and row["modality"] == m and row["epoch"] == 2]
        assert epoch_two and all(v == 0.0 for v in epoch_two)
