"""OGM, OGM-GE and ACC: scores, ratios and coefficients by hand, gradient edits, window, noise, dev set."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, bare_state, series_by_step, smoke_config, whole_split

from bench.config import ConfigError
from bench.methods import TrainState, get_method, validate_config
from bench.methods.ogm import (
    acc_coefficients,
    accumulate_step_scores,
    discrepancy_ratios,
    ogm_coefficient,
    scale_gradients_with_noise,
    true_class_probability_sums,
)
from bench.models import EncoderSize, LateFusionModel, ModelSpec, model_spec
from bench.train import SplitTensors, seed_everything, train_run

torch.set_num_threads(1)


def _cfg(method: str, modalities: tuple[str, ...] = TV, **fields):
    return smoke_config(method=method, modalities=modalities, **fields)


def _state(method: str, modalities: tuple[str, ...] = TV, epoch: int = 0, **fields) -> TrainState:
    return bare_state(_cfg(method, modalities, **fields), epoch, generator_seed=123)


def _model(modalities: tuple[str, ...] = TV) -> LateFusionModel:
    """A tiny late-fusion model whose every parameter holds a known random gradient."""
    torch.manual_seed(0)
    dims = {"text": 3, "audio": 2, "vision": 2}
    spec = ModelSpec(modalities=modalities, input_dims=tuple((m, dims[m]) for m in modalities),
                     sizes=tuple((m, EncoderSize(4, 3)) for m in modalities), num_classes=3)
    model = LateFusionModel(spec)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    return model


def _grads(model: LateFusionModel) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _logits_from_odds(rows: list[list[float]]) -> torch.Tensor:
    """Logits log(w): softmax gives w / sum(w), so probabilities can be read off by hand."""
    return torch.tensor(rows, dtype=torch.float64).log()


# -- formulas by hand ------------------------------------------------------------------------------------


def test_scores_ratios_and_official_coefficient_by_hand() -> None:
    labels = torch.tensor([2, 0])
    logits = {
        # sample 0: odds 1:1:2, label 2 -> 2/4 = 0.5;  sample 1: odds 1:3:4, label 0 -> 1/8 = 0.125
        "text": _logits_from_odds([[1, 1, 2], [1, 3, 4]]),
        # sample 0: odds 1:1:1 -> 1/3;  sample 1: odds 1:1:2, label 0 -> 1/4
        "vision": _logits_from_odds([[1, 1, 1], [1, 1, 2]]),
    }
    scores = {m: float(s) for m, s in true_class_probability_sums(logits, labels).items()}
    assert scores["text"] == pytest.approx(0.625)  # 0.5 + 0.125
    assert scores["vision"] == pytest.approx(7 / 12)  # 1/3 + 1/4
    ratios = discrepancy_ratios(scores)
    assert ratios["text"] == pytest.approx(15 / 14)  # (5/8) / (7/12) = 60/56
    assert ratios["vision"] == pytest.approx(14 / 15)
    # text dominant: 1 - tanh(0.5 * 15/14) = 1 - tanh(0.535714...) = 1 - 0.489737 = 0.510263
    assert ogm_coefficient(ratios["text"], 0.5) == pytest.approx(0.5102630086626332)
    assert ogm_coefficient(ratios["vision"], 0.5) == 1.0  # rho < 1: untouched


def test_ratio_one_keeps_k_one_and_the_official_form_jumps_above_it() -> None:
    assert ogm_coefficient(1.0, 0.5, "official") == 1.0  # rho = 1 is not > 1
    assert ogm_coefficient(1.0, 0.5, "shifted") == 1.0  # 1 - tanh(0.5 * relu(0)) = 1
    # just above 1 the official form jumps to 1 - tanh(0.5) = 1 - 0.462117 = 0.537883; shifted stays ~1
    assert ogm_coefficient(1.0 + 1e-9, 0.5, "official") == pytest.approx(0.5378828427399902)
    assert ogm_coefficient(1.0 + 1e-9, 0.5, "shifted") == pytest.approx(1.0)


def test_shifted_form_by_hand() -> None:
    # 1 - tanh(0.5 * relu(15/14 - 1)) = 1 - tanh(0.5/14) = 1 - tanh(0.0357143) = 1 - 0.0356991 = 0.9643009
    assert ogm_coefficient(15 / 14, 0.5, "shifted") == pytest.approx(0.9643008911877307)
    assert ogm_coefficient(0.5, 0.5, "shifted") == 1.0  # relu(-0.5) = 0


def test_three_modalities_divide_by_the_smallest_score() -> None:
    ratios = discrepancy_ratios({"text": 3.0, "audio": 1.5, "vision": 2.0})
    assert ratios == pytest.approx({"text": 2.0, "audio": 1.0, "vision": 4 / 3})  # 3/1.5, 1.5/1.5, 2/1.5
    official = {m: ogm_coefficient(r, 0.5, "official") for m, r in ratios.items()}
    # text 1 - tanh(1.0) = 1 - 0.761594 = 0.238406; audio rho = 1 -> 1; vision 1 - tanh(2/3) = 1 - 0.582783
    assert official == pytest.approx(
        {"text": 0.23840584404423515, "audio": 1.0, "vision": 0.4172170546520898})
    shifted = {m: ogm_coefficient(r, 0.5, "shifted") for m, r in ratios.items()}
    # text 1 - tanh(0.5 * 1) = 0.537883; audio 1 - tanh(0) = 1; vision 1 - tanh(0.5/3) = 1 - 0.165140
    assert shifted == pytest.approx({"text": 0.5378828427399902, "audio": 1.0, "vision": 0.8348595870753707})


def test_acc_boosts_every_non_dominant_modality() -> None:
    # scores 3 : 1 -> rho_text = 3 (dominant), boost = 1 + tanh(0.5 * 3) = 1 + 0.905148 = 1.905148
    assert acc_coefficients(discrepancy_ratios({"text": 3.0, "vision": 1.0}), 0.5) == pytest.approx(
        {"text": 1.0, "vision": 1.9051482536448665})
    # three modalities: dominant text (rho 2), the other two get 1 + tanh(0.5 * 2) = 1 + 0.761594
    coeffs = acc_coefficients(discrepancy_ratios({"text": 3.0, "audio": 1.5, "vision": 2.0}), 0.5)
    assert coeffs == pytest.approx({"text": 1.0, "audio": 1.7615941559557649, "vision": 1.7615941559557649})


# -- gradient edits on a real model ------------------------------------------------------------------------


def test_ogm_scales_only_the_dominant_encoder_weights() -> None:
    model, state = _model(), _state("ogm")
    before = _grads(model)
    accumulate_step_scores(state, {"text": 3.0, "vision": 1.0})  # rho_text = 3
    logs = get_method("ogm").after_backward(model, state)
    k_text = 0.0948517463551336  # 1 - tanh(0.5 * 3) = 1 - 0.905148
    assert logs["coeff/text"] == pytest.approx(k_text)
    assert logs["coeff/vision"] == 1.0
    assert logs["score/text"] == 3.0 and logs["ratio/text"] == 3.0  # 3 / 1
    assert logs["ratio/vision"] == pytest.approx(1 / 3)
    assert logs["in_window"] == 1.0
    text_weights = {f"encoders.text.{n}" for n, p in model.encoders["text"].named_parameters()
                    if p.dim() >= 2}
    assert text_weights == {"encoders.text.lstm.weight_ih_l0", "encoders.text.lstm.weight_hh_l0",
                            "encoders.text.proj.weight"}
    for name, param in model.named_parameters():
        # biases, the vision encoder and the head: as they were
        expected = before[name] * k_text if name in text_weights else before[name]
        assert torch.equal(param.grad, expected), name


def test_include_biases_scales_the_biases_too() -> None:
    model, state = _model(), _state("ogm", method_params={"include_biases": True})
    before = _grads(model)
    accumulate_step_scores(state, {"text": 3.0, "vision": 1.0})
    get_method("ogm").after_backward(model, state)
    k_text = 0.0948517463551336  # 1 - tanh(0.5 * 3)
    assert torch.equal(model.encoders["text"].proj.bias.grad, before["encoders.text.proj.bias"] * k_text)
    assert torch.equal(model.head.bias.grad, before["head.bias"])


def test_step_scores_sum_over_the_micro_batches_of_a_step(tiny) -> None:
    state, method = _state("ogm"), get_method("ogm")
    model = LateFusionModel(model_spec(state.cfg, tiny.feature_dims, tiny.num_classes))
    train = SplitTensors(tiny.train, TV, torch.device("cpu"))
    for rows in (torch.arange(0, 8), torch.arange(8, 16)):  # step_every 2: two micro-batches, one step
        loss, _ = method.loss(model, train.batch(rows), state)
        loss.backward()
    logs = method.after_backward(model, state)
    whole = train.batch(torch.arange(0, 16))
    with torch.no_grad():
        expected = true_class_probability_sums(model(whole).modality_logits, whole.labels)
    for m in TV:
        assert logs[f"score/{m}"] == pytest.approx(float(expected[m]), rel=1e-5)


@pytest.mark.parametrize(("epoch", "applied"), [(1, True), (2, False)])
def test_window_edges_are_inclusive(epoch: int, applied: bool) -> None:
    model = _model()
    state = _state("ogm", epoch=epoch, window_start=0, window_end=1, max_epochs=3)
    before = _grads(model)
    accumulate_step_scores(state, {"text": 3.0, "vision": 1.0})
    logs = get_method("ogm").after_backward(model, state)
    weight = model.encoders["text"].proj.weight.grad
    if applied:  # epoch == window_end
        assert logs["coeff/text"] == pytest.approx(0.0948517463551336) and logs["in_window"] == 1.0
        assert torch.equal(weight, before["encoders.text.proj.weight"] * 0.0948517463551336)
    else:  # window_end + 1: k logged as 1, gradients untouched, scores and ratios still logged
        assert logs["coeff/text"] == 1.0 and logs["in_window"] == 0.0 and logs["ratio/text"] == 3.0
        for name, param in model.named_parameters():
            assert torch.equal(param.grad, before[name]), name


# -- OGM-GE noise ----------------------------------------------------------------------------------------


def test_ge_noise_has_the_std_of_the_unmodulated_gradient() -> None:
    source = torch.Generator().manual_seed(1)
    param = torch.nn.Parameter(torch.zeros(200, 200))
    param.grad = 0.3 * torch.randn(200, 200, generator=source)
    unmodulated = param.grad.clone()
    sigmas = scale_gradients_with_noise([param], 0.25, torch.Generator().manual_seed(2))
    expected_sigma = float(unmodulated.std()) + 1e-8  # ~0.3
    assert sigmas == [pytest.approx(expected_sigma)]
    noise = param.grad - 0.25 * unmodulated  # what was added on top of k * g
    # 40,000 draws: the sample std is within ~0.4% of sigma (1 standard error), the mean within ~0.0015
    assert float(noise.std()) == pytest.approx(expected_sigma, rel=0.02)
    assert abs(float(noise.mean())) < 0.005
    # not proportional to the scaled gradient: independent noise
    assert abs(float(torch.corrcoef(torch.stack([noise.flatten(), unmodulated.flatten()]))[0, 1])) < 0.03


def test_ge_adds_noise_to_every_encoder_weight_and_logs_the_mean_sigma() -> None:
    model, state = _model(), _state("ogm_ge")
    before = _grads(model)
    accumulate_step_scores(state, {"text": 3.0, "vision": 1.0})
    logs = get_method("ogm_ge").after_backward(model, state)
    for m in TV:
        weights = [n for n, p in model.named_parameters() if n.startswith(f"encoders.{m}.") and p.dim() >= 2]
        sigmas = [float(before[n].std()) + 1e-8 for n in weights]
        assert logs[f"sigma/{m}"] == pytest.approx(sum(sigmas) / len(sigmas), rel=1e-6)
        for name in weights:  # k_vision = 1, but it gets noise too
            modulated_only = before[name] * logs[f"coeff/{m}"]
            assert not torch.allclose(model.get_parameter(name).grad, modulated_only)
    for name, param in model.named_parameters():
        if param.dim() < 2 or name.startswith("head."):  # biases and the head: untouched
            assert torch.equal(param.grad, before[name]), name
    # the noise comes from state.generator: the same seed gives the same gradients
    again, state_again = _model(), _state("ogm_ge")
    accumulate_step_scores(state_again, {"text": 3.0, "vision": 1.0})
    get_method("ogm_ge").after_backward(again, state_again)
    for (name, param), other in zip(model.named_parameters(), again.parameters(), strict=True):
        assert torch.equal(param.grad, other.grad), name


def test_ge_outside_the_window_adds_nothing() -> None:
    model, state = _model(), _state("ogm_ge", epoch=2, window_start=0, window_end=1, max_epochs=3)
    before = _grads(model)
    accumulate_step_scores(state, {"text": 3.0, "vision": 1.0})
    logs = get_method("ogm_ge").after_backward(model, state)
    assert logs["sigma/text"] == logs["sigma/vision"] == 0.0
    for name, param in model.named_parameters():
        assert torch.equal(param.grad, before[name]), name


def test_acc_scales_the_weak_encoder_up_and_leaves_the_dominant() -> None:
    model, state = _model(TAV), _state("acc", TAV)
    before = _grads(model)
    accumulate_step_scores(state, {"text": 3.0, "audio": 1.5, "vision": 2.0})  # rho_text = 2 dominant
    logs = get_method("acc").after_backward(model, state)
    boost = 1.7615941559557649  # 1 + tanh(0.5 * 2)
    assert [logs[f"coeff/{m}"] for m in TAV] == pytest.approx([1.0, boost, boost])
    assert "sigma/text" not in logs
    assert torch.equal(model.encoders["text"].proj.weight.grad, before["encoders.text.proj.weight"])
    assert torch.equal(model.encoders["audio"].proj.weight.grad, before["encoders.audio.proj.weight"] * boost)
    assert torch.equal(model.encoders["audio"].proj.bias.grad, before["encoders.audio.proj.bias"])


# -- configuration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["ogm", "ogm_ge", "acc"])
def test_one_modality_is_a_config_error(method: str) -> None:
    with pytest.raises(ConfigError, match="needs 2 to 3 modalities"):
        validate_config(_cfg(method, ("text",)))


@pytest.mark.parametrize(("method", "params", "message"), [
    ("ogm", {"form": "relu"}, "unknown form"),
    ("ogm_ge", {"alpha": 0.0}, "alpha must be > 0"),
    ("acc", {"alpha": -0.5}, "alpha must be > 0"),
    ("acc", {"form": "shifted"}, "unknown parameter"),
])
def test_bad_params_are_config_errors(method: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(_cfg(method, method_params=params))


# -- whole runs --------------------------------------------------------------------------------------------


def test_dev_set_scores_come_from_the_dev_split_and_are_reused_between_refreshes(tiny) -> None:
    cfg = _cfg("ogm", dev_set=True, ratio_every=2, lr=0.05)
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok"
    scores = series_by_step(result, "score", "text")
    # 48 carved training rows / batch 16 = 3 steps an epoch, 2 epochs; rows are logged after the step counter
    # moves, so trajectory step t holds optimizer step t - 1: refreshes at steps 0, 2, 4 -> rows 1, 3, 5
    assert sorted(scores) == [1, 2, 3, 4, 5, 6]
    assert scores[2] == scores[1] and scores[4] == scores[3] and scores[6] == scores[5]
    assert scores[3] != scores[1] and scores[5] != scores[3]
    # the first value: the initial model's s_text summed over the 16 dev rows
    seed_everything(cfg.seed)
    initial = LateFusionModel(model_spec(cfg, tiny.feature_dims, tiny.num_classes))
    whole = whole_split(tiny, "dev", TV)
    with torch.no_grad():
        expected = true_class_probability_sums(initial(whole).modality_logits, whole.labels)["text"]
    assert scores[1] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("method", ["ogm", "ogm_ge", "acc"])
@pytest.mark.parametrize("modalities", [TV, TAV])
def test_smoke_run_finishes_with_the_logged_series(tiny, method: str, modalities: tuple[str, ...]) -> None:
    result = train_run(_cfg(method, modalities), dataset=tiny)
    assert result.status == "ok"
    assert all(math.isfinite(v) for v in result.metrics.values())
    logged = {(row["series"], row["modality"]) for row in result.trajectory if row["split"] == "train"}
    expected = {(s, m) for s in ("score", "ratio", "coeff") for m in modalities} | {("in_window", "")}
    if method == "ogm_ge":
        expected |= {("sigma", m) for m in modalities}
    assert expected <= logged
