"""AUG: the boosting loss (by hand and against the official soft-target form), the confidence rule, the check
epochs and the merge weights; the model's learners; whole runs where the weak modality gets learners."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, method_setup, smoke_config
from torch.nn import functional as F

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.aug import (
    boosting_loss,
    confidence_sum,
    is_check_epoch,
    merge_weights,
    weak_modality,
)
from bench.train import train_run

torch.set_num_threads(1)
LN2, LN3 = math.log(2.0), math.log(3.0)


def _cfg(modalities: tuple[str, ...] = TV, **fields):
    return smoke_config(**{"method": "aug", "modalities": modalities, **fields})


# -- the formulas by hand --------------------------------------------------------------------------------


def test_boosting_loss_by_hand() -> None:
    labels = torch.tensor([0])
    # no learner: CE of o_m = (0, 0): ln 2
    assert float(boosting_loss(torch.zeros(1, 2), None, None, labels)) == pytest.approx(LN2)
    # prev = (ln 3, 0): softmax (0.75, 0.25), q = 0.75; new = (0, 0): -log p_new(y) = ln 2; o = prev + new
    # CE(o) + CE(prev) + CE(new) - 0.5 q ln 2 = 2 (-ln 0.75) + ln 2 - 0.5 * 0.75 ln 2
    #   = 0.5753641449 + 0.6931471806 - 0.2599301927 = 1.0085811327
    previous, newest = torch.tensor([[LN3, 0.0]]), torch.zeros(1, 2)
    loss = boosting_loss(previous + newest, previous, newest, labels)
    assert float(loss) == pytest.approx(1.0085811327)


def test_boosting_loss_is_the_official_soft_target_form() -> None:
    g = torch.Generator().manual_seed(0)
    previous, newest = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    labels = torch.tensor([0, 3, 1, 1, 2])
    y = F.one_hot(labels, 4).float()
    output = previous + newest
    # train_CREMAD.py: CE(out, y) + CE(o_fea, y) + CE(add_fea, y) - 0.5 * CE(add_fea, y * softmax(o_fea))
    official = (F.cross_entropy(output, y) + F.cross_entropy(previous, y) + F.cross_entropy(newest, y)
                - 0.5 * F.cross_entropy(newest, y * previous.softmax(1)))
    assert float(boosting_loss(output, previous, newest, labels)) == pytest.approx(float(official), rel=1e-6)


def test_confidence_sum_by_hand() -> None:
    logits, labels = torch.tensor([[LN3, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])
    assert confidence_sum(logits, labels) == pytest.approx(0.75 + 0.5)


def test_the_weak_modality_by_the_official_ratio_and_our_three_modality_rule() -> None:
    assert weak_modality([2.0, 1.0], 1.0) == 1  # r = 2 > 1.01: the second is weak
    assert weak_modality([1.0, 2.0], 1.0) == 0  # r = 0.5 < 0.99
    assert weak_modality([1.005, 1.0], 1.0) is None  # 0.99 <= 1.005 <= 1.01: balanced
    assert weak_modality([1.0102, 1.0], 1.0) == 1
    # three: r_m = s_m / mean(others) = 1 / 2.5 = 0.4, 2 / 2 = 1, 3 / 1.5 = 2 -> the first, 0.4 < 0.99
    assert weak_modality([1.0, 2.0, 3.0], 1.0) == 0
    assert weak_modality([1.0, 1.0, 1.0], 1.0) is None


def test_check_epochs_and_merge_weights() -> None:
    # 200 epochs: check = 20, so epoch 0 and epochs 19, 39, ..., 199 (11 in all)
    assert [e for e in range(200) if is_check_epoch(e, 200)] == [0] + list(range(19, 200, 20))
    assert all(is_check_epoch(e, 5) for e in range(5))  # <= 10 epochs: every epoch
    assert [e for e in range(6) if is_check_epoch(e, 25)] == [0, 1, 3, 5]  # check = 25 // 10 = 2
    assert merge_weights(2, 0.4) == [0.4, 0.6]
    assert merge_weights(3, 0.4) == pytest.approx([1 / 3] * 3)


# -- the model ----------------------------------------------------------------------------------------------


def test_learners_add_to_the_output_stay_untrained_and_pass_gradient_to_the_encoder(tiny) -> None:
    method, model, state, train = method_setup(tiny, "aug", max_epochs=4)
    assert all(len(model.learners[m]) == 4 for m in TV)  # 4 epochs <= 10: a possible learner after each
    batch = train.batch(torch.arange(8))
    features = model.model.encode(batch)
    output, previous, newest = model.boosted("vision", features["vision"])
    assert previous is None and newest is None
    assert model.add_learner("vision", torch.Generator().manual_seed(0)) == 1
    learner = model.learners["vision"][0]
    assert not learner.bias.any() and not learner.weight.requires_grad
    output, previous, newest = model.boosted("vision", features["vision"])
    expected = model.classifier(torch.relu(learner(features["vision"])))
    assert torch.allclose(newest, expected) and torch.allclose(output, previous + newest)
    boosting_loss(output, previous, newest, batch.labels).backward()
    assert learner.weight.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders["vision"].parameters())
    trained = {id(p) for group in method.optimizers(model, state.cfg)[0].groups for p in group["params"]}
    assert id(learner.weight) not in trained and id(model.classifier.weight) in trained
    # the count in use is part of the checkpoint
    _, fresh, _, _ = method_setup(tiny, "aug", max_epochs=4)
    fresh.load_state_dict(model.state_dict())
    assert fresh.active.tolist() == [0, 1]


@pytest.mark.parametrize(("params", "message"), [
    ({"merge_alpha": 1.5}, "merge_alpha must be in"),
    ({"lam": -1.0}, "lam must be"),
    ({"hidden": 0}, "hidden must be"),
])
def test_bad_configurations_are_config_errors(params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(_cfg(method_params=params))


# -- whole runs ---------------------------------------------------------------------------------------------


def test_the_less_confident_modality_gets_learners_and_the_run_repeats(tiny) -> None:
    cfg = _cfg(max_epochs=3, lr=0.01)
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok"

    def series(name: str, m: str) -> list[float]:
        return [row["value"] for row in result.trajectory if row["series"] == name and row["modality"] == m]

    # tiny's text carries a strong class signal, its vision a weak one
    assert series("confidence", "text")[0] > 1.01 * series("confidence", "vision")[0]
    assert series("learners", "text") == [0.0, 0.0, 0.0]
    assert series("learners", "vision")[:2] == [0.0, 1.0]  # added after epoch 0, used from epoch 1
    again = train_run(cfg, dataset=tiny)
    assert again.metrics == result.metrics and again.trajectory == result.trajectory


def test_three_modality_run_logs_every_modality(tiny) -> None:
    result = train_run(_cfg(TAV, max_epochs=2), dataset=tiny)
    assert result.status == "ok"
    logged = {(row["series"], row["modality"]) for row in result.trajectory}
    assert {(s, m) for s in ("confidence", "learners") for m in TAV} <= logged
