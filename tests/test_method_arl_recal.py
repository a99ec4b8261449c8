"""ARL (re-calibration): the schedule, the two contributions, the mask and the strength by hand; the masked
training step and the re-initialisation on a real model; whole runs with 2 and 3 modalities."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import TAV, TV, series_by_step, smoke_config

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.arl_recal import (
    STATE_KEY,
    ablation_differences,
    masked_modalities,
    modality_differences,
    recalibration_strength,
    reinit_contributions,
    resample_contributions,
    schedule,
)
from bench.methods.dnr import cluster_purity, encode_split
from bench.train import SplitTensors, build_trainer, train_run

torch.set_num_threads(1)


def _cfg(modalities=TV, max_epochs=2, **params):
    return smoke_config(method="arl_recal", modalities=modalities, max_epochs=max_epochs, method_params=params)


# -- the formulas by hand ------------------------------------------------------------------------------


def test_schedule_alternates_resample_and_reinit_as_the_official_loop() -> None:
    assert schedule(12, 2, 1, 1) == {2: "resample", 4: "reinit"}  # run.py's defaults
    # two re-samplings, one re-init: 2 R, 4 I, 6 R; at 8 a re-init is due but none is left, so it stops
    assert schedule(12, 2, 2, 1) == {2: "resample", 4: "reinit", 6: "resample"}
    assert schedule(10, 3, 1, 0) == {3: "resample"}
    assert schedule(2, 2, 1, 1) == {}  # epoch 0 never, and no epoch 2 in a 2-epoch run


def test_ablation_differences_by_hand() -> None:
    fused = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    ablated = {"a": torch.tensor([[0.0, 1.0], [1.0, 0.0]]), "b": torch.tensor([[-2.0, 0.0], [1.0, 1.0]])}
    d = ablation_differences(fused, ablated)
    # a: cos 0 -> 1; cos((1,1),(1,0)) = 1/sqrt 2 -> 1 - 0.707107 = 0.292893
    assert torch.allclose(d["a"], torch.tensor([1.0, 1 - 1 / math.sqrt(2)]))
    # b: cos -1 -> |.| = 1 -> 0; identical -> 0
    assert torch.allclose(d["b"], torch.tensor([0.0, 0.0]), atol=1e-7)


def test_resample_contributions_by_hand() -> None:
    d = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 0.0])}
    c = resample_contributions(d, eta=10.0)
    # sample 1: e^10 / (e^10 + 1) = 22026.47 / 22027.47 = 0.9999546; sample 2: 1 / 2 each
    assert c["a"] == pytest.approx((22026.4658 / 22027.4658 + 0.5) / 2, rel=1e-6)
    assert c["b"] == pytest.approx((1 / 22027.4658 + 0.5) / 2, rel=1e-5)
    assert masked_modalities(c, 0.5) == ["a"]  # 0.74998 >= 0.5; b 0.25002 kept
    assert masked_modalities({"a": 0.5, "b": 0.5}, 0.5) == ["a", "b"]  # the official keeps only < threshold


def test_reinit_contributions_and_strength_by_hand() -> None:
    d = {"a": torch.tensor([1.0, 0.5]), "b": torch.tensor([0.0, 0.5])}
    # sample 1: 1 / 1 and 0; sample 2: 0.5 / 1 each -> a 0.75, b 0.25
    assert reinit_contributions(d) == pytest.approx({"a": 0.75, "b": 0.25})
    assert reinit_contributions({"a": torch.zeros(2), "b": torch.zeros(2)}) == {"a": 0.0, "b": 0.0}
    # tanh(3 * 0.1 + 0.01 * 0.5) = tanh(0.305) = 0.295882
    assert recalibration_strength(0.1, 0.5, 3.0, 0.01) == pytest.approx(math.tanh(0.305))
    assert recalibration_strength(0.1, 0.5, 3.0, 0.01) == pytest.approx(0.295882, abs=1e-6)


# -- on a real model -----------------------------------------------------------------------------------


def _trainer(tiny, modalities=TV, max_epochs=4, **params):
    trainer = build_trainer(_cfg(modalities, max_epochs=max_epochs, **params), tiny)
    trainer.method.on_train_start(trainer.model, trainer.state)
    return trainer


def test_modality_differences_zero_each_input_in_turn(tiny) -> None:
    trainer = _trainer(tiny, TAV)
    model = trainer.model
    batch = SplitTensors(tiny.train, TAV, torch.device("cpu")).batch(torch.arange(0, 8))
    model.train()
    d = modality_differences(model, batch)
    assert model.training  # measured in eval mode, the training mode restored
    model.eval()
    with torch.no_grad():
        features, zeros = model.encode(batch), model.encode_zeros(batch)
        fused = model.fuse(features)
        for m in TAV:
            out = model.fuse({**features, m: zeros[m]})
            expected = 1 - torch.nn.functional.cosine_similarity(fused, out, dim=1).abs()
            assert torch.allclose(d[m], expected, atol=1e-6)


@pytest.mark.parametrize("threshold", [0.0, 0.4, 1.1])
def test_the_resample_epoch_trains_with_the_dominant_inputs_zeroed(tiny, threshold) -> None:
    trainer = _trainer(tiny, TAV, start=1, threshold=threshold)
    model, state, method = trainer.model, trainer.state, trainer.method
    state.epoch = 1  # the re-sampling epoch of start = 1
    batch = SplitTensors(tiny.train, TAV, torch.device("cpu")).batch(torch.arange(0, 16))
    loss, logs = method.loss(model, batch, state)
    contributions = resample_contributions(modality_differences(model, batch), 10.0)
    masked = [m for m in TAV if contributions[m] >= threshold]
    assert [m for m in TAV if logs[f"masked/{m}"] == 1.0] == masked
    assert sum(logs[f"contribution/{m}"] for m in TAV) == pytest.approx(1.0, abs=1e-6)
    features, zeros = model.encode(batch), model.encode_zeros(batch)
    inputs = {m: zeros[m] if m in masked else z for m, z in features.items()}
    expected = torch.nn.functional.cross_entropy(model.fuse(inputs), batch.labels)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    state.epoch = 2  # not a re-sampling epoch: plain loss, nothing logged
    plain, logs = method.loss(model, batch, state)
    assert logs == {}
    assert float(plain.detach()) == pytest.approx(float(torch.nn.functional.cross_entropy(
        model(batch).logits, batch.labels).detach()), rel=1e-6)


def test_reinit_uses_purity_gap_and_contribution_and_applies_next_epoch(tiny) -> None:
    trainer = _trainer(tiny, TV, max_epochs=4, start=1)  # plan {1: resample, 2: reinit}
    model, state, method = trainer.model, trainer.state, trainer.method
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():  # stand-in for training
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    state.epoch = 1
    assert method.on_epoch_end(model, state) == {}  # a re-sampling epoch: nothing after it
    state.epoch = 2
    logs = method.on_epoch_end(model, state)
    train, train_labels = encode_split(model, state, "train")
    valid, valid_labels = encode_split(model, state, "valid")
    first = next(iter(state.batches("train")))
    contributions = reinit_contributions(modality_differences(model, first))
    strengths = {}
    for m in TV:
        kmeans = (state.params.kmeans_n_init, state.params.kmeans_seed)  # the method's own k-means call
        gap = abs(cluster_purity(train[m], train_labels, 3, *kmeans)
                  - cluster_purity(valid[m], valid_labels, 3, *kmeans))
        assert logs[f"contribution_reinit/{m}"] == pytest.approx(contributions[m])
        assert logs[f"reinit/{m}"] == pytest.approx(math.tanh(3.0 * gap + 0.01 * contributions[m]))
        strengths[m] = logs[f"reinit/{m}"]
    current = {n: p.detach().clone() for n, p in model.named_parameters()}
    state.epoch = 3
    assert method.on_epoch_start(model, state) == {"reinit_applied": 1.0}
    for name, param in model.named_parameters():
        if name.startswith("encoders."):
            w = strengths[name.split(".")[1]]
            assert torch.allclose(param, w * initial[name] + (1 - w) * current[name], atol=1e-6), name
        else:
            assert torch.equal(param, current[name]), name
    assert state.scratch[STATE_KEY]["pending"] is None


# -- configuration and whole runs ---------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"method_params": {"start": 0}}, "start >= 1"),
    ({"method_params": {"m_weight": -1.0}}, "m_weight >= 0"),
    ({"dev_set": True}, "no dev-set variant"),
    ({"task": "regression"}, "no regression form"),
])
def test_bad_configurations_are_config_errors(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(smoke_config(method="arl_recal", **{"modalities": TV, **fields}))


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_whole_run_resamples_then_reinitialises(tiny, modalities) -> None:
    result = train_run(_cfg(modalities, max_epochs=4, start=1), dataset=tiny)
    assert result.status == "ok"
    rows = result.trajectory
    for m in modalities:
        assert series_by_step(result, "contribution", m) and series_by_step(result, "masked", m)
        assert len(series_by_step(result, "reinit", m)) == 1
    assert any(row["series"] == "reinit_applied" for row in rows)
