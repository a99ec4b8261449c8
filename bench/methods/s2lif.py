"""S2LIF, "Learning in Order! A Sequential Strategy to Learn Invariant Features for Multimodal Sentiment
Analysis" (ACM MM 2024, arXiv 2409.04473): reconstructed from the paper's description, no public code
(docs/methods/s2lif.md). Every formula below beyond "masks + sparsity, text first, L = L_t + L_v" is ours.

The model `s2lif` (bench/models/s2lif.py) selects x_m^c = g_m * h_m with relaxed-binary masks g_m, in the
order's sequence: text_first selects the text features with a free mask, then the vision (and audio) mask
is an MLP of the selected text features; video_first swaps text and vision; joint conditions nothing.
One step's objective:

    L = L_task(fused) + stage_weight * sum_m L_task(stage head m on x_m^c) + sparsity * sum_m R(g_m)

R is the mean L1 of the sigmoid gates, or the mean expected L0 of the hard-concrete gates. With two
modalities text+vision the stage sum is the paper's L_t + L_v. The terms and every mask's density (the
mean gate) are logged per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from bench.config import ConfigError, RunConfig
from bench.methods.base import (
    RECONSTRUCTED,
    Batch,
    BuildContext,
    Logs,
    Method,
    TrainState,
    check_choices,
    register,
    resolve_params,
)
from bench.models.s2lif import (
    FEATURE_MASKS,
    MASK_FORMS,
    ORDERS,
    S2LIFModelParams,
    Selection,
    check_order,
    mask_penalty,
    model_params_with,
)

OWN_MODEL_FIELDS = ("order", "mask_form", "temperature")  # set through the method, passed to the model


@dataclass(frozen=True)
class S2LIFParams:
    """`sparsity`: the weight of the masks' sparsity term; `stage_weight`: the weight of the stage losses
    (L_t, L_v, L_a); `order`, `mask_form`, `temperature`: the model's selection (bench/models/s2lif.py)."""

    sparsity: float = 1e-3
    stage_weight: float = 1.0
    order: str = "text_first"
    mask_form: str = "sigmoid"
    temperature: float = 1.0
    mask_lr_scale: float = 20.0  # the masks' learning rate = this x the run's (ours: see mask_groups)


# -- the objective (pure functions) -----------------------------------------------------------------


def sparsity_terms(selection: Selection, form: str, temperature: float) -> dict[str, Tensor]:
    """R(g_m) per modality (a scalar each)."""
    return {m: mask_penalty(selection.logits[m], selection.gates[m], form, temperature) for m in selection.gates}


def total_objective(task_loss: Tensor, stage_losses: Mapping[str, Tensor], sparsity: Mapping[str, Tensor],
                    stage_weight: float, sparsity_weight: float) -> Tensor:
    """L = task + stage_weight * sum of stage losses + sparsity_weight * sum of sparsity terms."""
    return task_loss + stage_weight * sum(stage_losses.values()) + sparsity_weight * sum(sparsity.values())


def mask_densities(selection: Selection) -> dict[str, float]:
    """The mean gate of each modality's mask (1: every feature kept, 0: none)."""
    return {m: float(g.detach().mean()) for m, g in selection.gates.items()}


def step_logs(task_loss: Tensor, stage_losses: Mapping[str, Tensor], sparsity: Mapping[str, Tensor],
              total: Tensor, densities: Mapping[str, float]) -> Logs:
    """One step's trajectory values: loss/task, loss/<m> (stage), loss/sparsity, loss/total,
    sparsity/<m> and density/<m>."""
    logs = {"loss/task": float(task_loss.detach()), "loss/total": float(total.detach()),
            "loss/sparsity": float(sum(float(s.detach()) for s in sparsity.values()))}
    for m, value in stage_losses.items():
        logs[f"loss/{m}"] = float(value.detach())
    for m, value in sparsity.items():
        logs[f"sparsity/{m}"] = float(value.detach())
    for m, value in densities.items():
        logs[f"density/{m}"] = value
    return logs


def mask_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What makes the masks: the free logit vectors and the conditioning MLPs."""
    return [*model.mask_logits.parameters(), *model.conditioners.parameters()]


def mask_groups(groups: list[dict[str, Any]], masks: list[nn.Parameter], scale: float) -> list[dict[str, Any]]:
    """The run's groups without the mask parameters, plus a "masks" group at `scale` x the head's rate.

    Why (ours): a logit moves about lr per Adam step whatever its gradient, so at the run's lr (5e-4) a
    mask starting at logit 2 could not close within a short run's few hundred steps.
    """
    taken = {id(p) for p in masks}
    kept = [{**g, "params": [p for p in g["params"] if id(p) not in taken]} for g in groups]
    head_lr = next((g["lr"] for g in groups if g.get("name") == "head"), groups[-1]["lr"])
    return [g for g in kept if g["params"]] + [{"name": "masks", "params": masks, "lr": head_lr * scale}]


# -- the method -------------------------------------------------------------------------------------


@register
class S2LIF(Method):
    name = "s2lif"
    Params = S2LIFParams
    description = "S2LIF: relaxed-binary feature masks learned in order (text first), stage losses + sparsity"
    display_name = "S2LIF"
    tasks = ("regression", "classification")
    default_model = "s2lif"
    requires = frozenset({FEATURE_MASKS})
    provenance = RECONSTRUCTED
    approximations = ("mean-pooled Linear encoders, not the paper's encoders",
                      "in-distribution splits unless the run asks for --test-dataset")
    # The paper's order claim as preset rows (the ablation rows of `ood` and the method's own table).
    variants = {"video_first": {"order": "video_first"}, "joint": {"order": "joint"}}

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if params.sparsity < 0 or params.stage_weight < 0:
            raise ConfigError(f"s2lif sparsity and stage_weight must be >= 0, got {params.sparsity}, "
                              f"{params.stage_weight}")
        if not params.mask_lr_scale > 0:
            raise ConfigError(f"s2lif mask_lr_scale must be > 0, got {params.mask_lr_scale}")
        if not params.temperature > 0:
            raise ConfigError(f"s2lif temperature must be > 0, got {params.temperature}")
        check_choices("s2lif", params, {"order": ORDERS, "mask_form": MASK_FORMS})
        check_order(params.order, cfg.modalities)
        given = dict(cfg.model_params)
        defaults = S2LIFModelParams()
        for name in OWN_MODEL_FIELDS:  # one place for each setting: the method's parameter
            if name in given and given[name] != getattr(defaults, name):
                raise ConfigError(f"s2lif sets the model's {name} itself: give it as a method parameter "
                                  f"(--param {name}=...), not a model parameter")

    def build(self, ctx: BuildContext) -> nn.Module:
        own = {name: getattr(ctx.params, name) for name in OWN_MODEL_FIELDS}
        return ctx.model(dataclasses.replace(ctx.spec, params=model_params_with(ctx.spec.params, own)))

    def param_groups(self, model: nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
        params: S2LIFParams = resolve_params(self, cfg)
        return mask_groups(super().param_groups(model, cfg), mask_parameters(model), params.mask_lr_scale)

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params: S2LIFParams = state.params
        selection: Selection = model.select(batch, state.generator)
        task_loss = state.task.loss(selection.fused, batch.labels)
        stage = {m: state.task.loss(out, batch.labels) for m, out in selection.stage_logits.items()}
        sparsity = sparsity_terms(selection, params.mask_form, params.temperature)
        total = total_objective(task_loss, stage, sparsity, params.stage_weight, params.sparsity)
        return total, step_logs(task_loss, stage, sparsity, total, mask_densities(selection))
