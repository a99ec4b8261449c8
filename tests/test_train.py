"""The training loop: accumulation, early stopping, determinism, failures, baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny import smoke_config
from torch import nn

from bench.config import ConfigError
from bench.methods import REGISTRY, BuildContext, Method, get_method, register
from bench.methods.baselines import unimodal_config
from bench.metrics import classification_metrics, macro_f1, sentiment_metrics
from bench.train import SplitTensors, evaluate, train_run

torch.set_num_threads(1)


def _cfg(**fields):
    return smoke_config(**{"method": "concat", "max_epochs": 3, **fields})


def test_step_every_4_equals_a_four_times_larger_batch(tiny) -> None:
    # loss is a batch mean, so 4 accumulated micro-batches of 4 (each divided by 4) equal one batch of 16
    common = {"optimizer": "sgd", "momentum": 0.0, "lr": 0.05, "max_epochs": 1}
    small = train_run(_cfg(batch_size=4, step_every=4, **common), dataset=tiny)
    large = train_run(_cfg(batch_size=16, step_every=1, **common), dataset=tiny)
    assert small.status == large.status == "ok"
    for key, value in large.state_dict.items():
        assert torch.allclose(small.state_dict[key], value, atol=1e-6), key
    # and it is not trivially equal: without accumulation the update differs
    single = train_run(_cfg(batch_size=4, step_every=1, **common), dataset=tiny)
    assert not torch.allclose(single.state_dict["head.weight"], large.state_dict["head.weight"], atol=1e-6)


def test_early_stopping_restores_the_best_validation_checkpoint(tiny) -> None:
    seen: list[float] = []
    cfg = _cfg(max_epochs=12, patience=2, lr=0.05, lr_patience=100)
    result = train_run(cfg, dataset=tiny, on_epoch=lambda epoch, m: seen.append(m["loss"]))
    assert result.status == "ok"
    best_epoch = int(np.argmin(seen))
    assert result.metrics["best_epoch"] == best_epoch
    assert result.metrics["val_loss"] == pytest.approx(min(seen), abs=1e-9)
    # stopped after `patience` epochs without improvement (or at the cap)
    assert result.metrics["epochs"] == min(best_epoch + 1 + 2, 12)


def test_same_config_twice_is_bit_identical(tiny) -> None:
    cfg = _cfg(modalities=("text", "audio", "vision"))
    first, second = train_run(cfg, dataset=tiny), train_run(cfg, dataset=tiny)
    assert first.metrics == second.metrics
    assert first.trajectory == second.trajectory
    other_seed = train_run(cfg.replace(seed=1), dataset=tiny)
    assert other_seed.metrics != first.metrics


class _ExplodingLoss(Method):
    name = "test_exploding"

    def loss(self, model, batch, state):
        loss, logs = super().loss(model, batch, state)
        return (loss * math.nan if state.epoch == 1 else loss), logs


def test_nan_loss_ends_the_run_as_failed_with_epoch_and_reason(tiny) -> None:
    register(_ExplodingLoss)
    try:
        result = train_run(_cfg(method="test_exploding"), dataset=tiny)
    finally:
        REGISTRY.pop("test_exploding")
    assert result.status == "failed"
    assert "epoch 1" in result.error and "non-finite loss" in result.error
    assert result.state_dict is None


def test_unknown_method_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="registered methods: .*concat"):
        get_method("concatt")


def test_one_modality_for_concat_is_refused_before_training(tiny) -> None:
    with pytest.raises(ConfigError, match="needs 2 to 8 modalities"):
        train_run(_cfg(modalities=("text",)), dataset=tiny)


def test_window_beyond_the_epoch_cap_is_an_error() -> None:
    with pytest.raises(ConfigError, match="beyond the epochs cap"):
        _cfg(window_start=5, window_end=6, max_epochs=3)


@pytest.mark.parametrize("method", ["unimodal", "concat", "concat_lr", "ensemble", "unipre"])
def test_each_baseline_trains_on_the_smoke_profile(tiny, method) -> None:
    mods = ("text",) if method == "unimodal" else ("text", "vision")
    cfg = _cfg(method=method, modalities=mods)
    deps = {}
    for need in get_method(method).needs(cfg):
        deps[need.run_id] = train_run(need, dataset=tiny).state_dict
    result = train_run(cfg, deps=deps, dataset=tiny)
    assert result.status == "ok", result.error
    assert 0.0 <= result.metrics["test_acc"] <= 100.0
    assert math.isfinite(result.metrics["test_loss"])
    for m in mods:
        assert f"test_acc_{m}" in result.metrics


def test_ensemble_is_the_soft_vote_of_its_unimodal_members(tiny) -> None:
    cfg = _cfg(method="ensemble")
    members = {m: train_run(unimodal_config(cfg, m), dataset=tiny) for m in cfg.modalities}
    deps = {r.run_id: r.state_dict for r in members.values()}
    ensemble = train_run(cfg, deps=deps, dataset=tiny)
    # recompute the vote by hand from the members' own test logits
    model = get_method("ensemble").build(BuildContext(_spec(cfg, tiny), cfg, None, deps))
    split = SplitTensors(tiny.test, cfg.modalities, torch.device("cpu"))
    probs = []
    for m in cfg.modalities:
        logits = torch.cat([model.members[m](b).logits for b in split.iterate(512)]).detach()
        probs.append(torch.softmax(logits, dim=1))
    mean = (probs[0] + probs[1]) / 2
    expected_acc = 100.0 * float((mean.argmax(1) == split.labels).float().mean())
    expected_nll = 100.0 * float(-torch.log(mean[torch.arange(len(mean)), split.labels]).mean())
    assert ensemble.metrics["test_acc"] == pytest.approx(expected_acc)
    assert ensemble.metrics["test_loss"] == pytest.approx(expected_nll, rel=1e-5)


def test_ensemble_and_unipre_refuse_to_run_without_their_unimodal_runs(tiny) -> None:
    with pytest.raises(ConfigError, match="needs the runs"):
        train_run(_cfg(method="unipre"), dataset=tiny)


def test_unipre_starts_from_the_unimodal_encoders(tiny) -> None:
    cfg = _cfg(method="unipre")
    deps = {unimodal_config(cfg, m).run_id: train_run(unimodal_config(cfg, m), dataset=tiny).state_dict
            for m in cfg.modalities}
    model = get_method("unipre").build(BuildContext(_spec(cfg, tiny), cfg, None, deps))
    text_state = deps[unimodal_config(cfg, "text").run_id]
    assert torch.equal(model.encoders["text"].lstm.weight_ih_l0, text_state["encoders.text.lstm.weight_ih_l0"])
    assert model.head.in_features == 32 + 32  # a fresh fused head


def test_evaluate_reports_percent_and_ce_times_100(tiny) -> None:
    model = nn.Module()

    class Constant(nn.Module):
        def forward(self, batch):
            from bench.methods.base import ModelOutput

            logits = torch.zeros(batch.size, 3)
            logits[:, 1] = math.log(2.0)  # p = (1/4, 1/2, 1/4)
            return ModelOutput(logits=logits)

    model = Constant()
    split = SplitTensors(tiny.test, ("text",), torch.device("cpu"))
    metrics = evaluate(model, split)
    labels = tiny.test.labels
    assert metrics["acc"] == pytest.approx(100.0 * np.mean(labels == 1))
    expected_ce = np.mean(np.where(labels == 1, -math.log(0.5), -math.log(0.25)))
    assert metrics["loss"] == pytest.approx(100.0 * expected_ce, rel=1e-6)


def test_macro_f1_by_hand() -> None:
    pred = np.array([0, 0, 1, 1, 2])
    labels = np.array([0, 1, 1, 1, 2])
    # class 0: tp1 fp1 fn0 -> 2/3; class 1: tp2 fp0 fn1 -> 4/5; class 2: tp1 -> 1
    assert macro_f1(pred, labels) == pytest.approx(100 * (2 / 3 + 4 / 5 + 1) / 3)


def test_sentiment_metrics_from_probabilities() -> None:
    # 7 classes with values -3..3; sample 0 certain of +1, sample 1 certain of -2
    probs = np.zeros((2, 7))
    probs[0, 4] = 1.0
    probs[1, 1] = 1.0
    out = sentiment_metrics(probs, np.array([0.8, 0.5]))
    assert out["acc2_has0"] == 50.0  # second predicted negative, truth non-negative
    assert out["acc2_non0"] == 50.0
    assert out["mae"] == pytest.approx((0.2 + 2.5) / 2)


def test_classification_metrics_per_modality() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    labels = torch.tensor([0, 2])
    out = classification_metrics(logits, labels, {"text": logits.flip(0)})
    assert out["acc"] == 50.0
    assert out["acc_text"] == 0.0


def _spec(cfg, data):
    from bench.models import model_spec

    return model_spec(cfg, data.feature_dims, data.num_classes)


def test_a_config_pinned_to_other_data_is_refused(tiny) -> None:
    assert train_run(_cfg(data_version=tiny.fingerprint), dataset=tiny).status == "ok"
    with pytest.raises(ConfigError, match="the data file or the surrogate changed"):
        train_run(_cfg(data_version="0" * 64), dataset=tiny)
    # the version is part of the run id: new data, new runs
    assert _cfg(data_version="a").run_id != _cfg(data_version="b").run_id


@pytest.mark.parametrize("method", ["concat", "agm", "pmr", "reconboost"])
def test_a_finished_run_frees_its_data_without_the_cycle_collector(tiny, method, monkeypatch) -> None:
    """A worker runs hundreds of jobs: a reference cycle through the loop would keep every job's tensors."""
    import gc
    import weakref

    import bench.train as train_module

    alive: list[weakref.ref] = []

    class TrackedSplit(train_module.SplitTensors):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            alive.append(weakref.ref(self))

    modalities = ("text", "audio", "vision") if method != "agm" else ("text", "vision")
    cfg = _cfg(method=method, modalities=modalities, dev_set=method != "reconboost")
    train_run(cfg, dataset=tiny)  # torch's one-time lazy set-up (first optimizer) keeps a frame: not per job
    monkeypatch.setattr(train_module, "SplitTensors", TrackedSplit)
    gc.disable()
    try:
        result = train_run(cfg, dataset=tiny)
        still_alive = [ref() for ref in alive if ref() is not None]
    finally:
        gc.enable()
    assert result.status == "ok"
    assert len(alive) >= 3  # train, valid and test were built (and tracked)
    assert still_alive == []


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_fused_optimizer_step_gives_the_op_by_op_result(tiny, optimizer, monkeypatch) -> None:
    """The speed-up may only round differently: same metrics and weights within float tolerance."""
    import bench.train as train_module

    cfg = _cfg(optimizer=optimizer, lr=5e-3 if optimizer == "adam" else 5e-2, max_epochs=4, weight_decay=1e-3)
    fused = train_run(cfg, dataset=tiny)
    assert train_module.build_trainer(cfg, tiny).optimizer.defaults["fused"] is True
    monkeypatch.setattr(train_module, "fused_optimizer_options", lambda groups: {})
    assert not train_module.build_trainer(cfg, tiny).optimizer.defaults.get("fused")
    op_by_op = train_run(cfg, dataset=tiny)
    assert fused.status == op_by_op.status == "ok"
    for key, value in op_by_op.metrics.items():
        assert fused.metrics[key] == pytest.approx(value, abs=1e-3), key
    for name, weight in op_by_op.state_dict.items():
        assert torch.allclose(fused.state_dict[name], weight, atol=1e-5), name


def test_preloaded_and_per_batch_reads_train_the_same_run(tiny, monkeypatch) -> None:
    """Splits over PRELOAD_BYTES are read per batch (sorted reads of the memory map): same batches, same run."""
    import bench.train as train_module

    cfg = _cfg(modalities=("text", "audio", "vision"), max_epochs=2)
    preloaded = train_run(cfg, dataset=tiny)
    monkeypatch.setattr(train_module, "PRELOAD_BYTES", 0)
    split = train_module.SplitTensors(tiny.train, cfg.modalities, torch.device("cpu"))
    assert not split.preloaded
    per_batch = train_run(cfg, dataset=tiny)
    assert per_batch.metrics == preloaded.metrics
    assert all(torch.equal(per_batch.state_dict[k], v) for k, v in preloaded.state_dict.items())
