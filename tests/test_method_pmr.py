"""PMR: prototypes, prototype logits, scores/ratio/coefficients, the objective, and runs end to end."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import LN2, LN3, smoke_config
from torch.nn import functional as F

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.pmr import (
    Prototypes,
    class_means,
    ema_for_pass,
    empty_prototypes,
    leading_modalities,
    mean_entropy,
    pmr_objective,
    prototype_logits,
    prototype_score,
    ratio_logs,
    rebalance_coefficients,
    update_prototypes,
)
from bench.train import build_trainer, train_run

torch.set_num_threads(1)


def _cfg(**fields):
    return smoke_config(**{"method": "pmr", "max_epochs": 2, **fields})


# -- prototypes ---------------------------------------------------------------------------------------------


def test_prototypes_are_class_means_and_an_absent_class_has_count_zero() -> None:
    features = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    labels = torch.tensor([0, 0, 2])
    means, counts = class_means(features, labels, num_classes=3)
    # class 0: ([1, 2] + [3, 4]) / 2 = [2, 3]; class 1: no sample; class 2: [5, 0]
    assert torch.equal(means, torch.tensor([[2.0, 3.0], [0.0, 0.0], [5.0, 0.0]]))
    assert torch.equal(counts, torch.tensor([2.0, 0.0, 1.0]))


def test_first_prototypes_are_plain_means_and_unseen_classes_stay_zero() -> None:
    means = torch.tensor([[2.0, 3.0], [0.0, 0.0], [5.0, 0.0]])
    counts = torch.tensor([2.0, 0.0, 1.0])
    first = update_prototypes(empty_prototypes(3, 2), means, counts, ema=0.25)
    # no old prototype yet: no EMA toward the zero start (C = C_new), class 1 stays the zero vector
    assert torch.equal(first.centers, torch.tensor([[2.0, 3.0], [0.0, 0.0], [5.0, 0.0]]))
    assert first.seen.tolist() == [True, False, True]


def test_ema_update_is_exact_and_an_absent_class_keeps_its_old_prototype() -> None:
    old = Prototypes(centers=torch.tensor([[0.0, 0.0], [10.0, 10.0], [4.0, 4.0]]),
                     seen=torch.tensor([True, True, True]))
    means = torch.tensor([[2.0, 3.0], [0.0, 0.0], [5.0, 0.0]])
    counts = torch.tensor([2.0, 0.0, 1.0])
    new = update_prototypes(old, means, counts, ema=0.25)
    # C = 0.75 C_new + 0.25 C_old: class 0: 0.75 [2, 3] + 0.25 [0, 0] = [1.5, 2.25]
    # class 1 absent: keeps [10, 10]; class 2: 0.75 [5, 0] + 0.25 [4, 4] = [4.75, 1.0]
    assert torch.allclose(new.centers, torch.tensor([[1.5, 2.25], [10.0, 10.0], [4.75, 1.0]]))
    # ema = 0: the new means replace the old prototypes of the present classes
    plain = update_prototypes(old, means, counts, ema=0.0)
    assert torch.equal(plain.centers, torch.tensor([[2.0, 3.0], [10.0, 10.0], [5.0, 0.0]]))


def test_prototype_logits_are_negative_euclidean_distances() -> None:
    features = torch.tensor([[0.0, 0.0], [3.0, 4.0]], requires_grad=True)
    centers = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    logits = prototype_logits(features, centers)
    # z0 = (0, 0): d to (0, 0) = 0, to (3, 0) = 3;  z1 = (3, 4): d = sqrt(9 + 16) = 5, sqrt(0 + 16) = 4
    assert torch.allclose(logits, torch.tensor([[0.0, -3.0], [-5.0, -4.0]]))
    # a sample sitting on a prototype (distance 0) still gets a finite gradient
    logits.sum().backward()
    assert torch.isfinite(features.grad).all()
    # d/dz0 of -(|z0 - C0| + |z0 - C1|): 0 from the zero distance, -(z0 - C1)/3 = (1, 0) from C1
    assert torch.allclose(features.grad[0], torch.tensor([1.0, 0.0]))


# -- scores, ratio, coefficients -------------------------------------------------------------------------

# prototype logits of a 2-sample, 2-class batch, labels (0, 1)
LABELS = torch.tensor([0, 1])
TEXT_PI = torch.tensor([[0.0, -LN3], [-LN3, 0.0]])  # softmax rows (3/4, 1/4) and (1/4, 3/4)
VISION_PI = torch.tensor([[0.0, 0.0], [0.0, -LN3]])  # softmax rows (1/2, 1/2) and (3/4, 1/4)


def test_scores_ratio_and_coefficients_by_hand() -> None:
    s_text = prototype_score(TEXT_PI, LABELS)  # p_y = 3/4 + 3/4 = 1.5
    s_vision = prototype_score(VISION_PI, LABELS)  # p_y = 1/2 + 1/4 = 0.75
    assert s_text == pytest.approx(1.5) and s_vision == pytest.approx(0.75)
    scores = {"text": s_text, "vision": s_vision}
    assert ratio_logs(scores, ("text", "vision")) == {"ratio": pytest.approx(2.0)}  # 1.5 / 0.75
    # the weaker modality (vision) gets alpha, the stronger 0
    assert rebalance_coefficients(scores, alpha=0.5) == {"text": 0.0, "vision": 0.5}
    assert leading_modalities(scores, {"text": 0.0, "vision": 0.5}) == ["text"]
    # equal scores: nobody is accelerated, nobody is penalised
    equal = rebalance_coefficients({"text": 1.0, "vision": 1.0}, alpha=0.5)
    assert equal == {"text": 0.0, "vision": 0.0}
    assert leading_modalities({"text": 1.0, "vision": 1.0}, equal) == []


def test_three_modalities_every_modality_below_the_best_gets_alpha() -> None:
    scores = {"text": 1.5, "audio": 0.5, "vision": 0.75}
    assert rebalance_coefficients(scores, alpha=0.3) == {"text": 0.0, "audio": 0.3, "vision": 0.3}
    # ratio/<m> = s_m / min s = s_m / 0.5
    expected = {"ratio/text": 3.0, "ratio/audio": 1.0, "ratio/vision": 1.5}
    assert ratio_logs(scores, ("text", "audio", "vision")) == pytest.approx(expected)


# -- the objective ---------------------------------------------------------------------------------------


def test_objective_adds_the_prototype_loss_of_the_weaker_modality_only() -> None:
    fused = torch.zeros(2, 2)  # CE = ln 2
    pis = {"text": TEXT_PI.clone().requires_grad_(), "vision": VISION_PI.clone().requires_grad_()}
    loss, proto_losses = pmr_objective(fused, pis, LABELS, {"text": 0.0, "vision": 0.5})
    # L_P^text = -ln(3/4); L_P^vision = (-ln(1/2) - ln(1/4)) / 2 = 1.5 ln 2
    assert proto_losses["text"].item() == pytest.approx(math.log(4 / 3))
    assert proto_losses["vision"].item() == pytest.approx(1.5 * LN2)
    # L = ln 2 + 0.5 * 1.5 ln 2 = 1.75 ln 2
    assert loss.item() == pytest.approx(1.75 * LN2)
    loss.backward()
    assert pis["text"].grad is None  # beta 0: the stronger modality's term is not in the graph at all
    assert pis["vision"].grad.abs().sum() > 0


def test_prototype_term_gives_no_gradient_to_the_stronger_encoder_output() -> None:
    centers = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    z_text = torch.tensor([[0.5, 0.0], [2.5, 0.0]], requires_grad=True)  # close to its class prototypes
    z_vision = torch.tensor([[1.5, 1.0], [1.0, 0.0]], requires_grad=True)  # closer to the wrong ones
    pis = {"text": prototype_logits(z_text, centers), "vision": prototype_logits(z_vision, centers)}
    scores = {m: prototype_score(pi, LABELS) for m, pi in pis.items()}
    betas = rebalance_coefficients(scores, alpha=0.5)
    assert betas == {"text": 0.0, "vision": 0.5}
    fused = torch.zeros(2, 2)  # fused logits independent of z: only the prototype term reaches z
    loss, _ = pmr_objective(fused, pis, LABELS, betas)
    loss.backward()
    assert z_text.grad is None
    assert z_vision.grad.abs().sum() > 0


def test_entropy_option_changes_the_loss_by_exactly_minus_mu_times_h() -> None:
    fused = torch.zeros(2, 2)
    pis = {"text": TEXT_PI, "vision": VISION_PI}
    betas = {"text": 0.0, "vision": 0.5}
    plain, _ = pmr_objective(fused, pis, LABELS, betas)
    with_entropy, _ = pmr_objective(fused, pis, LABELS, betas, entropy_mu=0.2, leading=["text"])
    # H of (3/4, 1/4) = 3/4 ln(4/3) + 1/4 ln 4 = 0.2157615543 + 0.3465735903 = 0.5623351446 (both rows)
    assert float(mean_entropy(TEXT_PI)) == pytest.approx(0.5623351446)
    assert float(with_entropy - plain) == pytest.approx(-0.2 * 0.5623351446)


# -- the method inside the loop --------------------------------------------------------------------------


def _class_means_of_first(trainer, count: int, epoch: int) -> tuple[dict, dict]:
    """Class means and counts of the first `count` samples of the hook shuffle for `epoch`."""
    saved, trainer.state.epoch = trainer.state.epoch, epoch
    first = next(trainer.state.batches("train", shuffle=True, batch_size=count))
    trainer.state.epoch = saved
    with torch.no_grad():
        features = trainer.model.eval().encode(first)
    trainer.model.train()
    pairs = {m: class_means(z, first.labels, trainer.state.num_classes) for m, z in features.items()}
    return {m: p[0] for m, p in pairs.items()}, {m: p[1] for m, p in pairs.items()}


def test_method_prototypes_come_from_the_first_tenth_of_a_fresh_shuffled_pass(tiny) -> None:
    trainer = build_trainer(_cfg(), tiny)
    model, state, method = trainer.model, trainer.state, trainer.method
    method.on_train_start(model, state)
    # 64 training samples: ceil(0.1 * 64) = 7 samples, the first 7 of the hook shuffle of "epoch" 0
    means, counts = _class_means_of_first(trainer, 7, epoch=0)
    for m in ("text", "vision"):
        expected = torch.where(counts[m].unsqueeze(1) > 0, means[m], torch.zeros_like(means[m]))
        assert torch.allclose(state.scratch["prototypes"][m].centers, expected, atol=1e-6)
    before = {m: p.centers.clone() for m, p in state.scratch["prototypes"].items()}
    # after epoch 0 the prototype pass uses the shuffle of "epoch" 1: another subset of 7
    with torch.no_grad():  # move the encoders so that the new prototypes differ from the old ones
        for p in model.encoders.parameters():
            p.add_(0.1)
    logs = method.on_epoch_end(model, state)
    assert state.epoch == 0  # restored after the pass
    new_means, new_counts = _class_means_of_first(trainer, 7, epoch=1)
    for m in ("text", "vision"):
        present = new_counts[m].unsqueeze(1) > 0
        expected = torch.where(present, new_means[m], before[m])  # ema 0; absent classes keep the old one
        assert torch.allclose(state.scratch["prototypes"][m].centers, expected, atol=1e-6)
    assert set(logs) == {"valid:proto_acc/text", "valid:proto_acc/vision"}
    assert all(0.0 <= v <= 100.0 for v in logs.values())


def _gradients(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_method_loss_in_the_window_adds_only_to_the_weaker_encoder(tiny) -> None:
    trainer = build_trainer(_cfg(method_params={"alpha": 0.5}), tiny)
    model, state, method = trainer.model, trainer.state, trainer.method
    method.on_train_start(model, state)
    batch = next(trainer.state.batches("train", shuffle=False))
    loss, logs = method.loss(model, batch, state)
    weaker = "text" if logs["score/text"] < logs["score/vision"] else "vision"
    stronger = "vision" if weaker == "text" else "text"
    assert logs[f"beta/{weaker}"] == 0.5 and logs[f"beta/{stronger}"] == 0.0
    assert logs["ratio"] == pytest.approx(logs["score/text"] / logs["score/vision"])
    with_proto = _gradients(model, loss)
    plain = _gradients(model, F.cross_entropy(model(batch).logits, batch.labels))
    # the stronger encoder sees exactly the fused-CE gradient; the weaker one gets more
    for name, grad in plain.items():
        if name.startswith(f"encoders.{stronger}.") or name.startswith("head."):
            assert torch.allclose(with_proto[name], grad, atol=1e-7), name
    weaker_diff = sum(float((with_proto[n] - g).abs().sum()) for n, g in plain.items() if weaker in n)
    assert weaker_diff > 0


def test_method_loss_outside_the_window_is_plain_cross_entropy(tiny) -> None:
    trainer = build_trainer(_cfg(window_start=1, window_end=1, method_params={"entropy_mu": 0.5}), tiny)
    model, state, method = trainer.model, trainer.state, trainer.method
    method.on_train_start(model, state)
    batch = next(trainer.state.batches("train", shuffle=False))
    state.epoch = 0  # outside [1, 1]
    loss, logs = method.loss(model, batch, state)
    assert loss.item() == F.cross_entropy(model(batch).logits, batch.labels).item()
    assert logs["beta/text"] == logs["beta/vision"] == 0.0
    state.epoch = 1  # inside: something is added (prototype term, entropy)
    inside, _ = method.loss(model, batch, state)
    assert inside.item() != loss.item()


def test_dev_set_scores_are_recomputed_every_ratio_every_steps(tiny) -> None:
    trainer = build_trainer(_cfg(dev_set=True, ratio_every=2), tiny)
    model, state, method = trainer.model, trainer.state, trainer.method
    method.on_train_start(model, state)
    batch = next(state.batches("train", shuffle=False))
    calls: list[str] = []
    batches = state.batches
    state.batches = lambda split, *a, **k: (calls.append(split), batches(split, *a, **k))[1]
    for step, expect_new_pass in [(0, True), (0, False), (1, False), (2, True), (3, False)]:
        state.step = step
        before = len(calls)
        _, logs = method.loss(model, batch, state)
        assert (len(calls) - before == 1) == expect_new_pass, step
    # the scores are sums over the whole dev split (16 samples) of probabilities
    assert 0.0 < logs["score/text"] < 16.0
    assert calls == ["dev", "dev"]


def test_validate_rejects_bad_params_and_a_single_modality(tiny) -> None:
    with pytest.raises(ConfigError, match="modalities"):
        validate_config(_cfg(modalities=("text",)), tiny.modalities)
    with pytest.raises(ConfigError, match="ema"):
        validate_config(_cfg(method_params={"ema": 1.0}), tiny.modalities)
    with pytest.raises(ConfigError, match="proto_fraction"):
        validate_config(_cfg(method_params={"proto_fraction": 0.0}), tiny.modalities)


@pytest.mark.parametrize("modalities", [("text", "vision"), ("text", "audio", "vision")])
def test_pmr_runs_on_the_smoke_profile(tiny, modalities) -> None:
    cfg = _cfg(modalities=modalities, method_params={"ema": 0.3, "entropy_mu": 0.1})
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok", result.error
    assert all(math.isfinite(v) for v in result.metrics.values())
    present = {(row["series"], row["modality"]) for row in result.trajectory}
    ratios = {("ratio", "")} if len(modalities) == 2 else {("ratio", m) for m in modalities}
    expected = ratios | {(s, m) for s in ("score", "beta", "proto_loss", "proto_acc") for m in modalities}
    assert expected <= present
    assert {row["split"] for row in result.trajectory if row["series"] == "proto_acc"} == {"valid"}
    assert all(math.isfinite(row["value"]) for row in result.trajectory)


def test_ema_starts_with_the_update_after_epoch_one_as_in_the_official_code() -> None:
    # pass 0 = before epoch 0, pass 1 = after epoch 0: plain means; pass 2 = after epoch 1: EMA
    assert [ema_for_pass(k, 0.3) for k in range(4)] == [0.0, 0.0, 0.3, 0.3]


def test_method_prototypes_after_epoch_zero_are_plain_means_even_with_ema(tiny) -> None:
    trainer = build_trainer(_cfg(method_params={"ema": 0.5}), tiny)
    model, state, method = trainer.model, trainer.state, trainer.method
    method.on_train_start(model, state)
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(0.1)
    before = {m: p.centers.clone() for m, p in state.scratch["prototypes"].items()}
    method.on_epoch_end(model, state)  # epoch 0 ends: pass 1, no smoothing
    means, counts = _class_means_of_first(trainer, 7, epoch=1)
    for m in ("text", "vision"):
        present = counts[m].unsqueeze(1) > 0
        assert torch.allclose(state.scratch["prototypes"][m].centers, torch.where(present, means[m], before[m]),
                              atol=1e-6)
    after_one = {m: p.centers.clone() for m, p in state.scratch["prototypes"].items()}
    state.epoch = 1
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(0.1)
    method.on_epoch_end(model, state)  # epoch 1 ends: pass 2, C = 0.5 C_new + 0.5 C_old
    means, counts = _class_means_of_first(trainer, 7, epoch=2)
    for m in ("text", "vision"):
        present = counts[m].unsqueeze(1) > 0
        smoothed = 0.5 * means[m] + 0.5 * after_one[m]
        assert torch.allclose(state.scratch["prototypes"][m].centers, torch.where(present, smoothed, after_one[m]),
                              atol=1e-6)
