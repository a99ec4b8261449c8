"""G-Blend: G, dO and the G/O^2 weights by hand, the blended loss, the held-out dev split every run carves,
the copies' estimate (the main model untouched), the in-situ estimate, runs for both tasks and 2/3 modalities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import TAV, TV, smoke_config, whole_split

from bench.config import ConfigError
from bench.data.splits import share_index
from bench.methods import get_method, validate_config
from bench.methods.gblend import (
    CHECKPOINT_KEY,
    FUSED,
    WEIGHTS_KEY,
    GBlendModel,
    GBlendParams,
    blend_weights,
    blended_loss,
    gain_and_overfitting_change,
    head_losses,
    overfitting,
    set_sgd_momentum,
    split_losses,
    train_copy_on_head,
    uniform_weights,
)
from bench.train import build_trainer, train_run

torch.set_num_threads(1)


def _trainer(tiny, modalities: tuple[str, ...] = TV, **fields):
    return build_trainer(smoke_config(method="gblend", modalities=modalities, **fields), tiny)


def _weights_by_epoch(result, head: str) -> dict[int, float]:
    return {row["epoch"]: row["value"] for row in result.trajectory
            if row["series"] == "weight" and row["modality"] == head}


# -- formulas by hand ------------------------------------------------------------------------------------


def test_gain_and_overfitting_change_by_hand() -> None:
    # before (L^T, L^V) = (1.0, 1.2), after (0.6, 1.0): G = 1.2 - 1.0 = 0.2; O: 0.2 -> 0.4, dO = 0.2
    assert overfitting(1.0, 1.2) == pytest.approx(0.2)
    gain, change = gain_and_overfitting_change((1.0, 1.2), (0.6, 1.0))
    assert gain == pytest.approx(0.2) and change == pytest.approx(0.2)


def test_weights_are_g_over_o_squared_normalised() -> None:
    # text 0.2 / 0.2^2 = 5, vision 0.1 / 0.1^2 = 10, fused 0.3 / 0.3^2 = 10/3; Z = 55/3: (3, 6, 2) / 11
    weights = blend_weights({"text": 0.2, "vision": 0.1, FUSED: 0.3}, {"text": 0.2, "vision": 0.1, FUSED: 0.3})
    assert weights == pytest.approx({"text": 3 / 11, "vision": 6 / 11, FUSED: 2 / 11})
    assert sum(weights.values()) == pytest.approx(1.0)


def test_a_negative_gain_counts_by_its_size_or_not_at_all() -> None:
    gains = {"text": -0.1, "vision": 0.1, FUSED: 0.2}
    changes = {"text": 0.1, "vision": 0.1, FUSED: 0.2}
    # abs: 10, 10, 5 -> (0.4, 0.4, 0.2); clip: 0, 10, 5 -> (0, 2/3, 1/3)
    assert blend_weights(gains, changes, "abs") == pytest.approx({"text": 0.4, "vision": 0.4, FUSED: 0.2})
    assert blend_weights(gains, changes, "clip") == pytest.approx({"text": 0.0, "vision": 2 / 3, FUSED: 1 / 3})


def test_degenerate_estimates() -> None:
    # no gain anywhere: nothing to normalise
    assert blend_weights({"text": 0.0, FUSED: 0.0}, {"text": 0.1, FUSED: 0.1}) is None
    assert blend_weights({"text": -0.1, FUSED: -0.2}, {"text": 0.1, FUSED: 0.1}, "clip") is None
    # dO = 0: the square is floored at 1e-12, so that head takes (almost) all the weight
    weights = blend_weights({"text": 1e-6, FUSED: 0.1}, {"text": 0.0, FUSED: 0.1})
    # raw: 1e-6 / 1e-12 = 1e6 and 0.1 / 0.01 = 10
    assert weights["text"] == pytest.approx(1e6 / (1e6 + 10))
    with pytest.raises(ConfigError, match="gain_rule"):
        blend_weights({"text": 0.1}, {"text": 0.1}, "square")


def test_blended_loss_by_hand() -> None:
    losses = {"text": torch.tensor(2.0), "vision": torch.tensor(4.0), FUSED: torch.tensor(1.0)}
    # 0.5 * 2 + 0.25 * 4 + 0.25 * 1 = 2.25
    assert float(blended_loss(losses, {"text": 0.5, "vision": 0.25, FUSED: 0.25})) == pytest.approx(2.25)
    assert uniform_weights(("text", "vision", FUSED)) == pytest.approx({"text": 1 / 3, "vision": 1 / 3, FUSED: 1 / 3})


# -- the model, the splits and the hooks ---------------------------------------------------------------------


def test_every_run_holds_out_its_own_eight_percent(tiny) -> None:
    # tiny: 64 training rows; MultiBench's v_rate 0.08: floor(0.08 * 64) = floor(5.12) = 5 held-out rows,
    # 59 left for training, dev_set or not
    for dev_set in (False, True):
        trainer = _trainer(tiny, dev_set=dev_set)
        assert trainer.train_split.size == 59 and trainer.dev_split.size == 5
        assert not set(trainer.train_split.split.ids) & set(trainer.dev_split.split.ids)
    # held_out_share 0: the dataset's dev split (tiny's every 4th row: 16), the former reading
    former = _trainer(tiny, method_params={"held_out_share": 0.0})
    assert former.train_split.size == 48 and former.dev_split.size == 16
    plain = build_trainer(smoke_config(method="concat"), tiny)
    assert plain.train_split.size == 64 and plain.dev_split is None  # other methods: unchanged
    dev_run = build_trainer(smoke_config(method="ogm", dev_set=True), tiny)
    assert dev_run.dev_split.size == 16  # other methods' dev splits: the dataset's, unchanged
    assert get_method("gblend").uses_dev_split(smoke_config(method="gblend"))


def test_the_share_is_eight_percent_of_train_on_every_dataset() -> None:
    # MOSI's 1284 training rows: floor(102.72) = 102 (the dataset's dev split: 100 = 7.8 %); MOSEI's 16326:
    # floor(1306.08) = 1306 (the dataset's: 200 = 1.2 %)
    for n_train, expected in [(1284, 102), (16326, 1306), (100, 8)]:
        labels = np.arange(n_train) % 3
        rows = share_index(labels, 0.08)
        assert rows.shape == (expected,) and len(set(rows.tolist())) == expected
    # stratified: 100 rows of classes 0 / 1 in 75 / 25 -> 8 rows: 6 of class 0 and 2 of class 1
    labels = np.array([0] * 75 + [1] * 25)
    assert np.bincount(labels[share_index(labels, 0.08)]).tolist() == [6, 2]


def test_the_copies_step_sgd_without_momentum_by_default() -> None:
    # lr 0.1, gradient 1 twice: momentum 0 moves -0.1 - 0.1 = -0.2; momentum 0.9 (the run's, the former
    # reading): -0.1, then buffer 0.9 * 1 + 1 = 1.9 -> -0.19, in all -0.29
    for momentum, expected in [(0.0, -0.2), (0.9, -0.29)]:
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.9)
        set_sgd_momentum(optimizer, momentum)
        for _ in range(2):
            param.grad = torch.ones(1)
            optimizer.step()
        assert float(param.detach()) == pytest.approx(expected)
    assert GBlendParams().copy_momentum == 0.0 and GBlendParams().held_out_share == 0.08


def test_build_adds_a_unimodal_head_per_modality_trained_by_the_run_optimizer(tiny) -> None:
    trainer = _trainer(tiny, TAV)
    model = trainer.model
    assert isinstance(model, GBlendModel) and model.heads == (*TAV, FUSED)
    optimized = {id(p) for opt in trainer.optimizers.values() for g in opt.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in model.parameters()}
    batch = whole_split(tiny, "train", TAV)
    outputs = model.head_outputs(batch)
    assert torch.equal(outputs[FUSED], model(batch).logits)
    assert all(outputs[m].shape == (batch.size, 3) for m in TAV)


def test_loss_is_the_weighted_sum_of_the_head_losses(tiny) -> None:
    trainer = _trainer(tiny)
    model, state = trainer.model, trainer.state
    batch = whole_split(tiny, "train", TV)
    state.scratch[WEIGHTS_KEY] = {"text": 0.5, "vision": 0.2, FUSED: 0.3}
    loss, logs = get_method("gblend").loss(model, batch, state)
    outputs = model.head_outputs(batch)
    ce = {k: float(torch.nn.functional.cross_entropy(out.detach(), batch.labels)) for k, out in outputs.items()}
    assert float(loss.detach()) == pytest.approx(0.5 * ce["text"] + 0.2 * ce["vision"] + 0.3 * ce[FUSED], rel=1e-6)
    assert logs == pytest.approx({f"head_loss/{k}": v for k, v in ce.items()})
    loss.backward()  # the unimodal losses reach the encoders (not detached)
    assert model.unimodal["text"].weight.grad is not None
    assert model.base.encoders["text"].proj.weight.grad.abs().sum() > 0


def test_split_losses_are_the_mean_task_loss_of_each_head(tiny) -> None:
    trainer = _trainer(tiny)
    model, state = trainer.model, trainer.state
    losses = split_losses(model, state, "dev", model.heads)
    dev = trainer.dev_split.batch(torch.arange(trainer.dev_split.size))
    with torch.no_grad():
        outputs = model.head_outputs(dev)
    for k in model.heads:
        assert losses[k] == pytest.approx(float(torch.nn.functional.cross_entropy(outputs[k], dev.labels)), rel=1e-5)


def test_a_copy_trained_on_one_head_moves_only_that_head_and_its_encoder(tiny) -> None:
    trainer = _trainer(tiny)
    model, state = trainer.model, trainer.state
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trained = train_copy_on_head(model, "text", state, epochs=1, seed=0)
    moved = {n for n, p in trained.named_parameters() if not torch.equal(p, start[n])}
    assert moved and all(n.startswith(("model.encoders.text.", "unimodal_heads.text.")) for n in moved)
    assert all(torch.equal(p, start[n]) for n, p in model.named_parameters())  # the original is untouched


def test_the_copies_estimate_leaves_the_model_and_logs_weights_summing_to_one(tiny) -> None:
    trainer = _trainer(tiny, TAV, method_params={"super_epoch": 1})
    model, state = trainer.model, trainer.state
    start = {n: p.detach().clone() for n, p in model.state_dict().items()}
    logs = get_method("gblend").on_epoch_start(model, state)
    assert all(torch.equal(v, start[n]) for n, v in model.state_dict().items())
    weights = {k: logs[f"weight/{k}"] for k in model.heads}
    assert logs["estimated"] == 1.0 and sum(weights.values()) == pytest.approx(1.0)
    assert state.scratch[WEIGHTS_KEY] == weights
    # each weight is the formula of that head's logged G and dO
    gains = {k: logs[f"gain/{k}"] for k in model.heads}
    changes = {k: logs[f"overfit_change/{k}"] for k in model.heads}
    assert blend_weights(gains, changes) == pytest.approx(weights)


def test_the_in_situ_estimate_uses_the_main_models_last_two_super_epoch_starts(tiny) -> None:
    trainer = _trainer(tiny, method_params={"super_epoch": 2, "estimate": "in_situ"})
    model, state = trainer.model, trainer.state
    method = get_method("gblend")
    first = method.on_epoch_start(model, state)  # epoch 0: a checkpoint, uniform weights
    assert first["estimated"] == 0.0 and first["weight/text"] == pytest.approx(1 / 3)
    checkpoint = state.scratch[CHECKPOINT_KEY]
    state.epoch = 1
    assert method.on_epoch_start(model, state) == {}  # not a super-epoch start
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    state.epoch = 2
    second = method.on_epoch_start(model, state)
    now = head_losses(model, state, model.heads)
    measured = {k: gain_and_overfitting_change(checkpoint[k], now[k]) for k in model.heads}
    expected = blend_weights({k: g for k, (g, _) in measured.items()}, {k: d for k, (_, d) in measured.items()})
    assert second["estimated"] == 1.0
    assert {k: second[f"weight/{k}"] for k in model.heads} == pytest.approx(expected)


def test_validation_errors() -> None:
    for params, message in [({"super_epoch": 0}, "super_epoch"), ({"estimate": "offline"}, "estimate"),
                            ({"gain_rule": "square"}, "gain_rule"), ({"copy_momentum": 1.0}, "copy_momentum"),
                            ({"held_out_share": -0.1}, "held_out_share")]:
        with pytest.raises(ConfigError, match=message):
            validate_config(smoke_config(method="gblend", method_params=params))
    validate_config(smoke_config(method="gblend"))  # no dev_set needed: the split is carved anyway


# -- runs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("modalities", [TV, TAV])
def test_runs_for_both_tasks_with_weights_per_estimate(tiny, task: str, modalities: tuple[str, ...]) -> None:
    cfg = smoke_config(method="gblend", modalities=modalities, task=task, method_params={"super_epoch": 1})
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok", result.error
    heads = (*modalities, FUSED)
    by_head = {k: _weights_by_epoch(result, k) for k in heads}
    assert all(set(w) == {0, 1} for w in by_head.values())  # one estimate per epoch (super_epoch 1)
    for epoch in (0, 1):
        assert sum(by_head[k][epoch] for k in heads) == pytest.approx(1.0)
    uniform = 1 / len(heads)
    assert any(abs(by_head[k][e] - uniform) > 1e-3 for k in heads for e in (0, 1))  # the weights act
    assert any(row["series"] == "head_loss" for row in result.trajectory)


def test_an_in_situ_run_keeps_uniform_weights_until_its_second_checkpoint(tiny) -> None:
    cfg = smoke_config(method="gblend", method_params={"super_epoch": 1, "estimate": "in_situ"}, max_epochs=3)
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok", result.error
    text = _weights_by_epoch(result, "text")
    assert text[0] == pytest.approx(1 / 3) and set(text) == {0, 1, 2}
    assert any(abs(text[e] - 1 / 3) > 1e-3 for e in (1, 2))
