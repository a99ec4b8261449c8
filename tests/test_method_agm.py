"""AGM: Shapley mono-modal outputs, scores, r / tau / k by hand, the gradient scaling, the clip rule, runs."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
import torch
from tiny import TAV, TV, bare_state, series_by_step, smoke_config, whole_split

from bench.config import ConfigError
from bench.methods import TrainState, get_method, validate_config
from bench.methods.agm import (
    STATE_KEY,
    AGMState,
    agm_coefficient,
    clip_if_head_gradient_large,
    coalition_logits,
    mono_modal_outputs,
    mono_modal_scores,
    record_scores,
    relative_strengths,
    scale_gradient,
)
from bench.models import EncoderSize, LateFusionModel, ModelSpec, model_spec
from bench.train import SplitTensors, seed_everything, train_run

torch.set_num_threads(1)

E = math.e


def _cfg(modalities: tuple[str, ...] = TV, **fields):
    return smoke_config(method="agm", modalities=modalities, **fields)


def _state(modalities: tuple[str, ...] = TV, epoch: int = 0, **fields) -> TrainState:
    return bare_state(_cfg(modalities, **fields), epoch)


def _f(*values: float) -> torch.Tensor:
    return torch.tensor([list(values)], dtype=torch.float64)  # (1, K)


def _subsets(modalities: tuple[str, ...]) -> list[frozenset[str]]:
    return [frozenset(c) for size in range(len(modalities) + 1) for c in combinations(modalities, size)]


# -- Shapley outputs --------------------------------------------------------------------------------------


def test_two_modalities_closed_form_by_hand() -> None:
    # o_a = 1/2 (f_a - f_0) + 1/2 (f_av - f_v) + f_0/2: the two f_0 halves cancel -> (f_av - f_v + f_a) / 2
    coalitions = {frozenset(TV): _f(1.0, 2.0), frozenset({"text"}): _f(0.5, 0.0),
                  frozenset({"vision"}): _f(0.2, 1.0), frozenset(): _f(0.1, 0.1)}
    outputs = mono_modal_outputs(coalitions, TV)
    # text:   ((1.0 - 0.2 + 0.5), (2.0 - 1.0 + 0.0)) / 2 = (0.65, 0.5)
    assert outputs["text"][0].tolist() == pytest.approx([0.65, 0.5])
    # vision: ((1.0 - 0.5 + 0.2), (2.0 - 0.0 + 1.0)) / 2 = (0.35, 1.5)
    assert outputs["vision"][0].tolist() == pytest.approx([0.35, 1.5])


def test_three_modalities_by_hand() -> None:
    # weights |S|!(2-|S|)!/3!: |S| = 0 -> 1/3, 1 -> 1/6, 2 -> 1/3
    f = {"": 0.3, "t": 1.0, "a": 2.0, "v": 4.0, "ta": 3.5, "tv": 5.5, "av": 6.0, "tav": 8.0}
    names = {"t": "text", "a": "audio", "v": "vision"}
    coalitions = {frozenset(names[c] for c in key): _f(value) for key, value in f.items()}
    outputs = mono_modal_outputs(coalitions, TAV)
    # o_t = 0.3/3 + (1-0.3)/3 + (3.5-2)/6 + (5.5-4)/6 + (8-6)/3 = 0.1 + 0.2333 + 0.25 + 0.25 + 0.6667 = 1.5
    assert outputs["text"].item() == pytest.approx(1.5)
    # o_a = 0.1 + (2-0.3)/3 + (3.5-1)/6 + (6-4)/6 + (8-5.5)/3 = 0.1 + 0.5667 + 0.4167 + 0.3333 + 0.8333 = 2.25
    assert outputs["audio"].item() == pytest.approx(2.25)
    # o_v = 0.1 + (4-0.3)/3 + (5.5-1)/6 + (6-2)/6 + (8-3.5)/3 = 0.1 + 1.2333 + 0.75 + 0.6667 + 1.5 = 4.25
    assert outputs["vision"].item() == pytest.approx(4.25)  # 1.5 + 2.25 + 4.25 = 8 = f_tav


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_outputs_sum_to_the_full_output(modalities: tuple[str, ...]) -> None:
    generator = torch.Generator().manual_seed(0)
    coalitions = {s: torch.randn(5, 3, generator=generator) for s in _subsets(modalities)}
    outputs = mono_modal_outputs(coalitions, modalities)
    total = sum(outputs.values())
    assert torch.allclose(total, coalitions[frozenset(modalities)], atol=1e-6)


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_coalitions_equal_forwards_with_zeroed_inputs(tiny, modalities: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    model = LateFusionModel(model_spec(_cfg(modalities), tiny.feature_dims, tiny.num_classes)).train()
    batch = SplitTensors(tiny.train, modalities, torch.device("cpu")).batch(torch.arange(8))
    coalitions = coalition_logits(model, batch)
    assert model.training  # restored
    assert set(coalitions) == set(_subsets(modalities)) - {frozenset(modalities)}
    model.eval()
    for subset, logits in coalitions.items():
        missing = tuple(m for m in modalities if m not in subset)
        assert torch.allclose(logits, model(batch.with_zeroed(missing)).logits, atol=1e-6), subset
        assert logits.requires_grad  # autograd stays on


# -- scores, strengths, coefficients by hand --------------------------------------------------------------


def test_scores_by_hand_with_the_probability_floor() -> None:
    labels = torch.tensor([2, 0])
    # odds 1:1:2 -> p = 0.5 -> -log 0.5 = 0.693147; odds 1:3:4 -> p = 1/8 -> -log 1/8 = 2.079442
    text = torch.tensor([[1.0, 1.0, 2.0], [1.0, 3.0, 4.0]]).log()
    # p_y = e^-30 / (2 + e^-30) ~ 5e-14 < 1e-8: floored, -log 1e-8 = 18.420681 for both samples
    vision = torch.tensor([[0.0, 0.0, -30.0], [-30.0, 0.0, 0.0]])
    scores = mono_modal_scores({"text": text, "vision": vision}, labels)
    assert scores["text"] == pytest.approx(1.3862943611198906, rel=1e-6)  # (0.693147 + 2.079442)/2 = log 4
    assert scores["vision"] == pytest.approx(18.420680743952367, rel=1e-6)


def test_r_tau_and_k_by_hand_over_two_steps() -> None:
    agm = AGMState()
    # step 1: s = (0.5, 1.5), mean 1.0; r_text = exp(2 (1.0 - 0.5)) = e, r_vision = exp(-1); S = 0 -> tau = 1
    record_scores(agm, {"text": 0.5, "vision": 1.5})
    assert agm.strengths == pytest.approx({"text": E, "vision": 1 / E})
    assert agm.taus == {"text": 1.0, "vision": 1.0}
    assert agm.running_before == {"text": 0.0, "vision": 0.0}
    # k = exp(2 min(tau - r, 7)): text exp(2 (1 - 2.718282)) = exp(-3.436564) = 0.032175,
    # vision exp(2 (1 - 0.367879)) = exp(1.264241) = 3.540405
    assert agm_coefficient(agm.taus["text"], agm.strengths["text"], 2.0, 7.0) == pytest.approx(
        0.0321750601216774)
    assert agm_coefficient(agm.taus["vision"], agm.strengths["vision"], 2.0, 7.0) == pytest.approx(
        3.540404965572138)
    assert agm.running == pytest.approx({"text": 0.5, "vision": 1.5})  # updated after k
    # step 2: s = (0.8, 1.2), mean 1.0: r_text = exp(0.4) = 1.491825, r_vision = exp(-0.4) = 0.670320;
    # tau from S = (0.5, 1.5): tau_text = e, tau_vision = 1/e
    record_scores(agm, {"text": 0.8, "vision": 1.2})
    assert agm.strengths == pytest.approx({"text": 1.4918246976412703, "vision": 0.6703200460356393})
    assert agm.taus == pytest.approx({"text": E, "vision": 1 / E})
    # text exp(2 (2.718282 - 1.491825)) = exp(2.452915) = 11.622167 (weaker than its history: boosted)
    # vision exp(2 (0.367879 - 0.670320)) = exp(-0.604881) = 0.546139
    assert agm_coefficient(agm.taus["text"], agm.strengths["text"], 2.0, 7.0) == pytest.approx(
        11.622167450780502)
    assert agm_coefficient(agm.taus["vision"], agm.strengths["vision"], 2.0, 7.0) == pytest.approx(
        0.5461392988221828)
    assert agm.running == pytest.approx({"text": 0.65, "vision": 1.35})  # (0.5 + 0.8)/2, (1.5 + 1.2)/2


def test_three_modality_strengths_and_the_cap_c() -> None:
    # n/(n-1) = 3/2; s = (0.3, 0.6, 0.9), mean 0.6: exp(1.5 * 0.3) = exp(0.45) = 1.568312, 1, exp(-0.45)
    assert relative_strengths({"text": 0.3, "audio": 0.6, "vision": 0.9}) == pytest.approx(
        {"text": 1.568312185490169, "audio": 1.0, "vision": 0.6376281516217733})
    # tau - r = 10 - 1 = 9 > c = 7: k = exp(2 * 7) = exp(14) = 1202604.28; no lower clip
    assert agm_coefficient(10.0, 1.0, 2.0, 7.0) == pytest.approx(1202604.2841647768)
    assert agm_coefficient(1.0, 10.0, 2.0, 7.0) == pytest.approx(math.exp(-18.0))  # 2 * (1 - 10)


# -- the gradient scaling ---------------------------------------------------------------------------------


def test_scale_gradient_multiplies_the_gradient_reaching_its_input() -> None:
    stand_in = torch.tensor([[0.3, -1.2, 2.0]], requires_grad=True)  # a leaf in place of o_m
    upstream = torch.tensor([[1.0, 2.0, -4.0]])
    scaled = scale_gradient(stand_in, 0.25)
    assert torch.equal(scaled, stand_in)  # identity forward
    (scaled * upstream).sum().backward()
    assert stand_in.grad.tolist() == [[0.25, 0.5, -1.0]]  # 0.25 * (1, 2, -4)


def test_zeroed_passes_get_gradient_when_the_coefficients_differ() -> None:
    # n = 2: o_text = (f_tv - f_v + f_t)/2, o_vision = (f_tv - f_t + f_v)/2; loss = g . (k_t o_t + k_v o_v)
    leaves = {s: torch.zeros(1, 2, requires_grad=True) for s in _subsets(TV)}
    outputs = mono_modal_outputs(leaves, TV)
    fused = scale_gradient(outputs["text"], 0.5) + scale_gradient(outputs["vision"], 2.0)
    (fused * torch.tensor([[1.0, -2.0]])).sum().backward()
    g = [1.0, -2.0]
    # f_tv: (k_t + k_v)/2 = 1.25; f_t: (k_t - k_v)/2 = -0.75; f_v: (k_v - k_t)/2 = 0.75; f_0 cancels: 0
    assert leaves[frozenset(TV)].grad.tolist() == [[1.25 * g[0], 1.25 * g[1]]]
    assert leaves[frozenset({"text"})].grad.tolist() == [[-0.75 * g[0], -0.75 * g[1]]]
    assert leaves[frozenset({"vision"})].grad.tolist() == [[0.75 * g[0], 0.75 * g[1]]]
    assert leaves[frozenset()].grad.tolist() == [[0.0, 0.0]]


# -- the clip rule -----------------------------------------------------------------------------------------


def _model_with_grads(head_value: float) -> LateFusionModel:
    spec = ModelSpec(modalities=TV, input_dims=(("text", 3), ("vision", 2)),
                     sizes=(("text", EncoderSize(4, 3)), ("vision", EncoderSize(2, 2))), num_classes=3)
    model = LateFusionModel(spec)
    for param in model.parameters():
        param.grad = torch.full_like(param, 5.0)  # large encoder gradients: the rule looks at the head only
    model.head.weight.grad = torch.full_like(model.head.weight, 0.5)
    model.head.weight.grad[1, 2] = head_value
    return model


@pytest.mark.parametrize(("head_value", "fires"), [(1.0, False), (-1.0, False), (1.5, True), (-1.0001, True)])
def test_clip_fires_only_when_a_head_weight_gradient_leaves_the_unit_interval(head_value: float,
                                                                                fires: bool) -> None:
    model = _model_with_grads(head_value)
    before = [p.grad.clone() for p in model.parameters()]
    logs = get_method("agm").after_backward(model, _state())
    assert logs == {"clip_fired": float(fires)}
    norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))
    if fires:
        assert norm == pytest.approx(1.0, rel=1e-5)  # global norm clipped to 1
    else:
        assert all(torch.equal(p.grad, b) for p, b in zip(model.parameters(), before, strict=True))
    assert clip_if_head_gradient_large(_model_with_grads(0.0)) is False


# -- the method on real batches ---------------------------------------------------------------------------


def _batch_and_model(tiny, modalities: tuple[str, ...] = TV):
    cfg = _cfg(modalities)
    torch.manual_seed(0)
    model = LateFusionModel(model_spec(cfg, tiny.feature_dims, tiny.num_classes)).train()
    return model, SplitTensors(tiny.train, modalities, torch.device("cpu")).batch(torch.arange(16))


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_loss_is_ce_of_the_full_output_and_first_step_tau_is_one(tiny, modalities: tuple[str, ...]) -> None:
    model, batch = _batch_and_model(tiny, modalities)
    loss, logs = get_method("agm").loss(model, batch, _state(modalities))
    plain = torch.nn.functional.cross_entropy(model(batch).logits, batch.labels)
    assert loss.item() == pytest.approx(plain.item(), abs=1e-6)  # sum_m o_m = f_M
    for m in modalities:
        assert logs[f"tau/{m}"] == 1.0 and logs[f"running_score/{m}"] == 0.0
        assert logs[f"strength/{m}"] == logs[f"r/{m}"]
        assert logs[f"coeff/{m}"] == pytest.approx(math.exp(2.0 * min(1.0 - logs[f"r/{m}"], 7.0)))
    assert math.prod(logs[f"r/{m}"] for m in modalities) == pytest.approx(1.0)  # the log-strengths sum to 0


def test_k_is_one_outside_the_window_not_the_last_value(tiny) -> None:
    model, batch = _batch_and_model(tiny)
    method = get_method("agm")
    state = _state(window_start=0, window_end=0, max_epochs=2)
    _, inside = method.loss(model, batch, state)  # epoch 0: modulated
    assert inside["coeff/text"] != 1.0 and inside["in_window"] == 1.0
    state.epoch = 1
    _, outside = method.loss(model, batch, state)
    assert outside["coeff/text"] == outside["coeff/vision"] == 1.0 and outside["in_window"] == 0.0
    assert outside["tau/text"] != 1.0  # the running scores still move outside the window


def test_gradients_follow_the_coefficients(tiny) -> None:
    # with every k = 1 (outside the window) sum_m o_m is f_M as a linear combination of the f_S: each zeroed
    # pass's terms cancel, so the parameter gradients are exactly those of plain CE on f_M
    model, batch = _batch_and_model(tiny)
    state = _state(window_start=0, window_end=0, max_epochs=2, epoch=1)
    loss, _ = get_method("agm").loss(model, batch, state)
    loss.backward()
    agm_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(batch).logits, batch.labels).backward()
    for agm_grad, param in zip(agm_grads, model.parameters(), strict=True):
        assert torch.allclose(agm_grad, param.grad, atol=1e-6)


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_head_bias_gradient_is_the_mean_coefficient_times_plain_ce(tiny, modalities: tuple[str, ...]) -> None:
    # b enters every f_S once: in each Shapley difference f_{S+m} - f_S it cancels, so only f_empty / n
    # carries it: d o_m / d b = 1/n, dL/db = sum_m k_m / n * dCE/dout = mean(k) * (plain CE bias gradient)
    model, batch = _batch_and_model(tiny, modalities)
    state = _state(modalities)
    # a history in which text did much better: tau_text > 1 > tau_others, so the k differ clearly from 1
    history = {m: (0.0 if m == "text" else 1.0) for m in modalities}
    state.scratch[STATE_KEY] = AGMState(running=history, measured=3)
    loss, logs = get_method("agm").loss(model, batch, state)
    loss.backward()
    agm_bias_grad = model.head.bias.grad.clone()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(batch).logits, batch.labels).backward()
    mean_coeff = sum(logs[f"coeff/{m}"] for m in modalities) / len(modalities)
    assert abs(mean_coeff - 1.0) > 0.1  # modulation is active
    assert torch.allclose(agm_bias_grad, mean_coeff * model.head.bias.grad, atol=1e-6)


def test_validation_errors() -> None:
    with pytest.raises(ConfigError, match="needs 2 to 3 modalities"):
        validate_config(_cfg(("text",)))
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        validate_config(_cfg(method_params={"alpha": 0.0}))
    with pytest.raises(ConfigError, match="clip_c must be > 0"):
        validate_config(_cfg(method_params={"clip_c": -1.0}))


# -- whole runs --------------------------------------------------------------------------------------------


def test_dev_set_scores_are_reused_between_refreshes(tiny) -> None:
    cfg = _cfg(dev_set=True, ratio_every=2, lr=0.05)
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok"
    scores = series_by_step(result, "score", "vision")
    # 3 steps an epoch, 2 epochs; trajectory step t holds optimizer step t - 1; refreshes at 0, 2, 4
    assert sorted(scores) == [1, 2, 3, 4, 5, 6]
    assert scores[2] == scores[1] and scores[4] == scores[3] and scores[6] == scores[5]
    assert scores[3] != scores[1] and scores[5] != scores[3]
    # the first value: the initial model's mean clamped NLL of o_vision over the 16 dev rows
    seed_everything(cfg.seed)
    initial = LateFusionModel(model_spec(cfg, tiny.feature_dims, tiny.num_classes)).eval()
    whole = whole_split(tiny, "dev", TV)
    with torch.no_grad():
        coalitions = coalition_logits(initial, whole) | {frozenset(TV): initial(whole).logits}
        expected = mono_modal_scores(mono_modal_outputs(coalitions, TV), whole.labels)["vision"]
    assert scores[1] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_smoke_run_finishes_with_the_logged_series(tiny, modalities: tuple[str, ...]) -> None:
    result = train_run(_cfg(modalities), dataset=tiny)
    assert result.status == "ok"
    assert all(math.isfinite(v) for v in result.metrics.values())
    logged = {(row["series"], row["modality"]) for row in result.trajectory if row["split"] == "train"}
    series = ("score", "running_score", "r", "tau", "coeff", "strength")
    assert {(s, m) for s in series for m in modalities} | {("clip_fired", "")} <= logged


def test_the_regression_score_is_the_mean_squared_error_or_mcrs_inverse() -> None:
    from bench.methods.agm import mono_modal_scores

    outputs = {"text": torch.tensor([[0.5], [-1.0], [2.0]]), "vision": torch.tensor([[1.0], [-1.0], [0.0]])}
    targets = torch.tensor([1.0, -1.0, 0.0])
    # text: squared errors 0.25, 0, 4 -> mean 4.25 / 3; vision: exact -> 0
    mse = mono_modal_scores(outputs, targets, "regression", "mse")
    assert mse["text"] == pytest.approx(4.25 / 3) and mse["vision"] == 0.0
    # MCR's AGM_reg: batch size / MSE = 3 / (4.25 / 3) = 9 / 4.25; an exact modality is capped, not infinite
    inverse = mono_modal_scores(outputs, targets, "regression", "mcr_inverse")
    assert inverse["text"] == pytest.approx(9 / 4.25) and inverse["vision"] == pytest.approx(3 / 1e-12)


def test_agm_trains_on_the_regression_task_with_scaled_gradients(tiny) -> None:
    from bench.plan.resolve import make_config
    from bench.train import train_run

    cfg = make_config("synth-mosi", "smoke", method="agm", modalities=TV, task="regression",
                      method_params={"alpha": 2.0})
    result = train_run(cfg, dataset=tiny)
    coeffs = [row["value"] for row in result.trajectory if row["series"] == "coeff"]
    assert result.status == "ok" and math.isfinite(result.metrics["test_mae"])
    assert coeffs and any(abs(k - 1.0) > 1e-6 for k in coeffs)  # the modulation really acts
