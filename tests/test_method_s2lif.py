"""S2LIF (reconstructed): the gates, the sparsity terms and the objective by hand; the order's conditioning
(which masks read which selections, where gradient flows); order switching; smoke runs of both tasks with
their logs; concat on the s2lif model; the errors for combinations it does not take."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import DIMS, TAV, TV, smoke_config, whole_split

from bench.config import ConfigError
from bench.methods import validate_config
from bench.methods.s2lif import mask_densities, sparsity_terms, step_logs, total_objective
from bench.models import ModelSpec
from bench.models.s2lif import (
    conditioning_sources,
    expected_l0,
    hard_concrete_gate,
    mask_chain,
    mask_penalty,
    sigmoid_gate,
)
from bench.train import build_trainer, train_run

torch.set_num_threads(1)
LN3 = math.log(3.0)


def _cfg(modalities: tuple[str, ...] = TV, **fields):
    return smoke_config(method="s2lif", modalities=modalities, **fields)


def _model(modalities: tuple[str, ...] = TV, **params):
    from bench.models.s2lif import S2LIFModel

    spec = ModelSpec(modalities=modalities, input_dims=tuple((m, DIMS[m]) for m in modalities), sizes=(),
                     num_classes=3, params=tuple({"hidden": 4, "cond_hidden": 5, **params}.items()))
    torch.manual_seed(0)
    return S2LIFModel.build(spec)


# -- formulas by hand ------------------------------------------------------------------------------------


def test_sigmoid_gate_and_its_l1_by_hand() -> None:
    logits = torch.tensor([0.0, LN3])
    gates = sigmoid_gate(logits, 1.0)
    assert torch.allclose(gates, torch.tensor([0.5, 0.75]))  # 1 / (1 + 1/3) = 0.75
    assert float(mask_penalty(logits, gates, "sigmoid", 1.0)) == pytest.approx(0.625)  # mean of 0.5, 0.75
    # the temperature divides the logits: [0, 2 ln 3] at temperature 2 is the same mask
    assert torch.allclose(sigmoid_gate(torch.tensor([0.0, 2 * LN3]), 2.0), torch.tensor([0.5, 0.75]))


def test_hard_concrete_gate_and_expected_l0_by_hand() -> None:
    # no noise: clamp(sigmoid(a) * 1.2 - 0.1, 0, 1); a = 0 -> 0.5, a = ln 3 -> 0.75 * 1.2 - 0.1 = 0.8
    logits = torch.tensor([0.0, LN3, 10.0, -10.0])
    assert torch.allclose(hard_concrete_gate(logits, 1.0), torch.tensor([0.5, 0.8, 1.0, 0.0]), atol=1e-6)
    # noise u = 0.75 adds log(0.75 / 0.25) = ln 3 to a = 0: s = 0.75 -> 0.8; u = 0.5 adds nothing
    noisy = hard_concrete_gate(torch.tensor([0.0, 0.0]), 1.0, torch.tensor([0.75, 0.5]))
    assert torch.allclose(noisy, torch.tensor([0.8, 0.5]))
    # P(gate > 0) = sigmoid(a - beta log(gamma / -zeta)) = sigmoid(0 + ln 11) = 11 / 12 at a = 0, beta = 1
    assert float(expected_l0(torch.tensor(0.0), 1.0)) == pytest.approx(11 / 12)
    assert float(mask_penalty(torch.zeros(3), torch.zeros(3), "hard_concrete", 1.0)) == pytest.approx(11 / 12)


def test_objective_and_logs_by_hand() -> None:
    task = torch.tensor(1.0)
    stage = {"text": torch.tensor(0.5), "vision": torch.tensor(0.25)}
    sparsity = {"text": torch.tensor(0.625), "vision": torch.tensor(0.5)}
    total = total_objective(task, stage, sparsity, stage_weight=2.0, sparsity_weight=0.1)
    assert float(total) == pytest.approx(1.0 + 2.0 * 0.75 + 0.1 * 1.125)  # 2.6125
    logs = step_logs(task, stage, sparsity, total, {"text": 0.5, "vision": 0.25})
    assert logs == pytest.approx({"loss/task": 1.0, "loss/text": 0.5, "loss/vision": 0.25, "loss/sparsity": 1.125,
                                  "loss/total": 2.6125, "sparsity/text": 0.625, "sparsity/vision": 0.5,
                                  "density/text": 0.5, "density/vision": 0.25})


def test_the_chain_of_each_order() -> None:
    assert mask_chain("text_first", TAV) == ("text", "vision", "audio")
    assert mask_chain("video_first", TAV) == ("vision", "text", "audio")
    assert mask_chain("joint", TAV) == ()
    assert conditioning_sources("text_first", TAV) == {"text": (), "vision": ("text",), "audio": ("text", "vision")}
    assert conditioning_sources("video_first", TV) == {"vision": (), "text": ("vision",)}
    assert conditioning_sources("text_first", ("text", "audio")) == {"text": (), "audio": ("text",)}
    assert conditioning_sources("joint", TV) == {"text": (), "vision": ()}


# -- the model: conditioning and gradient ----------------------------------------------------------------


def _encoded(batch_size: int = 3, width: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch_size, width, generator=g) for m in TAV}


def test_text_first_vision_mask_reads_the_selected_text_and_joint_does_not(tiny) -> None:
    batch = whole_split(tiny, "train", TV)
    for order, depends in (("text_first", True), ("joint", False)):
        model = _model(order=order)
        h = _encoded()
        first = model.select(batch, encoded=h)
        changed = model.select(batch, encoded={**h, "text": h["text"] + 1.0})
        assert torch.equal(first.logits["text"], changed.logits["text"])  # the text mask is free
        assert (not torch.allclose(first.logits["vision"], changed.logits["vision"])) is depends, order
        # x_m^c = g_m * h_m and the fused output is the head over [x_t^c | x_v^c]
        assert torch.allclose(first.selected["vision"], first.gates["vision"] * h["vision"])
        fused = model.head(torch.cat([first.selected["text"], first.selected["vision"]], dim=1))
        assert torch.allclose(first.fused, fused)
    assert _model(order="text_first").select(batch, encoded=_encoded()).logits["vision"].shape == (3, 4)  # per sample
    assert _model(order="joint").select(batch, encoded=_encoded()).logits["vision"].shape == (4,)  # shared


def test_the_vision_stage_does_not_reshape_the_text_selection_unless_told(tiny) -> None:
    batch = whole_split(tiny, "train", TV)
    for detach, reaches_text in ((True, False), (False, True)):
        model = _model(order="text_first", detach_condition=detach)
        selection = model.select(batch)
        selection.stage_logits["vision"].sum().backward()  # stands in for L_v
        conditioner = model.conditioners["vision"][0].weight.grad
        assert conditioner is not None and float(conditioner.abs().sum()) > 0  # the vision mask learns from L_v
        text_grad = model.mask_logits["text"].grad
        assert (text_grad is not None and float(text_grad.abs().sum()) > 0) is reaches_text


def test_video_first_swaps_which_mask_is_free(tiny) -> None:
    model = _model(order="video_first")
    assert set(model.mask_logits) == {"vision"} and set(model.conditioners) == {"text"}
    batch = whole_split(tiny, "train", TV)
    h = _encoded()
    first = model.select(batch, encoded=h)
    changed = model.select(batch, encoded={**h, "vision": h["vision"] - 1.0})
    assert not torch.allclose(first.logits["text"], changed.logits["text"])
    three = _model(TAV, order="text_first")
    assert set(three.mask_logits) == {"text"} and set(three.conditioners) == {"vision", "audio"}
    assert three.conditioners["audio"][0].in_features == 8  # [x_t^c | x_v^c]


def test_hard_concrete_noise_comes_from_the_generator_and_not_in_eval(tiny) -> None:
    model = _model(mask_form="hard_concrete")
    batch = whole_split(tiny, "train", TV)
    one = model.select(batch, torch.Generator().manual_seed(3)).gates["text"]
    same = model.select(batch, torch.Generator().manual_seed(3)).gates["text"]
    other = model.select(batch, torch.Generator().manual_seed(4)).gates["text"]
    assert torch.equal(one, same) and not torch.equal(one, other)
    model.eval()
    quiet = model.select(batch, torch.Generator().manual_seed(3)).gates["text"]
    assert torch.allclose(quiet, hard_concrete_gate(model.mask_logits["text"].detach(), 1.0))


def test_the_method_passes_its_order_and_terms_to_the_model(tiny) -> None:
    params = {"order": "video_first", "mask_form": "hard_concrete", "temperature": 0.5, "sparsity": 0.1}
    trainer = build_trainer(_cfg(method_params=params), tiny)
    model, state, method = trainer.model, trainer.state, trainer.method
    assert (model.order, model.mask_form, model.temperature) == ("video_first", "hard_concrete", 0.5)
    batch = whole_split(tiny, "train", TV)
    model.eval()  # no noise: the step's selection is the one computed below
    loss, logs = method.loss(model, batch, state)
    selection = model.select(batch)
    sparsity = sparsity_terms(selection, "hard_concrete", 0.5)
    expected = (state.task.loss(selection.fused, batch.labels)
                + sum(state.task.loss(out, batch.labels) for out in selection.stage_logits.values())
                + 0.1 * sum(sparsity.values()))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert logs["density/text"] == pytest.approx(mask_densities(selection)["text"])
    free_vision = model.mask_logits["vision"].detach()
    assert logs["sparsity/vision"] == pytest.approx(float(expected_l0(free_vision, 0.5).mean()))


# -- training runs ---------------------------------------------------------------------------------------


def _series(result, series: str, modality: str) -> list[float]:
    return [r["value"] for r in result.trajectory if r["series"] == series and r["modality"] == modality]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_smoke_run_logs_every_term_and_sparsity_closes_the_masks(tiny, task: str) -> None:
    open_run = train_run(_cfg(task=task, max_epochs=4, method_params={"sparsity": 0.0}), dataset=tiny)
    sparse_run = train_run(_cfg(task=task, max_epochs=4, method_params={"sparsity": 2.0}), dataset=tiny)
    for result in (open_run, sparse_run):
        assert result.status == "ok", result.error
        assert all(math.isfinite(v) for v in result.metrics.values())
        steps = len(_series(result, "loss", "task"))
        assert steps > 0
        for series, modality in [("loss", "total"), ("loss", "sparsity"), ("loss", "text"), ("loss", "vision"),
                                 ("density", "text"), ("density", "vision"), ("sparsity", "text")]:
            assert len(_series(result, series, modality)) == steps, (series, modality)
        assert all(0.0 < d <= 1.0 for d in _series(result, "density", "vision"))
    # the logged total is the sum of its logged terms (stage weight 1, sparsity weight 2)
    parts = zip(*(_series(sparse_run, "loss", m) for m in ("total", "task", "text", "vision", "sparsity")),
                strict=True)
    for total, fused, text, vision, sparsity in parts:
        assert total == pytest.approx(fused + text + vision + 2.0 * sparsity, rel=1e-5)
    # the sparsity weight closes the masks: lower final densities than without it
    for m in TV:
        assert _series(sparse_run, "density", m)[-1] < _series(open_run, "density", m)[-1] - 0.01


def test_three_modalities_and_text_audio_run(tiny) -> None:
    for modalities in (TAV, ("text", "audio")):
        result = train_run(_cfg(modalities), dataset=tiny)
        assert result.status == "ok", result.error
        assert {r["modality"] for r in result.trajectory if r["series"] == "density"} == set(modalities)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_concat_runs_on_the_s2lif_model(tiny, task: str) -> None:
    result = train_run(smoke_config(method="concat", model="s2lif", task=task), dataset=tiny)
    assert result.status == "ok", result.error
    assert not [r for r in result.trajectory if r["series"] == "density"]  # concat adds no s2lif terms


def test_unsupported_combinations_are_config_errors(tiny) -> None:
    with pytest.raises(ConfigError, match="video_first puts vision before text: it needs both"):
        validate_config(_cfg(("text", "audio"), method_params={"order": "video_first"}), tiny.modalities)
    with pytest.raises(ConfigError, match="2 to 3 modalities"):
        validate_config(_cfg(("text",)), tiny.modalities)
    with pytest.raises(ConfigError, match="--param order"):
        validate_config(_cfg(model_params={"order": "joint"}), tiny.modalities)
    with pytest.raises(ConfigError, match="feature_masks"):
        validate_config(_cfg(model="late_fusion"), tiny.modalities)
    with pytest.raises(ConfigError, match="order must be one of"):
        validate_config(_cfg(method_params={"order": "audio_first"}), tiny.modalities)
    with pytest.raises(ConfigError, match="needs both, got text, audio"):  # the model's own check, under concat
        train_run(smoke_config(method="concat", model="s2lif", modalities=("text", "audio"),
                               model_params={"order": "video_first"}), dataset=tiny)
    with pytest.raises(ConfigError, match="mask_lr_scale"):
        validate_config(_cfg(method_params={"mask_lr_scale": 0.0}), tiny.modalities)


def test_the_masks_get_their_own_learning_rate(tiny) -> None:
    trainer = build_trainer(_cfg(method_params={"mask_lr_scale": 10.0}), tiny)
    groups = {g["name"]: g for g in trainer.method.param_groups(trainer.model, trainer.state.cfg)}
    assert set(groups) == {"text", "vision", "head", "masks"}
    assert groups["masks"]["lr"] == pytest.approx(10.0 * 5e-4) and groups["head"]["lr"] == pytest.approx(5e-4)
    masks = {id(p) for p in groups["masks"]["params"]}
    assert id(trainer.model.mask_logits["text"]) in masks and id(trainer.model.head.weight) not in masks
    every = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in trainer.model.parameters())  # each parameter once


def test_hard_concrete_runs_repeat_exactly(tiny) -> None:
    cfg = _cfg(TAV, method_params={"mask_form": "hard_concrete", "order": "video_first"})
    first, second = train_run(cfg, dataset=tiny), train_run(cfg, dataset=tiny)
    assert first.status == "ok", first.error
    assert first.trajectory == second.trajectory and first.metrics == second.metrics
    densities = _series(first, "density", "text")
    assert len(set(densities)) > 1  # the noisy gates differ from step to step
