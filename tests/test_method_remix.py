"""Remix: KL to the uniform distribution, the per-sample assignment and the per-modality batches by hand;
the masked loss's gradients on a real model; whole runs that log the shares and train on the subsets."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, method_setup, smoke_config

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.remix import (
    ASSIGNMENT_KEY,
    assign_modalities,
    keep_only,
    kl_to_uniform,
    subset_batches,
)
from bench.train import train_run

torch.set_num_threads(1)


def _cfg(modalities: tuple[str, ...] = TV, **fields):
    params = fields.pop("method_params", {"warmup": 1})
    return smoke_config(method="remix", modalities=modalities, method_params=params, **fields)


# -- the formulas by hand --------------------------------------------------------------------------------


def test_kl_to_uniform_in_bits_by_hand() -> None:
    probs = torch.tensor([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]])
    kl = kl_to_uniform(probs)
    # uniform: 0.  (0.25, 0.75): 0.25 log2(0.5) + 0.75 log2(1.5) = -0.25 + 0.75 * 0.5849625007 = 0.1887218755
    # (1, 0) clipped to (1, 1e-9): 1 * log2(2) + 1e-9 * log2(2e-9) = 1 + 1e-9 * (-28.8973528540) = 0.99999997110
    assert kl.tolist() == pytest.approx([0.0, 0.1887218755, 0.9999999711026], abs=1e-10)
    # K = 3, (0.5, 0.25, 0.25): 0.5 log2(1.5) + 2 * 0.25 log2(0.75) = 0.29248125 - 0.20751875 = 0.0849625007
    assert float(kl_to_uniform(torch.tensor([[0.5, 0.25, 0.25]]))[0]) == pytest.approx(0.0849625007)


def test_each_sample_goes_to_its_least_confident_modality_ties_to_the_later() -> None:
    kl = torch.tensor([[0.1, 0.3], [0.5, 0.2], [0.4, 0.4]])
    assert assign_modalities(kl).tolist() == [0, 1, 1]  # a tie: the official `KL_a < KL_v` is false -> video
    three = torch.tensor([[0.2, 0.1, 0.1], [0.1, 0.1, 0.3], [0.3, 0.2, 0.9]])
    assert assign_modalities(three).tolist() == [2, 1, 1]


def test_subset_batches_last_modality_first_each_shuffled_and_cut() -> None:
    assignment = torch.tensor([0, 1, 1, 0, 1])
    batches = subset_batches(assignment, 2, 2, torch.Generator().manual_seed(0))
    # modality 1's rows {1, 2, 4}: a batch of 2 and a short one of 1; then modality 0's {0, 3}: one batch
    assert [len(b) for b in batches] == [2, 1, 2]
    assert sorted(torch.cat(batches[:2]).tolist()) == [1, 2, 4] and sorted(batches[2].tolist()) == [0, 3]
    again = subset_batches(assignment, 2, 2, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    # an empty subset gives no batch (the official "Empty Video Subset!")
    assert [len(b) for b in subset_batches(torch.tensor([0, 0, 0]), 2, 2, torch.Generator())] == [2, 1]


def test_keep_only_zeroes_every_other_modality() -> None:
    features = {"text": torch.ones(2, 3), "vision": torch.full((2, 4), 2.0)}
    kept = keep_only(features, "vision")
    assert torch.equal(kept["text"], torch.zeros(2, 3)) and kept["vision"] is features["vision"]


# -- the loss on a real model ------------------------------------------------------------------------------


def _setup(tiny, modalities=TV):
    return method_setup(tiny, "remix", modalities, method_params={"warmup": 1})


def test_a_remixed_batch_trains_only_its_modality_and_the_fused_head(tiny) -> None:
    method, model, state, train = _setup(tiny)
    state.epoch = 1  # past the warm-up of 1 epoch
    batches = method.epoch_batches(model, state, train.batch_rows(16, torch.Generator().manual_seed(0)))
    assignment = state.scratch[ASSIGNMENT_KEY]
    assert sorted(torch.cat(batches).tolist()) == list(range(64))  # every row once
    for rows in batches:
        assert len(set(assignment[rows].tolist())) == 1  # one subset per batch
    rows = batches[0]
    kept = TV[int(assignment[rows[0]])]
    other = next(m for m in TV if m != kept)
    batch = train.batch(rows)
    loss, _ = method.loss(model, batch, state)
    loss.backward()
    grads = {m: [p.grad for p in model.encoders[m].parameters()] for m in TV}
    assert all(g is None or not g.any() for g in grads[other])  # the masked encoder learns nothing
    assert any(g is not None and g.abs().sum() > 0 for g in grads[kept])
    assert model.unimodal_heads[other].weight.grad is None  # its head's loss is not in the objective
    # the objective: CE(f(z'), y) + gamma CE(h_kept(z_kept), y), gamma = 1
    with torch.no_grad():
        z = model.encode(batch)
        expected = torch.nn.functional.cross_entropy(model.fuse(keep_only(z, kept)), batch.labels) \
            + torch.nn.functional.cross_entropy(model.unimodal_heads[kept](z[kept]), batch.labels)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)


def test_warm_up_is_fused_plus_alpha_times_every_unimodal_loss(tiny) -> None:
    method, model, state, train = _setup(tiny)
    default = train.batch_rows(16, torch.Generator().manual_seed(0))
    assert method.epoch_batches(model, state, default) is default  # epoch 0 < warmup 1
    batch = train.batch(default[0])
    loss, _ = method.loss(model, batch, state)
    with torch.no_grad():
        z = model.encode(batch)
        ce = torch.nn.functional.cross_entropy
        expected = ce(model.fuse(z), batch.labels) + 0.5 * sum(
            ce(model.unimodal_heads[m](z[m]), batch.labels) for m in TV)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize(("params", "message"), [
    ({"warmup": -1}, "warmup must be >= 0"),
    ({"alpha": -0.5}, "alpha must be"),
    ({"gamma": math.nan}, "gamma must be"),
])
def test_bad_configurations_are_config_errors(params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(_cfg(method_params=params))
    with pytest.raises(ConfigError, match="no dev-set variant"):
        validate_config(_cfg(dev_set=True))
    with pytest.raises(ConfigError, match="no regression form"):
        validate_config(_cfg(task="regression"))


# -- whole runs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_smoke_run_logs_shares_after_warm_up_and_repeats(tiny, modalities) -> None:
    cfg = _cfg(modalities, max_epochs=3)
    result = train_run(cfg, dataset=tiny)
    assert result.status == "ok"
    shares = [row for row in result.trajectory if row["series"] == "remix_share"]
    assert {row["epoch"] for row in shares} == {1, 2}  # none in the warm-up epoch
    for epoch in (1, 2):
        values = [row["value"] for row in shares if row["epoch"] == epoch]
        assert len(values) == len(modalities) and sum(values) == pytest.approx(1.0)
    again = train_run(cfg, dataset=tiny)
    assert again.metrics == result.metrics and again.trajectory == result.trajectory
