"""CPSL (reconstructed): the conflict detection on hand gradients (ratio and cosine cases), the penalty weight,
the SL projection, both statistical losses and the objective by hand; the model's attention pooling and its
shared fusion; the ablation flags; smoke runs of both tasks with 2 and 3 modalities and their logs; concat on
the cpsl model; the errors for bad parameters."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import DIMS, TAV, TV, bare_state, smoke_config, whole_split

from bench.config import ConfigError
from bench.methods import get_method, validate_config
from bench.methods.cpsl import (
    Conflict,
    class_distribution_loss,
    detect_conflict,
    dominant_weight,
    linear_correction,
    loss_weights,
    project_out_conflict,
    regression_statistics_loss,
    standardized_moment,
    statistical_loss,
    step_logs,
    total_objective,
)
from bench.models import ModelSpec
from bench.models.cpsl import CPSLModel, masked_attention_pool
from bench.train import train_run

torch.set_num_threads(1)


def _cfg(modalities: tuple[str, ...] = TV, **fields):
    return smoke_config(method="cpsl", modalities=modalities, **fields)


def _model(modalities: tuple[str, ...] = TV, num_classes: int = 3):
    spec = ModelSpec(modalities=modalities, input_dims=tuple((m, DIMS[m]) for m in modalities), sizes=(),
                     num_classes=num_classes, params=(("hidden", 4),))
    torch.manual_seed(0)
    return CPSLModel.build(spec)


def _regression_batch(dataset, modalities: tuple[str, ...]):
    """Every training row as one Batch with the regression scores as labels."""
    from bench.tasks import make_task
    from bench.train import SplitTensors

    tensors = SplitTensors(dataset.split("train"), modalities, torch.device("cpu"), make_task("regression"))
    return tensors.batch(torch.arange(tensors.size))


def _series(result, series: str, modality: str) -> list[float]:
    return [r["value"] for r in result.trajectory if r["series"] == series and r["modality"] == modality]


# -- conflict detection and penalty by hand ---------------------------------------------------------------


def test_a_norm_conflict_by_hand() -> None:
    # |text| = 5 (3, 4), |vision| = 1 (1, 0): ratio 5 > 2; cos = 3 / 5 > 0, no direction conflict
    grads = {"text": torch.tensor([3.0, 4.0]), "vision": torch.tensor([1.0, 0.0])}
    conflict = detect_conflict(grads, conflict_ratio=2.0)
    assert conflict.dominant == "text"
    assert conflict.ratio == pytest.approx(5.0) and conflict.cos == pytest.approx(0.6)
    assert conflict.by_norm and not conflict.by_direction and conflict.flagged
    # the penalty brings the dominant norm to 2 x the next: w = 2 / 5, |0.4 g_text| = 2 = 2 |g_vision|
    assert dominant_weight(conflict, 2.0, 0.5) == pytest.approx(0.4)
    assert loss_weights(["text", "vision"], conflict, 2.0, 0.5) == pytest.approx({"text": 0.4, "vision": 1.0})
    # a threshold above the ratio: no conflict, weights 1
    calm = detect_conflict(grads, conflict_ratio=6.0)
    assert not calm.flagged and dominant_weight(calm, 6.0, 0.5) == 1.0


def test_a_direction_conflict_by_hand() -> None:
    # |vision| = 2 (0, 2) dominates |text| = 1.5 (-1.2, -0.9)... ratio 2 / 1.5 = 4/3 < 2; cos = -1.8 / 3 = -0.6
    grads = {"text": torch.tensor([-1.2, -0.9]), "vision": torch.tensor([0.0, 2.0])}
    conflict = detect_conflict(grads, conflict_ratio=2.0)
    assert conflict.dominant == "vision"
    assert conflict.ratio == pytest.approx(4 / 3) and conflict.cos == pytest.approx(-0.6)
    assert conflict.by_direction and not conflict.by_norm
    assert dominant_weight(conflict, 2.0, 0.25) == pytest.approx(0.25)


def test_three_modalities_compare_the_dominant_with_the_next_largest_and_the_least_cosine() -> None:
    # norms 4, 2, 1: ratio 4 / 2 = 2 (not > 2); cos(text, audio) = 0, cos(text, vision) = -1
    grads = {"text": torch.tensor([4.0, 0.0]), "audio": torch.tensor([0.0, 2.0]),
             "vision": torch.tensor([-1.0, 0.0])}
    conflict = detect_conflict(grads, conflict_ratio=2.0)
    assert (conflict.dominant, conflict.ratio, conflict.cos) == ("text", pytest.approx(2.0), pytest.approx(-1.0))
    assert not conflict.by_norm and conflict.by_direction
    assert loss_weights(list(grads), None, 2.0, 0.5) == {"text": 1.0, "audio": 1.0, "vision": 1.0}


def test_the_sl_projection_by_hand() -> None:
    dominant = torch.tensor([2.0, 0.0])
    # g_sl = (-1, 3) against g_d: minus (-2 / 4) (2, 0) = (1, 0) -> (0, 3), orthogonal to g_d
    assert torch.allclose(project_out_conflict(torch.tensor([-1.0, 3.0]), dominant), torch.tensor([0.0, 3.0]))
    # aligned (dot 2 > 0) or a zero dominant gradient: unchanged
    assert torch.equal(project_out_conflict(torch.tensor([1.0, 3.0]), dominant), torch.tensor([1.0, 3.0]))
    assert torch.equal(project_out_conflict(torch.tensor([-1.0, 3.0]), torch.zeros(2)), torch.tensor([-1.0, 3.0]))


def test_the_linear_correction_is_zero_valued_and_has_the_correction_as_gradient() -> None:
    weight, bias = torch.nn.Parameter(torch.tensor([[1.0, 2.0]])), torch.nn.Parameter(torch.tensor([3.0]))
    term = linear_correction([weight, bias], torch.tensor([1.0, 0.0, -2.0]))
    assert float(term.detach()) == 0.0
    term.backward()
    assert torch.equal(weight.grad, torch.tensor([[1.0, 0.0]])) and torch.equal(bias.grad, torch.tensor([-2.0]))


# -- statistical loss by hand -----------------------------------------------------------------------------


def test_regression_sl_mean_and_variance_by_hand() -> None:
    prediction, target = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 4.0])
    # means 1 and 2: (1 - 2)^2 = 1; population variances 2/3 and (1 + 1 + 4) / 3 = 2: (2/3 - 2)^2 = 16/9
    assert float(regression_statistics_loss(prediction, target, moments=1)) == pytest.approx(1.0)
    assert float(regression_statistics_loss(prediction, target, moments=2)) == pytest.approx(1.0 + 16 / 9)
    # the third moment: prediction symmetric (skew 0); target centred (-1, -1, 2) / sqrt(2): mean of cubes
    # (-1 - 1 + 8) / (3 * 2 sqrt 2) = 1 / sqrt 2
    assert float(standardized_moment(target, 3)) == pytest.approx(1 / math.sqrt(2))
    assert float(regression_statistics_loss(prediction, target, moments=3)) == pytest.approx(1.0 + 16 / 9 + 0.5)
    # the same statistics: zero
    assert float(regression_statistics_loss(target.flip(0), target, moments=4)) == pytest.approx(0.0, abs=1e-6)


def test_classification_sl_by_hand() -> None:
    # every prediction uniform over 2 classes, labels (0, 0, 1, 1)... q = (1/2, 1/2): KL 0
    uniform = torch.zeros(4, 2)
    assert float(class_distribution_loss(uniform, torch.tensor([0, 0, 1, 1]))) == pytest.approx(0.0, abs=1e-7)
    # labels (0, 0, 0, 1): q = (3/4, 1/4), p_bar = (1/2, 1/2): 3/4 ln(3/2) + 1/4 ln(1/2)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert float(class_distribution_loss(uniform, torch.tensor([0, 0, 0, 1]))) == pytest.approx(expected)
    # p_bar is the mean of the probabilities: rows (1, 0) and (0, 1) (near one-hot) average to (1/2, 1/2)
    sharp = torch.tensor([[20.0, 0.0], [0.0, 20.0]])
    assert float(statistical_loss("classification", sharp, torch.tensor([1, 0]), 2)) == pytest.approx(0, abs=1e-6)
    # a class absent from the batch adds nothing: q = (1, 0, 0), p_bar = (1/3, ...): ln 3
    assert float(class_distribution_loss(torch.zeros(2, 3), torch.tensor([0, 0]))) == pytest.approx(math.log(3))


def test_objective_and_logs_by_hand() -> None:
    task, sl = torch.tensor(1.0), torch.tensor(0.5)
    unimodal = {"text": torch.tensor(2.0), "vision": torch.tensor(3.0)}
    weights = {"text": 0.4, "vision": 1.0}
    total = total_objective(task, unimodal, weights, sl, aux_weight=0.5, sl_weight=2.0)
    assert float(total) == pytest.approx(1.0 + 0.5 * (0.8 + 3.0) + 2.0 * 0.5)  # 3.9
    assert float(total_objective(task, unimodal, weights, None, 0.5, 2.0)) == pytest.approx(2.9)
    grads = {"text": torch.tensor([3.0, 4.0]), "vision": torch.tensor([1.0, 0.0])}
    conflict = Conflict("text", 5.0, 0.6, by_norm=True, by_direction=False)
    logs = step_logs(task, unimodal, sl, total, grads, conflict, weights, sl_cos=-0.5, projected=True)
    assert logs == pytest.approx({
        "loss/task": 1.0, "loss/text": 2.0, "loss/vision": 3.0, "loss/sl": 0.5, "loss/total": 3.9,
        "gnorm/text": 5.0, "gnorm/vision": 1.0, "dominant/text": 1.0, "dominant/vision": 0.0,
        "weight/text": 0.4, "weight/vision": 1.0, "cp/ratio": 5.0, "cp/cos": 0.6, "cp/conflict": 1.0,
        "cp/norm_conflict": 1.0, "cp/direction_conflict": 0.0, "cp/sl_cos": -0.5, "cp/sl_projected": 1.0})
    plain = step_logs(task, unimodal, None, total, None, None, weights, None, False)
    assert set(plain) == {"loss/task", "loss/text", "loss/vision", "loss/total"}


# -- the model ---------------------------------------------------------------------------------------------


def test_attention_pooling_ignores_padding_by_hand() -> None:
    encoded = torch.tensor([[[1.0], [3.0], [100.0]]])  # (1, 3, 1); the third step is padding
    keep = torch.tensor([[True, True, False]])
    # scores (0, ln 3): weights 1/4, 3/4 -> 1/4 + 9/4 = 2.5
    pooled = masked_attention_pool(encoded, torch.tensor([[0.0, math.log(3.0), 50.0]]), keep)
    assert torch.allclose(pooled, torch.tensor([[2.5]]))


def test_each_auxiliary_output_reads_its_own_modality_through_the_shared_fusion(tiny) -> None:
    model = _model(TAV)
    batch = whole_split(tiny, "train", TAV)
    parts = model.parts(batch)
    assert parts.fused.shape == (64, 3) and all(out.shape == (64, 3) for out in parts.unimodal.values())
    features = parts.features
    (d_text,) = torch.autograd.grad(parts.unimodal["text"].sum(), [features["text"]], retain_graph=True)
    assert d_text.abs().sum() > 0
    assert torch.autograd.grad(parts.unimodal["text"].sum(), [features["vision"]], retain_graph=True,
                               allow_unused=True)[0] is None  # vision is zeroed in text's branch
    # changing vision leaves text's auxiliary output as it is (vision is zeroed there), moves the fused one
    shifted = {**features, "vision": features["vision"] + 1.0}
    assert torch.allclose(model.unimodal(shifted, "text"), parts.unimodal["text"])
    assert not torch.allclose(model.fuse(shifted), parts.fused)
    # the shared parameters get a gradient from every auxiliary loss
    for m in TAV:
        grads = torch.autograd.grad(parts.unimodal[m].sum(), model.shared_parameters(), retain_graph=True)
        assert all(g.abs().sum() > 0 for g in grads), m
    # the learned scale multiplies z_m
    with torch.no_grad():
        model.encoders["text"].scale.fill_(2.0)
    assert torch.allclose(model.encode(batch)["text"], 2.0 * features["text"].detach(), atol=1e-6)


# -- the method in training -------------------------------------------------------------------------------


def test_the_step_projects_sl_off_the_dominant_gradient(tiny) -> None:
    """On the shared parameters, the returned objective's gradient is the hand combination of the parts."""
    from bench.methods.cpsl import shared_gradient

    cfg = _cfg(task="regression", method_params={"conflict_ratio": 1.0, "direction_weight": 0.5})
    state = bare_state(cfg)
    model = _model(TV, num_classes=1)
    batch = _regression_batch(tiny, TV)
    method = get_method("cpsl")
    objective, logs = method.loss(model, batch, state)
    shared = model.shared_parameters()
    got = shared_gradient(objective, shared)
    # the same parts by hand
    parts = model.parts(batch)
    task = state.task.loss(parts.fused, batch.labels)
    unimodal = {m: state.task.loss(parts.unimodal[m], batch.labels) for m in TV}
    sl = regression_statistics_loss(parts.fused.squeeze(1), batch.labels, 2)
    g = {m: shared_gradient(unimodal[m], shared) for m in TV}
    conflict = detect_conflict(g, 1.0)
    assert conflict.flagged  # ratio > 1 always unless norms tie
    weights = loss_weights(TV, conflict, 1.0, 0.5)
    g_sl = shared_gradient(sl, shared)
    expected = (shared_gradient(task, shared) + sum(weights[m] * g[m] for m in TV)
                + 0.5 * project_out_conflict(g_sl, g[conflict.dominant]))
    assert torch.allclose(got, expected, atol=1e-6)
    assert logs["cp/sl_projected"] == float(float(g_sl @ g[conflict.dominant]) < 0)
    assert logs[f"weight/{conflict.dominant}"] == pytest.approx(1.0 / conflict.ratio)


def test_the_ablation_flags_drop_their_terms(tiny) -> None:
    model = _model(TV, num_classes=1)
    batch = _regression_batch(tiny, TV)
    method = get_method("cpsl")
    logs = {}
    for name, params in {"full": {}, "no_cp": {"use_cp": False}, "no_sl": {"use_sl": False}}.items():
        state = bare_state(_cfg(task="regression", method_params=params))
        objective, logs[name] = method.loss(model, batch, state)
        assert float(objective.detach()) == pytest.approx(logs[name]["loss/total"])
    assert {"loss/sl", "cp/conflict", "cp/sl_cos", "gnorm/text"} <= set(logs["full"])
    assert "loss/sl" in logs["no_cp"] and not [k for k in logs["no_cp"] if k.startswith(("cp/", "gnorm/"))]
    assert "loss/sl" not in logs["no_sl"] and "cp/sl_cos" not in logs["no_sl"] and "cp/conflict" in logs["no_sl"]
    # without CP the weights are 1: total = task + sum L_m + 0.5 SL
    no_cp = logs["no_cp"]
    assert no_cp["loss/total"] == pytest.approx(no_cp["loss/task"] + no_cp["loss/text"] + no_cp["loss/vision"]
                                                + 0.5 * no_cp["loss/sl"])
    assert get_method("cpsl").variants == {"no_cp": {"use_cp": False}, "no_sl": {"use_sl": False}}


@pytest.mark.parametrize(("task", "modalities"), [("regression", TAV), ("classification", TV)])
def test_smoke_run_logs_every_term(tiny, task: str, modalities: tuple[str, ...]) -> None:
    # conflict_ratio 1: every step with unequal norms is a norm conflict, so the penalty acts
    result = train_run(_cfg(modalities, task=task, max_epochs=3, method_params={"conflict_ratio": 1.0}),
                       dataset=tiny)
    assert result.status == "ok", result.error
    assert all(math.isfinite(v) for v in result.metrics.values())
    steps = len(_series(result, "loss", "task"))
    assert steps > 0
    keys = [("loss", "total"), ("loss", "sl"), ("cp", "ratio"), ("cp", "cos"), ("cp", "conflict"),
            ("cp", "sl_cos"), ("cp", "sl_projected")]
    keys += [(s, m) for m in modalities for s in ("loss", "gnorm", "dominant", "weight")]
    for series, modality in keys:
        assert len(_series(result, series, modality)) == steps, (series, modality)
    # one dominant modality per step; its weight conflict_ratio / ratio = 1 / ratio, the others' 1
    dominant = [sum(v) for v in zip(*(_series(result, "dominant", m) for m in modalities), strict=True)]
    assert dominant == [1.0] * steps
    for i, ratio in enumerate(_series(result, "cp", "ratio")):
        lead = next(m for m in modalities if _series(result, "dominant", m)[i] == 1.0)
        assert _series(result, "weight", lead)[i] == pytest.approx(1.0 / ratio, rel=1e-5)
        assert all(_series(result, "weight", m)[i] == 1.0 for m in modalities if m != lead)
    # the logged total is its logged terms' sum
    for i, total in enumerate(_series(result, "loss", "total")):
        aux = sum(_series(result, "weight", m)[i] * _series(result, "loss", m)[i] for m in modalities)
        assert total == pytest.approx(_series(result, "loss", "task")[i] + aux
                                      + 0.5 * _series(result, "loss", "sl")[i], rel=1e-5)


def test_sl_pulls_the_prediction_statistics_towards_the_targets(tiny) -> None:
    """Measurable: with a heavy SL weight the logged SL falls over training, and the validation predictions'
    spread ends closer to the targets' than without SL (lr 5e-3: the smoke lr barely moves the outputs)."""
    runs = {flag: train_run(_cfg(task="regression", max_epochs=4, lr=5e-3,
                                 method_params={"sl_weight": 5.0, "use_sl": flag}), dataset=tiny)
            for flag in (True, False)}
    assert all(r.status == "ok" for r in runs.values())
    sl = _series(runs[True], "loss", "sl")
    assert sum(sl[-3:]) / 3 < 0.25 * sum(sl[:3]) / 3
    gaps = {}
    for flag, result in runs.items():
        columns = result.predictions["valid"]
        prediction = torch.tensor(columns["prediction"], dtype=torch.float64)
        target = torch.tensor(columns["target"], dtype=torch.float64)
        gaps[flag] = abs(float(prediction.std() - target.std()))
    assert gaps[True] < gaps[False]


def test_runs_repeat_exactly(tiny) -> None:
    cfg = _cfg(TAV, task="classification")
    first, second = train_run(cfg, dataset=tiny), train_run(cfg, dataset=tiny)
    assert first.status == "ok", first.error
    assert first.trajectory == second.trajectory and first.metrics == second.metrics


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_concat_runs_on_the_cpsl_model(tiny, task: str) -> None:
    result = train_run(smoke_config(method="concat", model="cpsl", task=task, modalities=TAV), dataset=tiny)
    assert result.status == "ok", result.error
    assert not [r for r in result.trajectory if r["series"] == "cp"]  # concat adds no cpsl terms


def test_bad_parameters_and_models_are_config_errors(tiny) -> None:
    for params, match in [({"conflict_ratio": 0.5}, "conflict_ratio must be >= 1"),
                          ({"moments": 5}, "moments must be an integer from 1 to 4"),
                          ({"direction_weight": 1.5}, "direction_weight must be in"),
                          ({"sl_weight": -1.0}, "must be >= 0"), ({"ratio": 2.0}, "unknown parameter")]:
        with pytest.raises(ConfigError, match=match):
            validate_config(_cfg(method_params=params), tiny.modalities)
    with pytest.raises(ConfigError, match="cpsl_parts"):
        validate_config(_cfg(model="late_fusion"), tiny.modalities)
    with pytest.raises(ConfigError, match="2 to 3"):
        validate_config(_cfg(("text",)), tiny.modalities)
