"""MLA: entropies, fusion weights, the projector recursion and the head-gradient modification by hand; the
alternating turns on a real model (who gets gradient, what the head's gradient becomes); the fused
evaluation output; smoke runs with 2 and 3 modalities."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, series_by_step, smoke_config, whole_split

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.mla import (
    STATE_KEY,
    MLAModel,
    clear_gradients,
    entropy_fusion_weights,
    fused_logits,
    modify_head_gradient,
    prediction_entropy,
    projector_alpha,
    update_projector,
)
from bench.train import build_trainer, train_run

torch.set_num_threads(1)


def _cfg(modalities: tuple[str, ...] = TV, **fields):
    return smoke_config(method="mla", modalities=modalities, **fields)


def _odds(rows: list[list[float]]) -> torch.Tensor:
    """Logits log(w): softmax gives w / sum(w)."""
    return torch.tensor(rows, dtype=torch.float64).log()


# -- formulas by hand ------------------------------------------------------------------------------------


def test_entropies_by_hand() -> None:
    # uniform over 4 classes: ln 4 = 1.386294
    assert float(prediction_entropy(_odds([[1, 1, 1, 1]]))[0]) == pytest.approx(math.log(4))
    # p = [1/8, 1/8, 1/4, 1/2]: 2 (1/8) ln 8 + (1/4) ln 4 + (1/2) ln 2 = 0.519860 + 0.346574 + 0.346574 = 1.213008
    assert float(prediction_entropy(_odds([[1, 1, 2, 4]]))[0]) == pytest.approx(1.2130076659591864)
    # the official code's batch form: softmax over the batch (dim 0), one entropy for the whole tensor;
    # columns p = [1/4, 3/4] and [1/2, 1/2]: (1/4) ln 4 + (3/4) ln(4/3) + ln 2 = 0.346574 + 0.215762 + 0.693147
    batch = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    assert float(prediction_entropy(batch, "batch")) == pytest.approx(1.2554823251787535)


def test_fusion_weights_favour_the_more_certain_modality() -> None:
    logits = {"text": _odds([[1, 1, 1, 1]]), "vision": _odds([[1, 1, 2, 4]])}
    weights = entropy_fusion_weights(logits)
    # max H = ln 4 (text): w_text ∝ exp(0) = 1; w_vision ∝ exp(ln 4 - 1.213008) = exp(ln 2 / 4) = 2^(1/4)
    assert float(weights["text"][0]) == pytest.approx(1 / (1 + 2 ** 0.25))  # 0.456786
    assert float(weights["vision"][0]) == pytest.approx(2 ** 0.25 / (1 + 2 ** 0.25))  # 0.543214
    fused = fused_logits(logits, weights)
    assert torch.allclose(fused, weights["text"][0] * logits["text"] + weights["vision"][0] * logits["vision"])


def test_sample_weights_are_per_sample_and_batch_weights_are_shared() -> None:
    logits = {"text": _odds([[1, 1, 1, 1], [1, 1, 2, 4]]), "vision": _odds([[1, 1, 2, 4], [1, 1, 1, 1]])}
    sample = entropy_fusion_weights(logits, "sample")
    assert sample["text"].tolist() == pytest.approx([0.45678638, 0.54321362])  # the roles swap per row
    batch = entropy_fusion_weights(logits, "batch")
    # each modality's batch holds the same two rows, so the batch entropies are equal: 1/2 each
    assert batch["text"].tolist() == pytest.approx([0.5, 0.5]) and batch["vision"].shape == (2,)


def test_projector_alpha_by_hand() -> None:
    assert projector_alpha(0, 4) == pytest.approx(0.1)  # 0.1 ** (0/4 + 1)
    assert projector_alpha(2, 4) == pytest.approx(0.1 ** 1.5)  # 0.0316228
    assert projector_alpha(4, 4) == pytest.approx(0.01)


def test_projector_update_by_hand() -> None:
    r = torch.tensor([[1.0, 0.0]])
    # Q = I, k = Q r^T = [1, 0]^T, r k = 1: Q - k k^T / 1.1 = diag(1/11, 1); ||.||_F = sqrt(122) / 11
    q = update_projector(torch.eye(2), r, 0.1)
    assert torch.allclose(q, torch.diag(torch.tensor([1 / math.sqrt(122), 11 / math.sqrt(122)])))
    assert torch.allclose(update_projector(torch.eye(2), r, 0.1, "owm"), q)  # r on an axis: the forms agree
    # before the normalisation the component along r shrinks by alpha / (alpha + |r|^2) = 0.1 / 1.1
    assert float((q @ r.T)[0, 0] / q[1, 1]) == pytest.approx(1 / 11)
    grad = torch.tensor([[1.0, 2.0]])
    # g Q^T = [1/sqrt(122), 22/sqrt(122)] = [0.090536, 1.991786]
    assert torch.allclose(modify_head_gradient(grad, q, "project"),
                          torch.tensor([[1 / math.sqrt(122), 22 / math.sqrt(122)]]))
    assert torch.allclose(modify_head_gradient(grad, q, "add"), grad + grad @ q.T)
    assert torch.equal(modify_head_gradient(grad, q, "off"), grad)


def test_the_release_divides_elementwise_where_owm_divides_by_a_scalar_by_hand() -> None:
    r = torch.tensor([[1.0, 1.0]])
    # Q = I, k = Q r^T = [1, 1]^T, k k^T = all ones.
    # release: alpha + k r = 0.1 + all ones = 1.1 everywhere (elementwise): I - ones / 1.1 = [[1, -10], [-10, 1]] / 11,
    # ||.||_F = sqrt(1 + 100 + 100 + 1) / 11 = sqrt(202) / 11 -> [[1, -10], [-10, 1]] / sqrt(202)
    release = update_projector(torch.eye(2), r, 0.1, "release")
    assert torch.allclose(release, torch.tensor([[1.0, -10.0], [-10.0, 1.0]]) / math.sqrt(202))
    # owm: alpha + r k = 0.1 + 2 = 2.1: I - ones / 2.1 = [[11, -10], [-10, 11]] / 21 -> / sqrt(442) after the norm
    owm = update_projector(torch.eye(2), r, 0.1, "owm")
    assert torch.allclose(owm, torch.tensor([[11.0, -10.0], [-10.0, 11.0]]) / math.sqrt(442))


def test_zero_gradients_are_stepped_again_none_are_skipped_by_hand() -> None:
    # SGD lr 0.1, momentum 0.9; a first step with gradient 1: p = 1 - 0.1 = 0.9, buffer 1.
    # "zero" (torch 1.8's zero_grad): the next step sees gradient 0: buffer 0.9 -> p = 0.9 - 0.09 = 0.81.
    # "none": the next step skips p: 0.9.
    for mode, expected in [("zero", 0.81), ("none", 0.9)]:
        param = torch.nn.Parameter(torch.ones(1))
        optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.9)
        param.grad = torch.ones(1)
        optimizer.step()
        clear_gradients([optimizer], mode)
        optimizer.step()
        assert float(param.detach()) == pytest.approx(expected)


# -- the method on a real model ----------------------------------------------------------------------------


def _recording_trainer(tiny, modalities: tuple[str, ...] = TV, **params):
    """A trainer whose optimizer steps record which parameters have a gradient and the head's gradient."""
    trainer = build_trainer(_cfg(modalities, method_params=params), tiny)
    model, state = trainer.model, trainer.state
    trainer.method.on_train_start(model, state)
    trainer.method.on_epoch_start(model, state)
    steps: list[dict] = []
    raw: list[torch.Tensor] = []
    model.head.weight.register_hook(lambda g: raw.append(g.detach().clone()))

    def record(optimizer, args, kwargs):
        steps.append({"with_grad": {n for n, p in model.named_parameters() if p.grad is not None},
                      "head": model.head.weight.grad.detach().clone()})

    for optimizer in trainer.optimizers.values():
        optimizer.register_step_pre_hook(record)
    return trainer, steps, raw


def test_each_turn_trains_one_encoder_its_projection_and_the_shared_head(tiny) -> None:
    trainer, steps, _ = _recording_trainer(tiny, TAV, clear_grads="none")
    batch = whole_split(tiny, "train", TAV)
    loss, logs = trainer.method.train_step(trainer.model, batch, trainer.state)
    assert len(steps) == 3  # one optimizer step per modality, in run order
    for step, m in zip(steps, TAV, strict=True):
        owners = {n.split(".")[2] if n.startswith("inner.") else n.split(".")[1] if n.startswith("projections.")
                  else n.split(".")[0] for n in step["with_grad"]}
        assert owners == {m, "head"}, (m, step["with_grad"])
        assert not any(n.startswith("inner.head") for n in step["with_grad"])  # the run model's head is unused
    assert [logs[f"turn/{m}"] for m in TAV] == [0.0, 1.0, 2.0]
    assert float(loss) == pytest.approx(sum(logs[f"turn_loss/{m}"] for m in TAV) / 3)
    assert logs["alpha"] == pytest.approx(0.1)  # the first batch of the epoch
    assert trainer.state.scratch[STATE_KEY].updates == 3


def test_later_turns_step_the_modalities_already_updated_with_zero_gradients(tiny) -> None:
    # the default ("zero", the release under torch 1.8): the vision turn also steps the text encoder, whose
    # gradient is a zero tensor; "none" leaves it out of that step
    trainer, steps, _ = _recording_trainer(tiny, TV)
    batch = whole_split(tiny, "train", TV)
    trainer.method.train_step(trainer.model, batch, trainer.state)
    text = {n for n in steps[1]["with_grad"] if n.startswith(("inner.encoders.text.", "projections.text."))}
    assert text and all(float(trainer.model.get_parameter(n).grad.abs().sum()) == 0.0 for n in text)
    after = {}
    for mode in ("zero", "none"):
        trainer, _, _ = _recording_trainer(tiny, TV, clear_grads=mode)
        assert isinstance(trainer.state.optimizer, torch.optim.Adam)
        weight = trainer.model.encoders["text"].proj.weight
        start = weight.detach().clone()
        trainer.method.train_step(trainer.model, batch, trainer.state)
        after[mode] = weight.detach().clone()
    first = after["none"] - start  # the text turn's Adam step: -lr g / |g| per element
    extra = after["zero"] - after["none"]  # the vision turn's step of text with a zero gradient
    # Adam's second step with g = 0: m_hat = 0.9 * 0.1 g / (1 - 0.9^2) = 0.473684 g, v_hat = 0.999 * 0.001 g^2 /
    # (1 - 0.999^2) = 0.499750 g^2: the step is 0.473684 / sqrt(0.499750) = 0.670048 of the first
    # (where |g| >> Adam's eps 1e-8, i.e. the first step is the full lr)
    big = first.abs() > 0.999 * first.abs().max()
    assert big.any() and torch.allclose(extra[big], 0.670048 * first[big], rtol=1e-3)
    assert torch.all(extra * first >= 0)  # elsewhere too, the same direction as the first step


def test_the_head_gradient_is_projected_from_the_second_update_on(tiny) -> None:
    trainer, steps, raw = _recording_trainer(tiny)
    model = trainer.model
    batch = whole_split(tiny, "train", TV)
    with torch.no_grad():  # the vision turn's head input: the vision encoder is untouched by the text turn
        r_vision = model.projections["vision"](model.encode(batch)["vision"]).mean(dim=0, keepdim=True)
    _, logs = trainer.method.train_step(model, batch, trainer.state)
    assert torch.equal(steps[0]["head"], raw[0])  # the run's first update: left alone
    q = update_projector(torch.eye(model.width), r_vision, 0.1)  # alpha 0.1 ** (0 / N_b + 1)
    assert torch.allclose(steps[1]["head"], raw[1] @ q.T, atol=1e-6)
    assert torch.allclose(trainer.state.scratch[STATE_KEY].projector, q, atol=1e-6)
    assert logs["head_grad_kept/text"] == 1.0
    kept = float(torch.linalg.matrix_norm(raw[1] @ q.T) / torch.linalg.matrix_norm(raw[1]))
    assert logs["head_grad_kept/vision"] == pytest.approx(kept, rel=1e-5) and kept < 1.0


def test_head_gradient_off_leaves_every_update_alone(tiny) -> None:
    trainer, steps, raw = _recording_trainer(tiny, head_gradient="off")
    trainer.method.train_step(trainer.model, whole_split(tiny, "train", TV), trainer.state)
    assert all(torch.equal(step["head"], g) for step, g in zip(steps, raw, strict=True))


@pytest.mark.parametrize("fusion", ["entropy", "mean"])
def test_forward_fuses_the_unimodal_logits_of_the_shared_head(tiny, fusion: str) -> None:
    trainer = build_trainer(_cfg(TAV, method_params={"fusion": fusion}), tiny)
    model: MLAModel = trainer.model
    model.eval()
    batch = whole_split(tiny, "valid", TAV)
    with torch.no_grad():
        out = model(batch)
        features = model.encode(batch)
        unimodal = {m: model.head(model.projections[m](features[m])) for m in TAV}
    for m in TAV:
        assert torch.equal(out.modality_logits[m], unimodal[m])
    if fusion == "mean":
        expected = sum(unimodal.values()) / 3
    else:
        weights = entropy_fusion_weights(unimodal)
        assert torch.allclose(sum(weights.values()), torch.ones(batch.size))
        expected = fused_logits(unimodal, weights)
    assert torch.allclose(out.logits, expected, atol=1e-6)


def test_validate_rejects_bad_settings(tiny) -> None:
    for params, match in [({"fusion": "max"}, "fusion"), ({"fusion_entropy": "class"}, "fusion_entropy"),
                          ({"head_gradient": "owm"}, "head_gradient"), ({"project": "scalar"}, "project"),
                          ({"clear_grads": "keep"}, "clear_grads")]:
        with pytest.raises(ConfigError, match=match):
            validate_config(_cfg(method_params=params), tiny.modalities)
    with pytest.raises(ConfigError, match="dev-set"):
        validate_config(_cfg(dev_set=True), tiny.modalities)
    with pytest.raises(ConfigError, match="regression"):
        validate_config(_cfg(task="regression"), tiny.modalities)
    with pytest.raises(ConfigError, match="step_every"):
        validate_config(_cfg(step_every=2), tiny.modalities)


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_mla_runs_and_its_series_act(tiny, modalities: tuple[str, ...]) -> None:
    result = train_run(_cfg(modalities, max_epochs=2), dataset=tiny)
    assert result.status == "ok", result.error
    assert all(math.isfinite(v) for v in result.metrics.values())
    present = {(row["split"], row["series"], row["modality"]) for row in result.trajectory}
    expected = {("train", s, m) for s in ("turn", "turn_loss", "head_grad_kept") for m in modalities}
    expected |= {("valid", "fusion_weight", m) for m in modalities} | {("train", "alpha", "")}
    assert expected <= present
    assert all(math.isfinite(row["value"]) for row in result.trajectory)
    # 64 samples in batches of 16: 4 batches, n updates each; the turns interleave in run order
    n = len(modalities)
    for i, m in enumerate(modalities):
        assert list(series_by_step(result, "turn", m).values())[:2] == [float(i), float(n + i)]
    kept = [v for m in modalities for v in series_by_step(result, "head_grad_kept", m).values()]
    assert min(kept) < 0.5  # the projection shrinks the head's gradient
    for epoch in (0, 1):
        weights = [row["value"] for row in result.trajectory
                   if row["series"] == "fusion_weight" and row["epoch"] == epoch]
        assert sum(weights) == pytest.approx(1.0) and len(set(weights)) == n


def test_the_official_batch_entropy_fusion_runs(tiny) -> None:
    result = train_run(_cfg(max_epochs=2, method_params={"fusion_entropy": "batch"}), dataset=tiny)
    assert result.status == "ok", result.error
