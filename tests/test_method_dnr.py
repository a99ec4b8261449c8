"""Diagnosing & Re-learning: schedule, purity, k-means purity, strength and soft re-initialisation by hand;
the diagnosis on the run's splits; the re-initialisation on a real model; smoke runs with 2 and 3 modalities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny import TAV, TV, smoke_config

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.dnr import (
    STATE_KEY,
    DnRParams,
    cluster_purity,
    encode_split,
    purity,
    reinit_due,
    reinit_strength,
    soft_reinit,
)
from bench.train import build_trainer, train_run

torch.set_num_threads(1)


def _cfg(modalities: tuple[str, ...] = TV, **fields):
    return smoke_config(method="dnr", modalities=modalities, **fields)


# -- formulas by hand ------------------------------------------------------------------------------------


def test_reinit_schedule_follows_the_official_epochs() -> None:
    # official: after epochs 20, 40, 60 (0-based, epoch % 20 == 0 and epoch > 0), at most 3 times
    assert [e for e in range(100) if reinit_due(e, 20, 3)] == [20, 40, 60]
    assert [e for e in range(10) if reinit_due(e, 1, 2)] == [1, 2]
    assert not any(reinit_due(e, 3, 0) for e in range(10))


def test_purity_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    # cluster 0 holds labels 0, 0, 1 (majority 2 samples), cluster 1 holds 1, 2, 2 (2 samples): 4 / 6
    assert purity(labels, np.array([0, 0, 0, 1, 1, 1])) == pytest.approx(4 / 6)
    assert purity(labels, np.array([5, 5, 7, 7, 9, 9])) == 1.0  # cluster ids need not be labels
    assert purity(labels, np.zeros(6, dtype=int)) == pytest.approx(2 / 6)  # one cluster: the majority share


def test_kmeans_purity_on_features_with_three_obvious_clusters() -> None:
    # 1-d points in three tight groups {0, 0.1}, {10, 10.1}, {20, 20.1}; k-means with K = 3 finds them
    features = np.array([[0.0], [0.1], [10.0], [10.1], [20.0], [20.1]])
    assert cluster_purity(features, np.array([0, 0, 1, 1, 2, 2]), 3) == 1.0
    # the same groups, labels mixed inside the first two: (1 + 1 + 2) / 6
    assert cluster_purity(features, np.array([0, 1, 0, 1, 2, 2]), 3) == pytest.approx(4 / 6)
    # each column is min-max scaled to [-1, 1] first: rescaling a column changes nothing
    two = np.column_stack([features[:, 0], [0.3, -0.2, 0.1, 0.0, -0.1, 0.2]])
    labels = np.array([0, 0, 1, 1, 2, 2])
    plain = cluster_purity(two, labels, 3)
    assert cluster_purity(two * np.array([1.0, 1e6]), labels, 3) == plain
    assert cluster_purity(two * np.array([1e-3, 1.0]), labels, 3) == plain


def test_kmeans_is_called_as_the_official_code_by_default(monkeypatch) -> None:
    # official code/ours.py: KMeans(n_clusters=args.n_classes, random_state=0), no n_init: sklearn's default,
    # one k-means++ run since sklearn 1.4. The default is that call; kmeans_n_init=10 the former reading.
    import sklearn.cluster

    calls = []

    class Recorder:
        def __init__(self, **kwargs) -> None:
            calls.append(kwargs)

        def fit_predict(self, x: np.ndarray) -> np.ndarray:
            return np.array([0, 0, 1, 1])  # clusters {0, 1} and {2, 3}

    monkeypatch.setattr(sklearn.cluster, "KMeans", Recorder)
    features = np.array([[0.0], [1.0], [2.0], [3.0]])
    # labels 0, 1 | 1, 1: majorities 1 + 2 of 4 samples = 0.75
    assert cluster_purity(features, np.array([0, 1, 1, 1]), 2) == 0.75
    assert calls[-1] == {"n_clusters": 2, "random_state": 0, "n_init": 1}
    cluster_purity(features, np.array([0, 1, 1, 1]), 2, n_init=10, seed=3)
    assert calls[-1] == {"n_clusters": 2, "random_state": 3, "n_init": 10}
    assert DnRParams().kmeans_n_init == 1


def test_strength_by_hand() -> None:
    # |0.75 - 0.625| = 0.125; tanh(3 * 0.125) = tanh(0.375) = 0.358357
    assert reinit_strength(0.75, 0.625, 3.0) == pytest.approx(0.35835739835078595)
    assert reinit_strength(0.625, 0.75, 3.0) == pytest.approx(0.35835739835078595)  # the gap's absolute value
    assert reinit_strength(0.5, 0.8, 1.0) == pytest.approx(0.2913126124515909)  # tanh(0.3)
    assert reinit_strength(0.7, 0.7, 3.0) == 0.0


def test_soft_reinit_mixes_initial_and_current_weights() -> None:
    param = torch.nn.Parameter(torch.tensor([2.0, 4.0]))
    soft_reinit([param], [torch.tensor([0.0, 1.0])], 0.25)
    # 0.25 * [0, 1] + 0.75 * [2, 4] = [1.5, 3.25]
    assert torch.equal(param.data, torch.tensor([1.5, 3.25]))


# -- the method on a real model ----------------------------------------------------------------------------


def test_diagnosis_uses_train_and_validation_features_and_the_reinit_is_applied_next_epoch(tiny) -> None:
    trainer = build_trainer(_cfg(max_epochs=4, method_params={"reinit_every": 1}), tiny)
    model, state, method = trainer.model, trainer.state, trainer.method
    method.on_train_start(model, state)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():  # stand-in for training: move every parameter away from its initial value
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    state.epoch = 0
    assert method.on_epoch_end(model, state) == {}  # epoch 0 is never followed by a re-init
    state.epoch = 1
    logs = method.on_epoch_end(model, state)
    train, train_labels = encode_split(model, state, "train")
    valid, valid_labels = encode_split(model, state, "valid")
    strengths = {}
    for m in TV:
        p_train = cluster_purity(train[m], train_labels, 3)
        p_valid = cluster_purity(valid[m], valid_labels, 3)
        assert logs[f"purity_train/{m}"] == pytest.approx(p_train)
        assert logs[f"purity_held_out/{m}"] == pytest.approx(p_valid)
        assert logs[f"diagnosis/{m}"] == pytest.approx(abs(p_train - p_valid))
        assert logs[f"reinit/{m}"] == pytest.approx(math.tanh(3.0 * abs(p_train - p_valid)))
        strengths[m] = logs[f"reinit/{m}"]
    current = {n: p.detach().clone() for n, p in model.named_parameters()}
    state.epoch = 2
    assert method.on_epoch_start(model, state) == {"reinit_applied": 1.0}
    for name, param in model.named_parameters():
        modality = name.split(".")[1] if name.startswith("encoders.") else None
        if modality is None:  # the head keeps its trained weights
            assert torch.equal(param, current[name]), name
        else:
            w = strengths[modality]
            assert torch.allclose(param, w * initial[name] + (1 - w) * current[name], atol=1e-6), name
    assert state.scratch[STATE_KEY]["pending"] is None
    assert method.on_epoch_start(model, state) == {}  # applied once
    state.epoch = 3  # the last epoch: nothing left to train, no diagnosis
    assert method.on_epoch_end(model, state) == {}


def test_the_dev_split_can_be_the_held_out_split(tiny) -> None:
    params = {"reinit_every": 1, "held_out": "dev"}
    trainer = build_trainer(_cfg(dev_set=True, max_epochs=3, method_params=params), tiny)
    model, state, method = trainer.model, trainer.state, trainer.method
    method.on_train_start(model, state)
    state.epoch = 1
    logs = method.on_epoch_end(model, state)
    dev, dev_labels = encode_split(model, state, "dev")
    for m in TV:
        assert logs[f"purity_held_out/{m}"] == pytest.approx(cluster_purity(dev[m], dev_labels, 3))
    result = train_run(_cfg(dev_set=True, max_epochs=3, method_params=params), dataset=tiny)
    assert result.status == "ok", result.error
    with pytest.raises(ConfigError, match="dev_set"):  # the dev split exists only in dev-set runs
        validate_config(_cfg(method_params={"held_out": "dev"}), tiny.modalities)


def test_validate_rejects_bad_settings(tiny) -> None:
    for params, match in [({"move_lambda": -1.0}, "move_lambda"), ({"reinit_every": 0}, "reinit_every"),
                          ({"kmeans_n_init": 0}, "kmeans_n_init"), ({"held_out": "test"}, "held_out")]:
        with pytest.raises(ConfigError, match=match):
            validate_config(_cfg(method_params=params), tiny.modalities)
    with pytest.raises(ConfigError, match="regression"):
        validate_config(_cfg(task="regression"), tiny.modalities)


@pytest.mark.parametrize("modalities", [TV, TAV])
def test_dnr_runs_and_re_initialises(tiny, modalities: tuple[str, ...]) -> None:
    result = train_run(_cfg(modalities, max_epochs=3, method_params={"reinit_every": 1}), dataset=tiny)
    assert result.status == "ok", result.error
    assert all(math.isfinite(v) for v in result.metrics.values())
    rows = [r for r in result.trajectory if r["series"] in ("diagnosis", "reinit")]
    # one diagnosis (after epoch 1; epoch 2 is the last), per modality and series
    assert {(r["series"], r["modality"], r["epoch"]) for r in rows} == {
        (s, m, 1) for s in ("diagnosis", "reinit") for m in modalities}
    strengths = [r["value"] for r in rows if r["series"] == "reinit"]
    assert all(0.0 <= w < 1.0 for w in strengths) and max(strengths) > 0.0
    assert [(r["epoch"], r["value"]) for r in result.trajectory if r["series"] == "reinit_applied"] == [(2, 1.0)]


def test_the_official_schedule_does_not_fire_in_a_short_run(tiny) -> None:
    result = train_run(_cfg(max_epochs=3), dataset=tiny)
    assert result.status == "ok", result.error
    assert not [r for r in result.trajectory if r["series"] in ("diagnosis", "reinit", "reinit_applied")]
