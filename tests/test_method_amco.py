"""AMCo (BalanceBenchmark's trainer): the mask schedule, the mask and the dependence test by hand; the
objective on a real model with a dependent modality; whole runs."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, loss_outside_window, method_setup, series_by_step, smoke_config

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.amco import (
    DEPENDENT_KEY,
    AMCoModel,
    class_mask,
    dependent_modalities,
    mask_fraction,
    masked_classes,
)
from bench.methods.inforeg import half_bias_logits
from bench.train import train_run

torch.set_num_threads(1)


def test_mask_schedule_by_hand() -> None:
    # p = sin(pi/2 * min(0.3, l) / 0.3): l = 0 -> 0; 0.1 -> sin(pi/6) = 0.5; 0.2 -> sin(pi/3) = 0.866025;
    # l >= 0.3 -> 1
    assert mask_fraction(0.0, 0.3) == 0.0
    assert mask_fraction(0.1, 0.3) == pytest.approx(0.5)
    assert mask_fraction(0.2, 0.3) == pytest.approx(math.sqrt(3) / 2)
    assert mask_fraction(0.3, 0.3) == pytest.approx(1.0) and mask_fraction(0.9, 0.3) == pytest.approx(1.0)
    # N = int(p K): int(0.5 * 3) = 1, int(0.866 * 2) = 1, int(1.0 * 3) = 3, int(0.49 * 2) = 0
    assert [masked_classes(0.5, 3), masked_classes(0.866, 2), masked_classes(1.0, 3), masked_classes(0.49, 2)] == [
        1, 1, 3, 0]


def test_class_mask_zeroes_n_classes() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = class_mask(5, 2, generator)
    assert sorted(mask.tolist()) == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert class_mask(3, 0).tolist() == [1.0, 1.0, 1.0] and class_mask(3, 3).tolist() == [0.0, 0.0, 0.0]


def test_dependence_is_the_share_of_the_joint_softmax() -> None:
    # one row: o_a = (0, 0), o_v = (ln 3, ln 3): joint softmax over 4 entries = (1, 1, 3, 3) / 8
    # -> audio 0.25, vision 0.75; a second row with equal logits: 0.5 each -> means 0.375 and 0.625
    logits = {"audio": torch.tensor([[0.0, 0.0], [0.0, 0.0]]),
              "vision": torch.tensor([[math.log(3), math.log(3)], [0.0, 0.0]])}
    shares = dependent_modalities(logits, 0.5)
    assert shares["audio"] == pytest.approx(0.375) and shares["vision"] == pytest.approx(0.625)


# -- on a real model ----------------------------------------------------------------------------------------



def test_prediction_is_the_extra_layer_on_the_fused_logits(tiny) -> None:
    _, model, _, train = method_setup(tiny, "amco", TAV)
    assert isinstance(model, AMCoModel)
    batch = train.batch(torch.arange(0, 8))
    out = model(batch)
    assert torch.allclose(out.logits, model.linear_star(model.model(batch).logits), atol=1e-6)
    assert torch.allclose(sum(out.modality_logits.values()), out.logits, atol=1e-5)


def test_schedule_over_an_epochs_batches_and_the_masked_objective(tiny) -> None:
    method, model, state, train = method_setup(tiny, "amco", TV, window_end=-1)
    state.epoch = 1
    method.on_epoch_start(model, state)
    batch = train.batch(torch.arange(0, 16))
    fractions = []
    for _ in range(4):  # l = 0, 0.1, 0.2, 0.3 in epoch 1
        _, logs = method.loss(model, batch, state)
        fractions.append(logs["mask_fraction"])
    assert fractions == pytest.approx([0.0, 0.5, math.sqrt(3) / 2, 1.0])
    # the fifth batch: p = 1, N = K (3): a dependent modality's logits are all zeroed
    state.scratch[DEPENDENT_KEY] = frozenset({"text"})
    loss, logs = method.loss(model, batch, state)
    assert logs["dependent/text"] == 1.0 and logs["dependent/vision"] == 0.0
    ce = torch.nn.functional.cross_entropy
    logits = half_bias_logits(model.model, model.encode(batch))
    zero = torch.zeros_like(logits["text"])
    expected = (ce(model.linear_star(logits["vision"]), batch.labels) + ce(zero, batch.labels)
                + ce(logits["vision"], batch.labels))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    # a new epoch: nothing dependent, the schedule restarts
    method.on_epoch_start(model, state)
    _, logs = method.loss(model, batch, state)
    assert logs["mask_fraction"] == 0.0 and logs["dependent/text"] == 0.0


def test_outside_the_window_the_plain_loss(tiny) -> None:
    loss, plain, logs = loss_outside_window(tiny, "amco")  # the prediction L*(fused), unmasked
    assert loss == pytest.approx(plain, rel=1e-6) and logs == {"in_window": 0.0}


@pytest.mark.parametrize(("fields", "message"), [
    ({"method_params": {"sigma": 1.0}}, "sigma must be in"),
    ({"dev_set": True}, "no dev-set variant"),
    ({"task": "regression"}, "has no regression form"),
])
def test_bad_configurations_are_config_errors(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method="amco", **fields))


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_runs_find_a_dependent_modality_and_mask_it(tiny, modalities) -> None:
    cfg = smoke_config(method="amco", modalities=modalities, max_epochs=2, window_end=-1)
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok" and all(math.isfinite(v) for v in result.metrics.values())
    fractions = list(series_by_step(result, "mask_fraction", "").values())
    assert fractions[0] == 0.0 and max(fractions) > 0.0  # epoch 0 never masks; epoch 1 does
    shares = [series_by_step(result, "share", m) for m in modalities]
    assert all(sum(s[step] for s in shares) == pytest.approx(1.0) for step in shares[0])  # blocks of one softmax
    dependent = [v for m in modalities for v in series_by_step(result, "dependent", m).values()]
    if len(modalities) == 2:  # one of two modalities holds more than half the mass (with 3, none need to)
        assert 1.0 in dependent
