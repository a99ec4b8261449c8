"""ReconBoost: boosting weights, the stage schedule, consolidation, phase gradients, runs end to end."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import LN2, LN3, TAV, smoke_config

from bench.config import ConfigError
from bench.methods import get_method, validate_config
from bench.methods.reconboost import (
    boosting_loss,
    boosting_weights,
    consolidation_loss,
    ensemble_members,
    others_distribution,
    previous_modality,
    stage_position,
)
from bench.train import build_trainer, train_run

torch.set_num_threads(1)


def _cfg(**fields):
    return smoke_config(**{"method": "reconboost", "max_epochs": 2, "scheduler": "none", **fields})


# -- phase-1 boosting loss ------------------------------------------------------------------------------


def test_phase1_weight_is_w1_minus_w2_q_of_the_true_class() -> None:
    labels = torch.tensor([0, 1])
    other = {"vision": torch.tensor([[LN3, 0.0], [0.0, 0.0]])}
    q = others_distribution(other, eta=1.0, batch_size=2, num_classes=2)
    # softmax(ln 3, 0) = (3/4, 1/4); softmax(0, 0) = (1/2, 1/2)
    assert torch.allclose(q, torch.tensor([[0.75, 0.25], [0.5, 0.5]]))
    # q_y = (3/4, 1/2): w = 1 - 0.25 * 3/4 = 0.8125 and 1 - 0.25 * 1/2 = 0.875
    assert torch.allclose(boosting_weights(q, labels, w1=1.0, w2=0.25), torch.tensor([0.8125, 0.875]))
    # eta scales the others' logits: softmax(2 ln 3, 0) = (9/10, 1/10) -> w = 1 - 0.25 * 0.9 = 0.775
    q_eta2 = others_distribution(other, eta=2.0, batch_size=2, num_classes=2)
    assert boosting_weights(q_eta2, labels, 1.0, 0.25)[0].item() == pytest.approx(0.775)
    # two other learners are summed: (ln 3, 0) + (ln 3, 0) = (2 ln 3, 0) -> the same (9/10, 1/10)
    two = {"audio": other["vision"], "vision": other["vision"]}
    assert torch.allclose(others_distribution(two, 1.0, 2, 2)[0], torch.tensor([0.9, 0.1]))


def test_q_before_any_other_learner_exists_official_and_uniform() -> None:
    # official: a softmax over a size-1 dimension, so q_{i,k} = 1 and w = w1 - w2 = 1 - 0.25 = 0.75
    q = others_distribution({}, eta=1.0, batch_size=2, num_classes=3)
    assert torch.equal(q, torch.ones(2, 3))
    weights = boosting_weights(q, torch.tensor([0, 2]), 1.0, 0.25)
    assert torch.allclose(weights, torch.tensor([0.75, 0.75]))
    # uniform reading: q = 1/3, w = 1 - 0.25 / 3 = 0.91666...
    q = others_distribution({}, eta=1.0, batch_size=2, num_classes=3, stage0_q="uniform")
    assert torch.equal(q, torch.full((2, 3), 1.0 / 3))
    weights = boosting_weights(q, torch.tensor([0, 2]), 1.0, 0.25)
    assert torch.allclose(weights, torch.tensor([11.0 / 12.0, 11.0 / 12.0]))


def test_boosting_loss_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [LN3, 0.0]])  # log p_y: ln(1/2) and ln(1/4) for labels (0, 1)
    weights = torch.tensor([0.8125, 0.875])
    loss = boosting_loss(logits, torch.tensor([0, 1]), weights)
    # -(1/K) mean_i w_i log p_y = (1/2) * (0.8125 ln 2 + 0.875 * 2 ln 2) / 2 = 0.640625 ln 2
    assert loss.item() == pytest.approx(0.640625 * LN2)


def test_consolidation_switch_live_has_a_gradient_official_none() -> None:
    previous = torch.tensor([[LN3, 0.0]])  # softmax (3/4, 1/4)
    for mode, expect_gradient in [("live", True), ("official", False)]:
        current = torch.zeros(1, 2, requires_grad=True)  # softmax (1/2, 1/2)
        term = consolidation_loss(current, previous, mode)
        # MSE = ((1/2 - 3/4)^2 + (1/2 - 1/4)^2) / 2 = 0.0625 in both modes
        assert term.item() == pytest.approx(0.0625)
        weights = torch.ones(1)
        boost = boosting_loss(current, torch.tensor([0]), weights)
        (boost_grad,) = torch.autograd.grad(boost, current, retain_graph=True)
        (total_grad,) = torch.autograd.grad(boost + 0.5 * term, current)
        changed = not torch.allclose(total_grad, boost_grad)
        assert changed == expect_gradient, mode
    # official: the term is a constant, no graph at all
    assert not consolidation_loss(torch.zeros(1, 2, requires_grad=True), previous, "official").requires_grad


# -- the stage schedule ----------------------------------------------------------------------------------


def _schedule(modalities, stage_epochs, rectify_epochs, epochs):
    positions = [stage_position(e, modalities, stage_epochs, rectify_epochs) for e in range(epochs)]
    return [(p.stage, p.modality, p.phase) for p in positions], [p.last_epoch_of_stage for p in positions]


def test_stage_order_and_phase_per_epoch_one_and_one() -> None:
    rows, ends = _schedule(TAV, 1, 1, 8)
    assert rows == [(0, "text", 1), (0, "text", 2), (1, "vision", 1), (1, "vision", 2),
                    (2, "audio", 1), (2, "audio", 2), (3, "text", 1), (3, "text", 2)]
    assert ends == [False, True] * 4
    rows, _ = _schedule(("text", "vision"), 1, 1, 6)
    assert [r[1] for r in rows] == ["text", "text", "vision", "vision", "text", "text"]
    rows, _ = _schedule(("audio", "vision"), 1, 1, 4)  # no text: vision -> audio, alternating
    assert [r[1] for r in rows] == ["vision", "vision", "audio", "audio"]


def test_stage_order_and_phase_per_epoch_two_and_one() -> None:
    rows, ends = _schedule(("text", "vision"), 2, 1, 7)
    assert rows == [(0, "text", 1), (0, "text", 1), (0, "text", 2),
                    (1, "vision", 1), (1, "vision", 1), (1, "vision", 2), (2, "text", 1)]
    assert ends == [False, False, True, False, False, True, False]


def test_members_and_previous_modality() -> None:
    assert [ensemble_members(s, TAV) for s in range(4)] == [
        ("text",), ("text", "vision"), ("text", "vision", "audio"), ("text", "vision", "audio")
    ]
    assert [previous_modality(s, TAV) for s in range(4)] == [None, "text", "vision", "audio"]


def test_checkpoint_epoch_only_at_stage_ends(tiny) -> None:
    trainer = build_trainer(_cfg(max_epochs=6, method_params={"stage_epochs": 2, "rectify_epochs": 1}), tiny)
    flags = [trainer.method.checkpoint_epoch(e, trainer.state) for e in range(6)]
    assert flags == [False, False, True, False, False, True]


# -- the model and the phases inside the loop ------------------------------------------------------------


def test_ensemble_is_eta_times_the_sum_of_the_learners(tiny) -> None:
    trainer = build_trainer(_cfg(modalities=TAV, method_params={"eta_init": 1.5}), tiny)
    model = trainer.model
    assert model.width == 32  # MOSI sizes: text 32, audio 16, vision 32 -> the largest
    # by hand on fixed logits: 2 * ((1, 0) + (0.5, -1)) = (3, -2)
    model.boost_rate.data.fill_(2.0)
    fixed = {"text": torch.tensor([[1.0, 0.0]]), "vision": torch.tensor([[0.5, -1.0]])}
    assert torch.allclose(model.ensemble(fixed), torch.tensor([[3.0, -2.0]]))
    model.boost_rate.data.fill_(1.5)
    batch = next(trainer.state.batches("valid", shuffle=False))
    model.set_members(TAV)
    out = model(batch)
    assert torch.allclose(out.logits, 1.5 * sum(out.modality_logits.values()), atol=1e-6)
    model.set_members(("text",))  # stage 0: only text is in the ensemble
    out = model(batch)
    assert torch.allclose(out.logits, 1.5 * out.modality_logits["text"], atol=1e-6)


def _grads_after_loss(trainer, epoch: int) -> tuple[dict[str, bool], dict]:
    model, state, method = trainer.model, trainer.state, trainer.method
    state.epoch = epoch
    method.on_epoch_start(model, state)
    model.zero_grad(set_to_none=True)
    loss, logs = method.loss(model, next(trainer.state.batches("train", shuffle=False)), state)
    loss.backward()
    parts = {"text": model.encoders["text"], "audio": model.encoders["audio"],
             "vision": model.encoders["vision"], "head": model.head}
    has_grad = {name: all(p.grad is not None for p in part.parameters()) for name, part in parts.items()}
    none = {name: all(p.grad is None for p in part.parameters()) for name, part in parts.items()}
    assert all(has_grad[n] or none[n] for n in parts)  # a part is either trained or untouched
    has_grad["eta"] = model.boost_rate.grad is not None
    return has_grad, logs


def test_phase1_trains_only_the_stage_modality_and_the_head(tiny) -> None:
    trainer = build_trainer(_cfg(modalities=TAV, max_epochs=6), tiny)
    # epoch 0: stage 0 (text), phase 1; no other learner yet: official q = 1, w = 1 - 0.25
    grads, logs = _grads_after_loss(trainer, epoch=0)
    assert grads == {"text": True, "audio": False, "vision": False, "head": True, "eta": False}
    assert logs["phase1_weight"] == pytest.approx(0.75)
    uniform = build_trainer(_cfg(modalities=TAV, max_epochs=6, method_params={"stage0_q": "uniform"}), tiny)
    assert _grads_after_loss(uniform, epoch=0)[1]["phase1_weight"] == pytest.approx(11.0 / 12.0)
    assert "consolidation_loss" not in logs  # no previous stage
    # epoch 2: stage 1 (vision), phase 1: text is fixed (no gradient), consolidation with text
    grads, logs = _grads_after_loss(trainer, epoch=2)
    assert grads == {"text": False, "audio": False, "vision": True, "head": True, "eta": False}
    assert logs["phase1_weight"] != pytest.approx(0.75)  # q now comes from the text learner
    assert "consolidation_loss" in logs


def test_phase2_trains_the_ensemble_members_the_head_and_eta(tiny) -> None:
    trainer = build_trainer(_cfg(modalities=TAV, max_epochs=6), tiny)
    grads, logs = _grads_after_loss(trainer, epoch=3)  # stage 1 (vision), phase 2: members text, vision
    assert grads == {"text": True, "audio": False, "vision": True, "head": True, "eta": True}
    assert "phase2_loss" in logs
    grads, _ = _grads_after_loss(trainer, epoch=5)  # stage 2 (audio): everyone is a member
    assert all(grads.values())


def test_validate_rejects_dev_set_one_modality_and_a_bad_switch(tiny) -> None:
    with pytest.raises(ConfigError, match="no dev-set variant"):
        validate_config(_cfg(dev_set=True), tiny.modalities)
    with pytest.raises(ConfigError, match="modalities"):
        validate_config(_cfg(modalities=("text",)), tiny.modalities)
    with pytest.raises(ConfigError, match="consolidation"):
        validate_config(_cfg(method_params={"consolidation": "kl"}), tiny.modalities)
    assert not get_method("reconboost").uses_scheduler(_cfg(scheduler="plateau"))


@pytest.mark.parametrize("modalities, epochs", [(("text", "vision"), 2), (TAV, 6)])
def test_reconboost_runs_on_the_smoke_profile(tiny, modalities, epochs) -> None:
    result = train_run(_cfg(modalities=modalities, max_epochs=epochs), dataset=tiny)
    assert result.status == "ok", result.error
    assert all(math.isfinite(v) for v in result.metrics.values())
    present = {row["series"] for row in result.trajectory}
    expected = {"stage", "stage_modality", "eta", "phase1_loss", "phase1_weight", "phase2_loss"}
    assert expected <= present
    assert all(math.isfinite(row["value"]) for row in result.trajectory)
    # validation (and so the checkpoint) only at stage ends: odd epochs with 1 + 1 epochs per stage
    validated = {row["epoch"] for row in result.trajectory if row["split"] == "valid"}
    assert validated == set(range(1, epochs, 2))
    assert int(result.metrics["best_epoch"]) % 2 == 1
    # per-modality validation accuracy of every learner f_m comes from modality_logits
    assert {("acc", m) for m in modalities} <= {(r["series"], r["modality"]) for r in result.trajectory}


def test_early_stopping_patience_counts_stages(tiny) -> None:
    seen: list[float] = []
    cfg = _cfg(max_epochs=12, patience=1, lr=0.05)
    result = train_run(cfg, dataset=tiny, on_epoch=lambda epoch, m: seen.append(m["loss"]))
    assert result.status == "ok"
    best_stage = min(range(len(seen)), key=seen.__getitem__)
    assert result.metrics["best_epoch"] == 2 * best_stage + 1
    # stops one stage (2 epochs) after the best one, or at the cap
    assert result.metrics["epochs"] == min(2 * (best_stage + 2), 12)


def _adam_steps(trainer) -> set[int]:
    """The step counts Adam holds for the shared head (one per optimizer step it took)."""
    return {int(trainer.optimizer.state[p]["step"]) for p in trainer.model.head.parameters()}


@pytest.mark.parametrize(("reset", "phase_epochs"), [("phase", 1), ("run", 2)])
def test_a_fresh_optimizer_at_every_phase_start(tiny, reset: str, phase_epochs: int) -> None:
    trainer = build_trainer(_cfg(max_epochs=2, method_params={"optimizer_reset": reset}), tiny)
    first = trainer.optimizer
    assert [trainer.method.fresh_optimizer(e, trainer.state) for e in range(4)] == (
        [True, True, True, True] if reset == "phase" else [False] * 4)  # 1 + 1 epochs: every epoch starts a phase
    trainer.fit()
    # 64 training samples in batches of 16: 4 optimizer steps per epoch. With "phase" the optimizer of
    # phase 2 (epoch 1) starts at step 0, so Adam's count is 4; with one optimizer per run it is 8.
    assert _adam_steps(trainer) == {4 * phase_epochs}
    assert (trainer.optimizer is first) == (reset == "run")
    assert trainer.state.optimizer is trainer.optimizer
