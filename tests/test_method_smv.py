"""SMV: the Shapley values, the copy bins, the modality-level share and the expanded mean by hand; the
valuation and the objective on a real model; whole runs that re-sample after the warm-up."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, method_setup, series_by_step, smoke_config

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.smv import (
    COUNTS_KEY,
    SMVParams,
    expanded_mean,
    gap_difference,
    keep_only,
    modality_copies,
    sample_copies,
    shapley_values,
)
from bench.train import train_run

torch.set_num_threads(1)

A, V, T = frozenset({"audio"}), frozenset({"vision"}), frozenset({"text"})


def _b(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


# -- the formulas by hand -----------------------------------------------------------------------------------


def test_bimodal_shapley_values_are_the_official_contributions() -> None:
    # four samples: (audio right, vision right, both right)
    right = {A: _b(1, 0, 1, 0), V: _b(0, 0, 1, 1), A | V: _b(1, 1, 1, 0)}
    phi = shapley_values(right, ("audio", "vision"))
    # official: contrib_a = (value_a + value_all - value_v) / 2 with value_all = 2 when right
    # sample 0: a = (1 + 2 - 0) / 2 = 1.5, v = (0 + 2 - 1) / 2 = 0.5
    # sample 1: a = (0 + 2 - 0) / 2 = 1.0, v = 1.0
    # sample 2: a = (1 + 2 - 1) / 2 = 1.0, v = 1.0
    # sample 3: a = (0 + 0 - 1) / 2 = -0.5, v = (1 + 0 - 0) / 2 = 0.5
    assert phi.tolist() == [[1.5, 0.5], [1.0, 1.0], [1.0, 1.0], [-0.5, 0.5]]
    # BalanceBenchmark's v(S) = [right]: sample 0: a = (1 - 0)/2 + (1 - 0)/2 = 1.0, v = 0/2 + (1 - 1)/2 = 0.0
    one = shapley_values(right, ("audio", "vision"), value="one")
    assert one[0].tolist() == [1.0, 0.0] and one[3].tolist() == [-0.5, 0.5]


def test_trimodal_shapley_values_by_hand() -> None:
    # one sample: only coalitions holding text are right; v(S) = |S| [right]
    right = {T: _b(1), A: _b(0), V: _b(0), T | A: _b(1), T | V: _b(1), A | V: _b(0), T | A | V: _b(1)}
    phi = shapley_values(right, ("text", "audio", "vision"))
    # text: 1/3 (v(T) - 0) + 1/6 (v(TA) - v(A)) + 1/6 (v(TV) - v(V)) + 1/3 (v(TAV) - v(AV))
    #     = 1/3 + 2/6 + 2/6 + 3/3 = 2.0
    # audio: 1/3 (0) + 1/6 (v(TA) - v(T)) + 1/6 (0) + 1/3 (v(TAV) - v(TV)) = 1/6 + 1/3 = 0.5; vision the same
    assert phi[0].tolist() == pytest.approx([2.0, 0.5, 0.5])
    assert float(phi.sum()) == pytest.approx(3.0)  # efficiency: the values sum to v(TAV) = 3


def test_copy_bins_are_the_official_ones() -> None:
    phi = torch.tensor([[-0.5, 0.0], [0.5, 1.0], [1.5, 0.4], [0.99, -0.1]], dtype=torch.float64)
    # -0.5 -> 3, 0.0 -> 2, 0.5 -> 1, 1.0 -> 0, 1.5 -> 0, 0.4 -> 0 (open bins), 0.99 -> 1, -0.1 -> 0
    assert sample_copies(phi).tolist() == [[3, 2], [1, 0], [0, 0], [1, 0]]


def test_gap_difference_by_hand() -> None:
    # mean phi (0.9, 0.3): gaps (0.1, 0.7), |0.1 - 0.7| * 2/3 = 0.4
    assert gap_difference([0.9, 0.3], 1.0) == pytest.approx(0.4)
    assert gap_difference([0.9, 0.3], 0.5) == pytest.approx(0.2)
    assert gap_difference([0.9, 0.3], 1.0, "tanh") == pytest.approx(math.tanh(0.4))
    assert gap_difference([0.9, 0.3], 1.0, "square") == pytest.approx(0.4 ** 1.5)  # 0.252982
    # three modalities (ours): gaps (0.1, 0.7, 0.4): pairs 0.6, 0.3, 0.3 -> mean 0.4 -> * 2/3 = 0.266667
    assert gap_difference([0.9, 0.3, 0.6], 1.0) == pytest.approx(0.4 * 2 / 3)


def test_modality_copies_go_to_the_largest_gap() -> None:
    # every sample: audio 1.5, vision 0.0 -> gaps -0.5 and 1.0, d = 1.5 * 2/3 = 1.0 -> 10 draws for 10 rows
    phi = torch.tensor([[1.5, 0.0]] * 10, dtype=torch.float64)
    copies, measured = modality_copies(phi, SMVParams(level="modality"), torch.Generator().manual_seed(0))
    assert measured["difference"] == pytest.approx(1.0)
    assert int(copies[:, 1].sum()) == 10 and int(copies[:, 0].sum()) == 0


def test_expanded_mean_by_hand() -> None:
    full = torch.tensor([1.0, 2.0])
    kept = {0: torch.tensor([3.0, 4.0]), 1: torch.tensor([5.0, 6.0])}
    copies = torch.tensor([[1, 0], [2, 1]])
    # (1 + 2 + 1*3 + 2*4 + 0*5 + 1*6) / (2 + 4) = 20 / 6
    assert float(expanded_mean(full, kept, copies)) == pytest.approx(20 / 6)
    assert float(expanded_mean(full, {}, torch.zeros(2, 2, dtype=torch.long))) == pytest.approx(1.5)


# -- on a real model ----------------------------------------------------------------------------------------



def test_objective_is_the_mean_over_the_expanded_batch(tiny) -> None:
    method, model, state, train = method_setup(tiny, "smv", TV)
    batch = train.batch(torch.arange(0, 8))
    ce = torch.nn.functional.cross_entropy
    loss, _ = method.loss(model, batch, state)  # warm-up: plain cross-entropy
    assert float(loss.detach()) == pytest.approx(float(ce(model(batch).logits, batch.labels).detach()), rel=1e-6)
    counts = torch.zeros(train.size, 2, dtype=torch.long)
    counts[0, 0], counts[3, 1] = 2, 1  # row 0: two text-only copies; row 3: one vision-only copy
    state.scratch[COUNTS_KEY] = counts
    loss, logs = method.loss(model, batch, state)
    features = model.encode(batch)
    text_only = ce(model.fuse(keep_only(features, frozenset({"text"}))), batch.labels, reduction="none")
    vision_only = ce(model.fuse(keep_only(features, frozenset({"vision"}))), batch.labels, reduction="none")
    full = ce(model(batch).logits, batch.labels, reduction="none")
    expected = (full.sum() + 2 * text_only[0] + vision_only[3]) / 11  # 8 originals + 3 copies
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert logs["expanded"] == pytest.approx(11 / 8)
    # a copy's zeroed modality gets no gradient from it: vision-only copies leave the text encoder alone
    model.zero_grad()
    ce(model.fuse(keep_only(model.encode(batch), frozenset({"vision"}))), batch.labels).backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in model.encoders["text"].parameters())


def test_epoch_end_values_every_row_and_sets_the_copies(tiny) -> None:
    method, model, state, train = method_setup(tiny, "smv", TAV, method_params={"warmup": 1})
    state.splits = {"train": train}
    logs = method.on_epoch_end(model, state)
    counts = state.scratch[COUNTS_KEY]
    assert counts.shape == (train.size, 3)
    # against a direct valuation of row 5
    batch = train.batch(torch.tensor([5]))
    features = model.encode(batch)
    right = {}
    for size in (1, 2, 3):
        import itertools
        for subset in itertools.combinations(TAV, size):
            s = frozenset(subset)
            right[s] = (model.fuse(keep_only(features, s)).argmax(dim=1) == batch.labels)
    phi = shapley_values(right, TAV)
    assert counts[5].tolist() == sample_copies(phi)[0].tolist()
    assert logs["resampled"] == pytest.approx(1 + float(counts.sum()) / train.size)
    assert set(logs) >= {f"contribution/{m}" for m in TAV} | {f"copies/{m}" for m in TAV}


# -- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"method_params": {"level": "batch"}}, "level must be one of"),
    ({"method_params": {"value": "two"}}, "value must be one of"),
    ({"method_params": {"warmup": 0}}, "warmup must be >= 1"),
    ({"method_params": {"part_ratio": 0.0}}, "part_ratio must be in"),
    ({"dev_set": True}, "no dev-set variant"),
    ({"task": "regression"}, "has no regression form"),
])
def test_bad_configurations_are_config_errors(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method="smv", **fields))


# -- whole runs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["sample", "modality"])
def test_runs_resample_after_the_warmup(tiny, level) -> None:
    cfg = smoke_config(method="smv", modalities=TV, max_epochs=3, method_params={"warmup": 2, "level": level})
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok" and all(math.isfinite(v) for v in result.metrics.values())
    contribution = series_by_step(result, "contribution", "text")
    assert len(contribution) == 3  # valued after every epoch
    resampled = list(series_by_step(result, "resampled", "").values())
    assert len(resampled) == 2  # from the end of epoch warmup - 1 = 1 on
    expanded = list(series_by_step(result, "expanded", "").values())
    # per step of epoch 2 only (64 rows): epochs 0 and 1 train plainly
    assert len(expanded) == math.ceil(64 / cfg.batch_size)
    if level == "sample":  # some sample is valued low enough to get copies: some batch holds one
        assert max(expanded) > 1.0
    else:  # int(difference * N) draws, N = 64 training rows
        difference = list(series_by_step(result, "difference", "").values())
        assert [1 + int(d * 64) / 64 for d in difference] == pytest.approx(resampled)
