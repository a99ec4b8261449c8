"""CML: the confidence penalty (official mask and BalanceBenchmark's batch sum), the nested subset chains
and the masked features by hand; the loss on a real model; configuration errors; whole runs."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, bare_state, method_setup, smoke_config

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.cml import (
    ORDER_KEY,
    chain_keep_masks,
    confidence_and_prediction,
    confidence_penalty,
    draw_orders,
    masked_features,
)
from bench.train import train_run

torch.set_num_threads(1)


# -- the formulas by hand ----------------------------------------------------------------------------------


def test_confidence_penalty_by_hand() -> None:
    labels = torch.tensor([0, 1, 1, 0])
    more = (torch.tensor([0.6, 0.5, 0.9, 0.7]), torch.tensor([0, 0, 1, 0]))  # (confidence, prediction)
    fewer = (torch.tensor([0.8, 0.9, 0.4, 0.75]), torch.tensor([0, 1, 1, 0]))
    # gaps c_fewer - c_more: 0.2, 0.4, -0.5, 0.05
    # mask s: row 1 has the smaller subset right (1 = 1) and the larger wrong (0 != 1): s = 0; others 1
    # masked: ReLU(0.2) + ReLU(0.4 * 0) + ReLU(-0.5) + ReLU(0.05) = 0.25, 3 rows kept
    value, kept = confidence_penalty(more, fewer, labels, "masked")
    assert float(value) == pytest.approx(0.25) and kept == 3
    # batch_sum: ReLU(0.2 + 0.4 - 0.5 + 0.05) = 0.15, every row counted
    value, kept = confidence_penalty(more, fewer, labels, "batch_sum")
    assert float(value) == pytest.approx(0.15) and kept == 4
    # a smaller subset never more confident: no penalty under either reading
    calm = (torch.tensor([0.3, 0.2, 0.1, 0.1]), fewer[1])
    assert float(confidence_penalty(more, calm, labels, "masked")[0]) == 0.0
    assert float(confidence_penalty(more, calm, labels, "batch_sum")[0]) == 0.0


def test_confidence_and_prediction_by_hand() -> None:
    # softmax(ln 1, ln 3) = (0.25, 0.75): confidence 0.75, class 1
    conf, pred = confidence_and_prediction(torch.log(torch.tensor([[1.0, 3.0]])))
    assert float(conf) == pytest.approx(0.75) and int(pred) == 1


def test_chain_keep_masks_drop_one_more_modality_each_level() -> None:
    orders = torch.tensor([[2, 0, 1], [0, 1, 2]])
    s0, s1, s2 = chain_keep_masks(orders, 3)
    assert s0.all()
    # row 0 drops place 2 first, then place 0; row 1 drops 0, then 1
    assert s1.tolist() == [[True, True, False], [False, True, True]]
    assert s2.tolist() == [[False, True, False], [False, False, True]]


def test_masked_features_zero_the_dropped_modalities() -> None:
    features = {"text": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "vision": torch.tensor([[5.0], [6.0]])}
    keep = torch.tensor([[True, False], [False, True]])
    out = masked_features(features, keep)
    assert out["text"].tolist() == [[1.0, 2.0], [0.0, 0.0]] and out["vision"].tolist() == [[0.0], [6.0]]


def test_draw_orders_are_permutations_and_seeded() -> None:
    first = draw_orders(50, 3, torch.Generator().manual_seed(1))
    again = draw_orders(50, 3, torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert (first.sort(dim=1).values == torch.arange(3)).all()
    assert len({tuple(row) for row in first.tolist()}) > 1  # rows differ: per-sample orders


# -- on a real model ---------------------------------------------------------------------------------------


def _ready(tiny, modalities, **fields):
    method, model, state, train = method_setup(tiny, "cml", modalities, **fields)
    state.splits = {"train": train}
    method.on_train_start(model, state)
    method.on_epoch_start(model, state)
    return method, model, state, train


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_loss_on_a_real_model_by_plain_autograd(tiny, modalities) -> None:
    method, model, state, train = _ready(tiny, modalities)
    batch = train.batch(torch.arange(0, 16))
    loss, logs = method.loss(model, batch, state)
    orders = state.scratch[ORDER_KEY][batch.index]
    features = model.encode(batch)
    n = len(modalities)
    logits = []
    for keep in chain_keep_masks(orders, n):  # late fusion: dropping z_m drops its term, the bias stays
        cols = model.head_slices()
        total = model.head.bias.expand(batch.size, -1)
        for k, m in enumerate(modalities):
            total = total + (features[m] @ model.head.weight[:, cols[m]].T) * keep[:, k:k + 1]
        logits.append(total)
    ce = sum(torch.nn.functional.cross_entropy(z, batch.labels) for z in logits) / n
    conf = [torch.softmax(z, dim=1).max(dim=1) for z in logits]
    penalty = sum(confidence_penalty(a, b, batch.labels)[0] for a, b in zip(conf, conf[1:], strict=False))
    assert float(loss.detach()) == pytest.approx(float((ce + 0.1 * penalty).detach()), rel=1e-5)
    assert logs["penalty"] == pytest.approx(float(penalty.detach()), rel=1e-5, abs=1e-7)
    assert {f"confidence_drop{j}" for j in range(n)} <= set(logs) and 0.0 <= logs["penalty_kept"] <= 1.0


def test_epoch_order_is_one_order_for_every_row(tiny) -> None:
    method, _, state, train = _ready(tiny, TAV, method_params={"order": "epoch"})
    batch = train.batch(torch.arange(0, 8))
    orders = method.batch_orders(batch, state)
    assert orders.shape == (8, 3) and (orders == orders[0]).all()


def test_outside_the_window_the_plain_task_loss(tiny) -> None:
    method, model, _, train = _ready(tiny, TV)
    state = bare_state(smoke_config(method="cml", modalities=TV, window_start=0, window_end=1, max_epochs=3),
                       epoch=2)
    batch = train.batch(torch.arange(0, 16))
    loss, logs = method.loss(model, batch, state)
    plain = torch.nn.functional.cross_entropy(model(batch).logits, batch.labels)
    assert logs == {"in_window": 0.0} and float(loss.detach()) == pytest.approx(float(plain.detach()), rel=1e-6)


@pytest.mark.parametrize(("fields", "message"), [
    ({"dev_set": True}, "no dev-set variant"),
    ({"method_params": {"lam": -0.1}}, "lam must be >= 0"),
    ({"method_params": {"penalty": "mean"}}, "penalty must be one of"),
    ({"method_params": {"order": "fixed"}}, "order must be one of"),
    ({"task": "regression"}, "no regression form"),
])
def test_bad_configurations_are_config_errors(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method="cml", **{"modalities": TV, **fields}))


# -- whole runs --------------------------------------------------------------------------------------------


def test_a_strong_penalty_keeps_the_smaller_subsets_less_confident(tiny) -> None:
    cfg = smoke_config(method="cml", modalities=TV, max_epochs=4)
    runs = {lam: train_run(cfg.replace(method_params=(("lam", lam),)), dataset=tiny) for lam in (0.0, 10.0)}
    assert all(r.status == "ok" and all(math.isfinite(v) for v in r.metrics.values()) for r in runs.values())

    def last_epoch_mean(result, series):
        rows = [r["value"] for r in result.trajectory if r["series"] == series]
        return sum(rows[-4:]) / 4

    # the penalty it logs is smaller when it is weighted in (lam 10) than when it is only measured (lam 0)
    assert last_epoch_mean(runs[10.0], "penalty") < last_epoch_mean(runs[0.0], "penalty")
