"""OPM and OPM-GE: ratios, drop probabilities, theta and the dropped features by hand; the seeded draws; the
loss on a real model; the warm-up; OPM-GE's noise; the dev-set scores; whole runs with 2 and 3 modalities."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, bare_state, series_by_step, smoke_config

from bench.config import ConfigError
from bench.methods import get_method, validate_config
from bench.methods.ogm import scale_gradients_with_noise, true_class_probability_sums
from bench.methods.opm import (
    STEP_SCORES_KEY,
    draw_drops,
    drop_features,
    drop_probabilities,
    drop_probability,
    feature_scale_theta,
    noise_epoch,
    opm_ratios,
)
from bench.models import EncoderSize, LateFusionModel, ModelSpec, model_spec
from bench.train import SplitTensors, seed_everything, train_run

torch.set_num_threads(1)

SERIES = ("score", "ratio", "drop_prob", "dropped")
ACTIVE = {"warmup_epochs": 0}  # the smoke profile's 2 epochs end before the official 6-epoch warm-up


def _cfg(method: str = "opm", modalities: tuple[str, ...] = TV, **fields):
    return smoke_config(method=method, modalities=modalities, **fields)


def _state(method: str = "opm", modalities: tuple[str, ...] = TV, epoch: int = 0, params=None, **fields):
    return bare_state(_cfg(method, modalities, method_params=params or dict(ACTIVE), **fields), epoch,
                      generator_seed=123)


# -- the formulas by hand ------------------------------------------------------------------------------------


def test_drop_probability_by_hand() -> None:
    # rho 3: q = 0.5 (1 + 0.5 tanh(3 - 1)) = 0.5 (1 + 0.5 * 0.964028) = 0.741007
    assert drop_probability(3.0, 0.5, 0.5) == pytest.approx(0.7410068950189542)
    assert drop_probability(1.0, 0.5, 0.5) == 0.0  # not dominant: never dropped
    assert drop_probability(0.4, 0.5, 0.5) == 0.0
    # just above 1 the probability jumps to q_base: 0.5 (1 + 0.5 tanh(1e-9)) = 0.5
    assert drop_probability(1.0 + 1e-9, 0.5, 0.5) == pytest.approx(0.5)
    # clipped to 1: 0.9 (1 + 1 * 0.964028) = 1.7676 -> 1
    assert drop_probability(3.0, 0.9, 1.0) == 1.0


def test_two_modality_ratio_and_probabilities() -> None:
    ratios = opm_ratios({"text": 3.0, "vision": 1.0})
    assert ratios == pytest.approx({"text": 3.0, "vision": 1 / 3})  # 3 / 1 and 1 / 3
    assert drop_probabilities(ratios, 0.5, 0.5) == pytest.approx({"text": 0.7410068950189542, "vision": 0.0})


def test_three_modalities_min_form_and_others_sum_form() -> None:
    scores = {"text": 3.0, "audio": 1.5, "vision": 2.0}
    ratios = opm_ratios(scores, "min")
    assert ratios == pytest.approx({"text": 2.0, "audio": 1.0, "vision": 4 / 3})  # 3/1.5, 1.5/1.5, 2/1.5
    # text 0.5 (1 + 0.5 tanh 1) = 0.5 (1 + 0.5 * 0.761594) = 0.690399; audio (rho 1) 0;
    # vision 0.5 (1 + 0.5 tanh(1/3)) = 0.5 (1 + 0.5 * 0.321513) = 0.580378
    assert drop_probabilities(ratios, 0.5, 0.5) == pytest.approx(
        {"text": 0.6903985389889412, "audio": 0.0, "vision": 0.5803781843829086})
    # BalanceBenchmark's form divides by the others' sum: 3 / 3.5, 1.5 / 5, 2 / 4.5, all < 1: nothing dropped
    assert set(drop_probabilities(opm_ratios(scores, "others_sum"), 0.5, 0.5).values()) == {0.0}
    # text 4 / (1 + 2) = 4/3 -> 0.580378; audio 1/6, vision 2/5 -> 0
    clear = opm_ratios({"text": 4.0, "audio": 1.0, "vision": 2.0}, "others_sum")
    assert clear == pytest.approx({"text": 4 / 3, "audio": 1 / 6, "vision": 0.4})
    assert drop_probabilities(clear, 0.5, 0.5)["text"] == pytest.approx(0.5803781843829086)
    with pytest.raises(ConfigError, match="unknown OPM ratio form"):
        opm_ratios(scores, "max")


def test_theta_is_the_width_weighted_mean_drop_probability() -> None:
    # (32 * 0.741007 + 32 * 0) / 64 = 0.370503
    assert feature_scale_theta({"text": 0.7410068950189542, "vision": 0.0}, {"text": 32, "vision": 32}) == \
        pytest.approx(0.3705034475094771)
    # (32 * 0.690399 + 16 * 0 + 32 * 0.580378) / 80 = 40.664855 / 80 = 0.508311
    q = {"text": 0.6903985389889412, "audio": 0.0, "vision": 0.5803781843829086}
    assert feature_scale_theta(q, {"text": 32, "audio": 16, "vision": 32}) == pytest.approx(0.5083106893487399)


def test_drop_features_zero_the_dropped_rows_and_scale_every_feature() -> None:
    features = {"text": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "vision": torch.tensor([[1.0], [1.0]])}
    keep = {"text": torch.tensor([1.0, 0.0]), "vision": torch.tensor([1.0, 1.0])}
    dropped = drop_features(features, keep, theta=0.5)  # 1 / (1 - 0.5) = 2
    assert torch.equal(dropped["text"], torch.tensor([[2.0, 4.0], [0.0, 0.0]]))
    assert torch.equal(dropped["vision"], torch.tensor([[2.0], [2.0]]))  # kept rows are scaled too


def test_draws_come_from_the_generator() -> None:
    q = {"text": 1.0, "vision": 0.0}
    assert draw_drops(q, 8, 0.0, torch.Generator().manual_seed(0)) is None  # p_exe 0: never executed
    keep = draw_drops(q, 8, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(keep["text"], torch.zeros(8)) and torch.equal(keep["vision"], torch.ones(8))
    # q = 0.5 over 4000 samples: about half kept (1 standard error 0.008)
    half = draw_drops({"text": 0.5}, 4000, 1.0, torch.Generator().manual_seed(1))["text"]
    assert abs(float(half.mean()) - 0.5) < 0.04
    # p_exe 0.7: executed in about 70% of 2000 batches (1 standard error 0.010)
    generator = torch.Generator().manual_seed(2)
    executed = [draw_drops({"text": 0.5}, 1, 0.7, generator) is not None for _ in range(2000)]
    assert abs(sum(executed) / 2000 - 0.7) < 0.05
    # the same seed draws the same masks
    again = draw_drops({"text": 0.5}, 4000, 1.0, torch.Generator().manual_seed(1))["text"]
    assert torch.equal(half, again)


# -- the loss on a real model -----------------------------------------------------------------------------


def _model_and_batch(tiny, cfg, modalities=TV):
    seed_everything(cfg.seed)
    model = LateFusionModel(model_spec(cfg, tiny.feature_dims, tiny.num_classes))
    batch = SplitTensors(tiny.train, modalities, torch.device("cpu")).batch(torch.arange(0, 16))
    return model, batch


def test_the_loss_drops_the_dominant_feature_and_rescales(tiny) -> None:
    # q_base 1: the dominant modality's q is clipped to 1 (always dropped); p_exe 1: always executed
    params = {"warmup_epochs": 0, "q_base": 1.0, "p_exe": 1.0}
    state = _state("opm", params=params)
    model, batch = _model_and_batch(tiny, state.cfg)
    with torch.no_grad():
        out = model(batch)
        scores = {m: float(s) for m, s in true_class_probability_sums(out.modality_logits, batch.labels).items()}
    dominant = max(scores, key=scores.get)
    other = next(m for m in TV if m != dominant)
    loss, logs = get_method("opm").loss(model, batch, state)
    # theta = (32 * 1 + 32 * 0) / 64 = 0.5: the dominant feature zeroed, the other doubled
    assert logs["theta"] == 0.5 and logs["drop_executed"] == 1.0 and logs["active"] == 1.0
    assert logs[f"drop_prob/{dominant}"] == 1.0 and logs[f"dropped/{dominant}"] == 1.0
    assert logs[f"drop_prob/{other}"] == 0.0 and logs[f"dropped/{other}"] == 0.0
    assert logs[f"score/{dominant}"] == pytest.approx(scores[dominant])
    with torch.no_grad():
        features = model.encode(batch)
        expected = torch.nn.functional.cross_entropy(
            model.fuse({dominant: torch.zeros_like(features[dominant]), other: 2.0 * features[other]}),
            batch.labels)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)


def test_no_drop_during_the_warm_up(tiny) -> None:
    state = _state("opm", params={"warmup_epochs": 1, "q_base": 1.0, "p_exe": 1.0})  # epoch 0 < 1
    model, batch = _model_and_batch(tiny, state.cfg)
    before = state.generator.get_state()
    loss, logs = get_method("opm").loss(model, batch, state)
    assert logs["active"] == 0.0 and logs["drop_executed"] == 0.0 and logs["theta"] == 0.0
    assert all(logs[f"drop_prob/{m}"] == 0.0 and logs[f"dropped/{m}"] == 0.0 for m in TV)
    assert math.isfinite(logs["ratio/text"])  # scores and ratios are still logged
    with torch.no_grad():
        plain = torch.nn.functional.cross_entropy(model(batch).logits, batch.labels)
    assert float(loss.detach()) == pytest.approx(float(plain))
    assert torch.equal(state.generator.get_state(), before)  # nothing drawn


def test_outside_the_window_nothing_is_dropped(tiny) -> None:
    state = _state("opm", epoch=2, params={"warmup_epochs": 0, "q_base": 1.0, "p_exe": 1.0},
                   window_start=0, window_end=1, max_epochs=3)
    model, batch = _model_and_batch(tiny, state.cfg)
    _, logs = get_method("opm").loss(model, batch, state)
    assert logs["in_window"] == 0.0 and logs["active"] == 0.0 and logs["drop_executed"] == 0.0


# -- OPM-GE's noise -----------------------------------------------------------------------------------------


def _grad_model(modalities=TV) -> LateFusionModel:
    """A tiny late-fusion model whose every parameter holds a known random gradient."""
    torch.manual_seed(0)
    dims = {"text": 3, "audio": 2, "vision": 2}
    spec = ModelSpec(modalities=modalities, input_dims=tuple((m, dims[m]) for m in modalities),
                     sizes=tuple((m, EncoderSize(4, 3)) for m in modalities), num_classes=3)
    model = LateFusionModel(spec)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    return model


def _ge_step(params, epoch=0, **fields):
    model, state = _grad_model(), _state("opm_ge", epoch=epoch, params=params, **fields)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    state.scratch[STEP_SCORES_KEY] = {"text": 3.0, "vision": 1.0}  # rho_text = 3
    logs = get_method("opm_ge").after_backward(model, state)
    return model, before, logs


def test_ge_adds_noise_to_every_encoder_weight_with_k_one() -> None:
    model, before, logs = _ge_step(dict(ACTIVE))
    assert logs["coeff/text"] == logs["coeff/vision"] == 1.0  # ogm_alpha 0: GE alone
    # the same noise, drawn again from a generator seeded alike, on a copy of the gradients
    generator = torch.Generator().manual_seed(123)
    for m in TV:
        weights = [n for n, p in model.named_parameters() if n.startswith(f"encoders.{m}.") and p.dim() >= 2]
        params = [torch.nn.Parameter(torch.zeros_like(before[n])) for n in weights]
        for param, name in zip(params, weights, strict=True):
            param.grad = before[name].clone()
        sigmas = scale_gradients_with_noise(params, 1.0, generator)
        assert logs[f"sigma/{m}"] == pytest.approx(sum(sigmas) / len(sigmas))
        for param, name in zip(params, weights, strict=True):
            assert torch.equal(model.get_parameter(name).grad, param.grad)
            assert not torch.equal(param.grad, before[name])
    for name, param in model.named_parameters():
        if param.dim() < 2 or name.startswith("head."):  # biases and the head: untouched
            assert torch.equal(param.grad, before[name]), name


def test_ge_with_ogm_alpha_also_damps_the_dominant_encoder() -> None:
    model, before, logs = _ge_step({**ACTIVE, "ogm_alpha": 0.5})
    # OGM's k for rho 3: 1 - tanh(0.5 * 3) = 1 - 0.905148 = 0.094852; vision (rho 1/3) keeps 1
    assert logs["coeff/text"] == pytest.approx(0.0948517463551336) and logs["coeff/vision"] == 1.0
    name = "encoders.text.proj.weight"
    noise = model.get_parameter(name).grad - 0.0948517463551336 * before[name]
    assert float(noise.abs().max()) > 0  # k g plus noise, not k g alone


def test_ge_does_nothing_during_the_warm_up() -> None:
    model, before, logs = _ge_step({"warmup_epochs": 1})
    assert logs["sigma/text"] == logs["sigma/vision"] == 0.0 and logs["coeff/text"] == 1.0
    for name, param in model.named_parameters():
        assert torch.equal(param.grad, before[name]), name


def test_noise_stops_after_the_official_modulation_end_by_hand() -> None:
    # official main.py: noise while modulation_starts (0) <= epoch <= modulation_ends (80), of 100 epochs
    assert [e for e in range(100) if not noise_epoch(e, 100, 0.8)] == list(range(81, 100))
    # the quick profile's 12 epochs: floor(0.8 * 12) = floor(9.6) = 9, so epochs 10 and 11 have no noise
    assert [e for e in range(12) if not noise_epoch(e, 12, 0.8)] == [10, 11]
    assert all(noise_epoch(e, 12, 1.0) for e in range(12))  # the former reading: every epoch


def test_ge_stops_after_the_modulation_end_while_the_drop_goes_on() -> None:
    # 10 epochs: floor(0.8 * 10) = 8 is the last noisy epoch; at epoch 9 the gradients stay as they are
    model, before, logs = _ge_step(dict(ACTIVE), epoch=9, max_epochs=10, window_end=-1)
    assert logs["sigma/text"] == logs["sigma/vision"] == 0.0
    for name, param in model.named_parameters():
        assert torch.equal(param.grad, before[name]), name
    assert _ge_step(dict(ACTIVE), epoch=8, max_epochs=10, window_end=-1)[2]["sigma/text"] > 0
    assert _ge_step({**ACTIVE, "noise_until": 1.0}, epoch=9, max_epochs=10, window_end=-1)[2]["sigma/text"] > 0
    # the drop's gate is still on
    assert get_method("opm_ge").active(_state("opm_ge", epoch=9, max_epochs=10, window_end=-1))


# -- configuration --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "fields", "message"), [
    ("opm", {"task": "regression"}, "has no regression form"),
    ("opm_ge", {"task": "regression"}, "has no regression form"),
    ("opm", {"method_params": {"q_base": 1.5}}, "q_base must be in"),
    ("opm", {"method_params": {"p_exe": -0.1}}, "p_exe must be in"),
    ("opm", {"method_params": {"lam": -1.0}}, "lam must be >= 0"),
    ("opm", {"method_params": {"ratio_form": "max"}}, "unknown ratio_form"),
    ("opm", {"method_params": {"ogm_alpha": 0.5}}, "unknown parameter"),
    ("opm_ge", {"method_params": {"ogm_alpha": -0.5}}, "ogm_alpha must be >= 0"),
    ("opm_ge", {"method_params": {"noise_until": 1.5}}, "noise_until must be in"),
    ("opm", {"modalities": ("text",)}, "needs 2 to 3 modalities"),
    ("opm", {"dev_set": True}, "no dev-set variant"),
    ("opm_ge", {"dev_set": True}, "no dev-set variant"),
])
def test_bad_configurations_are_config_errors(method, fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method=method, **{"modalities": TV, **fields}))


def test_thesis_settings_are_the_official_ones() -> None:
    opm, opm_ge = type(get_method("opm")), type(get_method("opm_ge"))
    assert opm.thesis.params == {"q_base": 0.5, "lam": 0.5, "p_exe": 0.7, "warmup_epochs": 6}
    assert opm_ge.thesis.params == {**opm.thesis.params, "ogm_alpha": 0.0, "noise_until": 0.8}
    assert opm.thesis.window == opm_ge.thesis.window == (0, -1)
    assert (opm.table_order, opm_ge.table_order) == (130, 140)


# -- whole runs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["opm", "opm_ge"])
@pytest.mark.parametrize("modalities", [TV, TAV])
def test_smoke_run_drops_and_logs_the_series(tiny, method, modalities) -> None:
    cfg = _cfg(method, modalities, method_params=dict(ACTIVE))
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok"
    assert all(math.isfinite(v) for v in result.metrics.values())
    logged = {(row["series"], row["modality"]) for row in result.trajectory if row["split"] == "train"}
    expected = {(s, m) for s in SERIES for m in modalities} | {("drop_executed", ""), ("theta", "")}
    if method == "opm_ge":
        expected |= {(s, m) for s in ("coeff", "sigma") for m in modalities}
    assert expected <= logged
    # it acts: some modality gets a drop probability and has samples dropped
    probabilities = [v for m in modalities for v in series_by_step(result, "drop_prob", m).values()]
    dropped = [v for m in modalities for v in series_by_step(result, "dropped", m).values()]
    assert max(probabilities) >= 0.5 and max(dropped) > 0
    if method == "opm_ge":
        assert max(v for m in modalities for v in series_by_step(result, "sigma", m).values()) > 0
    # the draws come from the run's seeded generator: the same run again is identical, another seed is not
    again = train_run(cfg, dataset=tiny)
    assert again.trajectory == result.trajectory
    other = train_run(_cfg(method, modalities, seed=1, method_params=dict(ACTIVE)), dataset=tiny)
    assert series_by_step(other, "dropped", modalities[0]) != series_by_step(result, "dropped", modalities[0])


def test_the_official_warm_up_outlasts_the_smoke_profile(tiny) -> None:
    result = train_run(_cfg("opm"), dataset=tiny)  # warmup_epochs 6, 2 epochs: plain joint training
    assert result.status == "ok"
    assert set(series_by_step(result, "active", "").values()) == {0.0}
