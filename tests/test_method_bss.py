"""BSS: the pool schedule, the difficulty and the learned weights by hand; the epoch's batches on a real
model (easiest first, then the weighted permutation); whole runs that log the pool and repeat."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, method_setup, smoke_config

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.bss import (
    ORDER_KEY,
    cut,
    difficulty,
    easy_to_hard,
    mean_pairwise_cosine,
    min_max,
    pool_fraction,
    sampling_weights,
)
from bench.train import train_run

torch.set_num_threads(1)


def _cfg(modalities: tuple[str, ...] = TV, **fields):
    return smoke_config(**{"method": "bss", "modalities": modalities, "batch_size": 16, **fields})


# -- the formulas by hand --------------------------------------------------------------------------------


def test_pool_fraction_grows_as_the_square_root_to_one_at_t_grow() -> None:
    # epoch 0: sqrt((1 - 0.01) / 40 * 1 + 0.01) = sqrt(0.02475 + 0.01) = sqrt(0.03475) = 0.186413518
    assert pool_fraction(0, 0.1, 40) == pytest.approx(0.186413518)
    # epoch 19: sqrt(0.99 / 40 * 20 + 0.01) = sqrt(0.505) = 0.710633520
    assert pool_fraction(19, 0.1, 40) == pytest.approx(0.710633520)
    assert pool_fraction(39, 0.1, 40) == pytest.approx(1.0)  # 0.99 + 0.01 = 1
    assert pool_fraction(60, 0.1, 40) == 1.0  # capped


def test_min_max_and_a_constant_vector() -> None:
    assert min_max(torch.tensor([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    assert min_max(torch.tensor([0.7, 0.7])).tolist() == [0.0, 0.0]  # ours: no division by zero


def test_mean_pairwise_cosine_by_hand() -> None:
    a, b = torch.tensor([[1.0, 0.0], [0.6, 0.8]]), torch.tensor([[0.0, 1.0], [0.8, 0.6]])
    # row 0: orthogonal -> 0;  row 1: 0.6*0.8 + 0.8*0.6 = 0.96 over norms 1 * 1
    assert mean_pairwise_cosine([a, b]).tolist() == pytest.approx([0.0, 0.96])
    c = torch.tensor([[0.6, 0.8]])
    # pairs (a,b) 0.96, (a,c) 1.0, (b,c) 0.96 -> 2.92 / 3 = 0.973333
    assert float(mean_pairwise_cosine([a[1:], b[1:], c])[0]) == pytest.approx(2.92 / 3)


def test_difficulty_order_and_learned_weights_by_hand() -> None:
    similarity, loss = torch.tensor([0.0, 0.5, 1.0]), torch.tensor([4.0, 0.0, 2.0])
    # s~ = (0, 0.5, 1), l~ = (1, 0, 0.5): d = (1 - s~) + l~ = (2, 0.5, 0.5)
    assert difficulty(similarity, loss).tolist() == [2.0, 0.5, 0.5]
    assert easy_to_hard(difficulty(similarity, loss)).tolist() == [1, 2, 0]  # the tie keeps row order
    # w = 1 - (l~ - s~) + 0.01 = (0.01, 1.51, 1.51), sum 3.03
    assert sampling_weights(similarity, loss).tolist() == pytest.approx([0.01 / 3.03, 1.51 / 3.03, 1.51 / 3.03])


def test_cut_drops_the_last_partial_batch_unless_it_is_the_only_one() -> None:
    order = torch.arange(10)
    assert [len(b) for b in cut(order, 4, drop_last=True)] == [4, 4]
    assert [len(b) for b in cut(order, 4, drop_last=False)] == [4, 4, 2]
    assert [len(b) for b in cut(torch.arange(3), 4, drop_last=True)] == [3]


# -- the epoch's batches on a real model ------------------------------------------------------------------


def test_heuristic_epochs_train_on_the_easiest_pool_measured_once(tiny) -> None:
    method, model, state, train = method_setup(tiny, "bss", batch_size=16, method_params={"t_grow": 2})
    default = train.batch_rows(16, torch.Generator().manual_seed(0))
    batches = method.epoch_batches(model, state, default)
    order = state.scratch[ORDER_KEY]
    assert sorted(order.tolist()) == list(range(64))
    # epoch 0: int(64 * sqrt(0.99 / 2 + 0.01)) = int(64 * 0.7106) = 45 easiest rows; 2 full batches of 16
    assert [len(b) for b in batches] == [16, 16]
    assert set(torch.cat(batches).tolist()) <= set(order[:45].tolist())
    state.epoch = 1  # lambda = 1: every row, and the order is not measured again
    batches = method.epoch_batches(model, state, default)
    assert state.scratch[ORDER_KEY] is order
    assert sorted(torch.cat(batches).tolist()) == list(range(64))


def test_the_learned_scheduler_draws_a_weighted_permutation_each_epoch(tiny) -> None:
    method, model, state, train = method_setup(tiny, "bss", batch_size=24, method_params={"scheduler": "learned"})
    default = train.batch_rows(24, torch.Generator().manual_seed(0))
    batches = method.epoch_batches(model, state, default)
    assert [len(b) for b in batches] == [24, 24]  # 64 rows: the last 16 dropped
    assert len(set(torch.cat(batches).tolist())) == 48  # without replacement
    assert ORDER_KEY not in state.scratch


@pytest.mark.parametrize(("params", "message"), [
    ({"scheduler": "random"}, "scheduler must be one of"),
    ({"lambda0": 0.0}, "lambda0 must be in"),
    ({"t_grow": 0}, "t_grow must be"),
    ({"unimodal_weight": -1.0}, "unimodal_weight must be"),
])
def test_bad_configurations_are_config_errors(params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(_cfg(method_params=params))


# -- whole runs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_smoke_run_logs_the_growing_pool_and_repeats(tiny, modalities) -> None:
    cfg = _cfg(modalities, max_epochs=3, method_params={"t_grow": 2})
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok"
    fractions = [row["value"] for row in result.trajectory if row["series"] == "bss_fraction"]
    assert fractions == [0.5, 1.0, 1.0]  # 32 of 64 rows (2 batches of 16 from 45), then all 64
    measured = [row for row in result.trajectory if row["series"] == "bss_agreement"]
    assert len(measured) == 1 and measured[0]["epoch"] == 0 and 0.0 < measured[0]["value"] <= 1.0
    again = train_run(cfg, dataset=tiny)
    assert again.metrics == result.metrics and again.trajectory == result.trajectory


def test_smoke_run_of_the_learned_scheduler_measures_every_epoch(tiny) -> None:
    result = train_run(_cfg(max_epochs=2, method_params={"scheduler": "learned"}), dataset=tiny)
    assert result.status == "ok"
    assert [row["epoch"] for row in result.trajectory if row["series"] == "bss_sample_loss"] == [0, 1]
    assert all(math.isfinite(v) for v in result.metrics.values())
