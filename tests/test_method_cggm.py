"""CGGM: helper accuracy, Delta, B_m (the degenerate case too), L_gm by hand; the gradient edits, the lagged
direction loss, the helpers' own optimizer, the clip, the window; runs for both tasks, 2 and 3 modalities."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, series_by_step, smoke_config, whole_split

from bench.config import ConfigError
from bench.methods import get_method, validate_config
from bench.methods.cggm import (
    STATE_KEY,
    CGGMModel,
    CGGMState,
    at_snapshot,
    balance_coefficients,
    direction_loss,
    head_cosines,
    helper_hits,
    improvements,
    scaled_parameters,
)
from bench.train import build_trainer, train_run

torch.set_num_threads(1)


def _trainer(tiny, modalities: tuple[str, ...] = TV, **fields):
    cfg = smoke_config(method="cggm", modalities=modalities, **fields)
    return build_trainer(cfg, tiny)


# -- formulas by hand ------------------------------------------------------------------------------------


def test_helper_hits_by_hand() -> None:
    # classification: argmax (1, 0, 2) against labels (1, 2, 2): 2 hits
    logits = torch.tensor([[0.0, 1.0, 0.0], [3.0, 1.0, 2.0], [0.0, 0.0, 5.0]])
    assert helper_hits(logits, torch.tensor([1, 2, 2]), "classification") == 2.0
    # regression: signs (+, -, +, -) against y (0.5, 0.0, 0.0, -1.0); y = 0 counts as negative:
    # (T==T) (F==F) (T==F) (F==F) -> 3 hits
    outputs = torch.tensor([[0.2], [-0.1], [0.3], [-2.0]])
    assert helper_hits(outputs, torch.tensor([0.5, 0.0, 0.0, -1.0]), "regression") == 3.0


def test_improvements_start_from_zero() -> None:
    assert improvements({"text": 0.5, "vision": 0.25}, {}) == {"text": 0.5, "vision": 0.25}
    assert improvements({"text": 0.5, "vision": 0.25}, {"text": 0.75, "vision": 0.125}) == {
        "text": -0.25, "vision": 0.125}


def test_two_modality_coefficients_by_hand() -> None:
    # Delta = (0.25, 0.0625), S = 0.3125: B_t = (S - 0.25)/S = 0.2, B_v = (S - 0.0625)/S = 0.8 (the 1e-8 aside)
    coeffs = balance_coefficients({"text": 0.25, "vision": 0.0625})
    assert coeffs["text"] == pytest.approx(0.2, abs=1e-7) and coeffs["vision"] == pytest.approx(0.8, abs=1e-7)
    # the exact official value keeps the 1e-8 in numerator and denominator
    assert coeffs["text"] == (0.3125 + 1e-8 - 0.25) / (0.3125 + 1e-8)


def test_three_modality_coefficients_sum_to_m_minus_one() -> None:
    # Delta = (0.1, 0.2, 0.1), S = 0.4: B = (0.3, 0.2, 0.3) / 0.4 = (0.75, 0.5, 0.75); sum = 2 = M - 1
    coeffs = balance_coefficients({"text": 0.1, "audio": 0.2, "vision": 0.1})
    assert [coeffs[m] for m in ("text", "audio", "vision")] == pytest.approx([0.75, 0.5, 0.75], abs=1e-7)
    assert sum(coeffs.values()) == pytest.approx(2.0)


def test_degenerate_sums() -> None:
    # every Delta = 0: B = 1e-8 / 1e-8 = 1 exactly
    assert balance_coefficients({"text": 0.0, "vision": 0.0}) == {"text": 1.0, "vision": 1.0}
    # S = 0 with Delta = (+0.125, -0.125): B_t = (1e-8 - 0.125)/1e-8 = -12499999, B_v = (1e-8 + 0.125)/1e-8 = 12500001
    official = balance_coefficients({"text": 0.125, "vision": -0.125})
    assert official["text"] == pytest.approx(-12_499_999.0) and official["vision"] == pytest.approx(12_500_001.0)
    assert balance_coefficients({"text": 0.125, "vision": -0.125}, "skip") == {"text": 1.0, "vision": 1.0}
    # "skip" leaves a non-degenerate step alone
    assert balance_coefficients({"text": 0.25, "vision": 0.0625}, "skip") == balance_coefficients(
        {"text": 0.25, "vision": 0.0625})


def test_direction_loss_by_hand() -> None:
    # B = (0.2, 0.8), cos = (0.5, -0.25): (|0.2| + |0.8| - (0.1 - 0.2)) / 2 = 1.1 / 2 = 0.55
    assert direction_loss({"text": 0.2, "vision": 0.8}, {"text": 0.5, "vision": -0.25}) == pytest.approx(0.55)
    # B = (-2, 3), cos = (0.5, 0.5): (5 - (-1 + 1.5)) / 2 = 2.25
    assert direction_loss({"text": -2.0, "vision": 3.0}, {"text": 0.5, "vision": 0.5}) == pytest.approx(2.25)


def test_cosines_pair_each_helper_with_its_slice_of_the_fused_head() -> None:
    # W = [1, 0 | 0, 2] (K = 1): V_t = (1, 1) -> 1 / (sqrt 2 * 1); V_v = (0, -1) -> -2 / (1 * 2) = -1
    fused = torch.tensor([[1.0, 0.0, 0.0, 2.0]])
    helpers = {"text": torch.tensor([[1.0, 1.0]]), "vision": torch.tensor([[0.0, -1.0]])}
    cosines = head_cosines(helpers, fused, {"text": slice(0, 2), "vision": slice(2, 4)})
    assert float(cosines["text"]) == pytest.approx(1 / math.sqrt(2)) and float(cosines["vision"]) == pytest.approx(-1.0)


def test_at_snapshot_has_the_snapshot_value_and_an_identity_gradient() -> None:
    param = torch.tensor([1.0, 2.0], requires_grad=True)
    snapshot = torch.tensor([5.0, -3.0])
    frozen = at_snapshot(param, snapshot)
    assert frozen.tolist() == [5.0, -3.0]
    (frozen * torch.tensor([2.0, 7.0])).sum().backward()
    assert param.grad.tolist() == [2.0, 7.0]


# -- the hooks -------------------------------------------------------------------------------------------


def test_build_wraps_the_run_model_with_one_helper_per_modality(tiny) -> None:
    trainer = _trainer(tiny, TAV)
    model = trainer.model
    assert isinstance(model, CGGMModel) and set(model.helpers) == set(TAV)
    for m in TAV:
        assert model.helpers[m].out_layer.weight.shape == model.base.head.weight[:, model.base.head_slices()[m]].shape
    main, helpers = trainer.optimizers["main"], trainer.optimizers["helpers"]
    helper_ids = {id(p) for p in model.helpers.parameters()}
    assert not helper_ids & {id(p) for g in main.param_groups for p in g["params"]}
    assert {id(p) for g in helpers.param_groups for p in g["params"]} == helper_ids
    assert isinstance(helpers, torch.optim.Adam)
    assert helpers.param_groups[0]["lr"] == 5e-4 and helpers.param_groups[0]["weight_decay"] == 0.0
    assert len(trainer.schedulers) == 1  # only the model's optimizer is scheduled, as in the official code


def test_helpers_see_detached_features_and_add_no_encoder_gradient(tiny) -> None:
    trainer = _trainer(tiny)
    model, state = trainer.model, trainer.state
    batch = whole_split(tiny, "train", TV)
    loss, logs = get_method("cggm").loss(model, batch, state)
    loss.backward()
    cggm_grads = [p.grad.clone() for p in model.base.parameters()]
    assert all(p.grad is not None for p in model.helpers.parameters())
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(batch).logits, batch.labels).backward()
    for ours, plain in zip(cggm_grads, model.base.parameters(), strict=True):
        assert torch.allclose(ours, plain.grad, atol=1e-6)
    assert set(logs) == {"helper_loss/text", "helper_loss/vision"}


def test_after_backward_scales_each_encoder_by_rho_b_and_logs_the_series(tiny) -> None:
    trainer = _trainer(tiny, method_params={"clip_norm": 0.0})
    model, state = trainer.model, trainer.state
    torch.manual_seed(0)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    # this step: text 12 of 16 right (0.75), vision 4 of 16 (0.25); the previous step 0.5 and 0.125
    # Delta = (0.25, 0.125), S = 0.375: B_t = 0.125/0.375 = 1/3, B_v = 0.25/0.375 = 2/3
    state.scratch[STATE_KEY] = CGGMState(previous={"text": 0.5, "vision": 0.125},
                                         correct={"text": 12.0, "vision": 4.0}, seen=16)
    logs = get_method("cggm").after_backward(model, state)
    assert (logs["eps/text"], logs["eps/vision"]) == (0.75, 0.25)
    assert (logs["delta/text"], logs["delta/vision"]) == (0.25, 0.125)
    assert logs["coeff/text"] == pytest.approx(1 / 3) and logs["coeff/vision"] == pytest.approx(2 / 3)
    assert logs["scale/text"] == pytest.approx(1.3 / 3) and logs["scale/vision"] == pytest.approx(2.6 / 3)
    for name, p in model.named_parameters():
        input_map = name.endswith(("lstm.weight_ih_l0", "lstm.bias_ih_l0"))  # the official proj.i: unscaled
        if name.startswith("model.encoders.text.") and not input_map:
            assert torch.allclose(p.grad, before[name] * logs["scale/text"])
        elif name.startswith("model.encoders.vision.") and not input_map:
            assert torch.allclose(p.grad, before[name] * logs["scale/vision"])
        else:  # the input maps, the fused head and the helpers keep their gradients
            assert torch.equal(p.grad, before[name])
    cggm = state.scratch[STATE_KEY]
    assert cggm.previous == {"text": 0.75, "vision": 0.25} and cggm.correct == {} and cggm.seen == 0
    # L_gm logged from this step's B and cosines: (|B_t| + |B_v| - B_t cos_t - B_v cos_v) / 2
    expected = (1.0 - logs["coeff/text"] * logs["cos/text"] - logs["coeff/vision"] * logs["cos/vision"]) / 2
    assert logs["direction_loss"] == pytest.approx(expected)
    assert cggm.snapshot is not None and cggm.snapshot[0] == pytest.approx({"text": 1 / 3, "vision": 2 / 3})


def test_the_next_loss_adds_lam_times_the_snapshot_direction_loss_into_the_head_weight_only(tiny) -> None:
    trainer = _trainer(tiny)
    model, state = trainer.model, trainer.state
    batch = whole_split(tiny, "train", TV)
    method = get_method("cggm")
    plain, _ = method.loss(model, batch, state)
    plain.backward()
    grads_plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    # a snapshot whose weights differ from the current ones: value and gradient are the snapshot's
    base = model.base
    fused_snapshot = torch.randn_like(base.head.weight)
    helper_snapshot = {m: torch.randn_like(model.helpers[m].out_layer.weight) for m in TV}
    coeffs = {"text": -0.5, "vision": 2.5}
    state.scratch[STATE_KEY] = CGGMState(snapshot=(coeffs, helper_snapshot, fused_snapshot))
    total, _ = method.loss(model, batch, state)
    leaf = fused_snapshot.clone().requires_grad_(True)
    expected_value = direction_loss(coeffs, head_cosines(helper_snapshot, leaf, base.head_slices()))
    assert float((total - plain).detach()) == pytest.approx(0.2 * float(expected_value.detach()), rel=1e-5)
    total.backward()
    (0.2 * expected_value).backward()
    for name, p in model.named_parameters():
        if name == "model.head.weight":
            assert torch.allclose(p.grad - grads_plain[name], leaf.grad, atol=1e-6)
            assert not torch.allclose(leaf.grad, torch.zeros_like(leaf.grad))
        else:  # the helpers' weights in L_gm are constants; nothing else enters it
            assert torch.allclose(p.grad, grads_plain[name], atol=1e-6)


def test_the_clip_bounds_the_model_gradient_not_the_helpers(tiny) -> None:
    trainer = _trainer(tiny)
    model, state = trainer.model, trainer.state
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    # the degenerate step: S = 0, B ~ -1.25e7 / +1.25e7, bounded only by the clip
    state.scratch[STATE_KEY] = CGGMState(previous={"text": 0.5, "vision": 0.5},
                                         correct={"text": 10.0, "vision": 6.0}, seen=16)
    logs = get_method("cggm").after_backward(model, state)
    assert abs(logs["coeff/text"]) > 1e6 and logs["grad_norm"] > 1e6
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.base.parameters()])
    assert float(norm) == pytest.approx(0.8, rel=1e-4)
    assert all(torch.equal(p.grad, torch.full_like(p, 10.0)) for p in model.helpers.parameters())


def test_outside_the_window_nothing_is_scaled_and_no_direction_loss_is_kept(tiny) -> None:
    trainer = _trainer(tiny, window_start=0, window_end=0, max_epochs=2, method_params={"clip_norm": 0.0})
    model, state = trainer.model, trainer.state
    state.epoch = 1
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    state.scratch[STATE_KEY] = CGGMState(correct={"text": 8.0, "vision": 4.0}, seen=16)
    logs = get_method("cggm").after_backward(model, state)
    assert logs["in_window"] == 0.0 and logs["scale/text"] == logs["scale/vision"] == 1.0
    assert logs["coeff/text"] != 1.0  # B is still measured
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert state.scratch[STATE_KEY].snapshot is None


def test_scale_all_also_scales_the_input_map(tiny) -> None:
    trainer = _trainer(tiny, method_params={"clip_norm": 0.0, "scale": "all"})
    model, state = trainer.model, trainer.state
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    # Delta = (0.25, 0.125) as above: scale_text = 1.3 * (0.375 - 0.25) / 0.375 = 1.3 / 3 = 0.4333
    state.scratch[STATE_KEY] = CGGMState(previous={"text": 0.5, "vision": 0.125},
                                         correct={"text": 12.0, "vision": 4.0}, seen=16)
    get_method("cggm").after_backward(model, state)
    weight = model.base.encoders["text"].lstm.weight_ih_l0.grad
    assert torch.allclose(weight, torch.full_like(weight, 1.3 / 3))
    encoder = model.base.encoders["text"]
    left_out = {id(p) for p in encoder.parameters()} - {id(p) for p in scaled_parameters(encoder, "encoders")}
    assert left_out == {id(encoder.lstm.weight_ih_l0), id(encoder.lstm.bias_ih_l0)}
    assert len(scaled_parameters(encoder, "all")) == len(list(encoder.parameters()))


def test_validation_errors() -> None:
    for params, message in [({"rho": 0.0}, "rho"), ({"lam": -1.0}, "lam"), ({"helper": "mlp"}, "helper"),
                            ({"degenerate": "clip"}, "degenerate"), ({"clip_norm": -1.0}, "clip_norm"),
                            ({"scale": "heads"}, "scale")]:
        with pytest.raises(ConfigError, match=message):
            validate_config(smoke_config(method="cggm", method_params=params))
    with pytest.raises(ConfigError, match="modalities"):
        validate_config(smoke_config(method="cggm", modalities=("text",)))


# -- runs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("modalities", [TV, TAV])
def test_runs_for_both_tasks_with_the_logged_series(tiny, task: str, modalities: tuple[str, ...]) -> None:
    result = train_run(smoke_config(method="cggm", modalities=modalities, task=task), dataset=tiny)
    assert result.status == "ok", result.error
    for m in modalities:
        eps = series_by_step(result, "eps", m)
        coeff = series_by_step(result, "coeff", m)
        assert len(eps) == len(coeff) == len(series_by_step(result, "delta", m)) > 2
        assert len(set(eps.values())) > 1  # the helper's batch accuracy moves
        assert any(abs(c - 1.0) > 1e-6 for c in coeff.values())  # the modulation acts
        assert all(0.0 <= e <= 1.0 for e in eps.values())
    assert len(series_by_step(result, "direction_loss", "")) == len(eps)
    assert len(series_by_step(result, "grad_norm", "")) == len(eps)  # the pre-clip norm, every step


def test_the_official_tail_helper_trains_too(tiny) -> None:
    cfg = smoke_config(method="cggm", modalities=TV, method_params={"helper": "official_tail", "degenerate": "skip"})
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok", result.error
    assert series_by_step(result, "cos", "text")
